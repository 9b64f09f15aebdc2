package raftstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Named leases (schema.Lease: the POP3 maildrop lock) are timed by the
// shard's leader, not by the node that proposed the command. A lease
// runs out when a later command's time passes the holder's last renewal
// plus its length; with each proposer's own clock, a node whose clock ran
// ahead of the holder's by more than the margin the holder keeps
// (two thirds of the lease) could take a lock its holder still trusts.
//
// So the leader stamps every lease command it proposes with its term
// clock: the wall clock read when this replica learnt it leads the term,
// advanced by the monotonic clock since. Within a term every expiry and
// every take are read on that one clock, which no step of the wall clock
// moves. Across terms the clocks of two leaders may differ, so a new
// leader lets nobody take a lease another holder has until it has led
// for that lease's length: every renewal of an earlier term committed
// before this term began, so the holder's lease has run out by then,
// whatever the clocks say. (A new leader whose clock is behind its
// predecessor's keeps such a lease taken for as much longer: clocks
// can delay a takeover, never hasten it.)
//
// Staged pieces of a message being received (schema.StageChunk) are
// stamped the same way, since the leader expires them an hour after
// their stamp by this clock (LeaderTime): a proposer whose clock is
// behind cannot make them look old.

// termClock is the clock a leader stamps on lease commands.
type termClock struct {
	now func() time.Time // nil: time.Now (tests set a clock of their own)

	mu    sync.Mutex
	term  uint64    // the latest term this replica knows it leads
	since time.Time // when it learnt that, with a monotonic reading
}

func (c *termClock) read() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// lead notes that this replica leads term and returns when it learnt it:
// now, unless it had noted it before.
func (c *termClock) lead(term uint64) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if term > c.term {
		c.term, c.since = term, c.read()
	}
	return c.since
}

// stamp returns the time of a lease command proposed now in term, and
// how long this replica has led the term.
func (c *termClock) stamp(term uint64) (at time.Time, led time.Duration) {
	since := c.lead(term)
	led = c.read().Sub(since)
	return since.Add(led), led
}

// LeaderTime is the time on this replica's term clock: what it stamps on
// the lease and staging commands it proposes as leader. Housekeeping on
// the leader reads it to expire staged pieces on the clock that stamped
// them.
func (s *Shard) LeaderTime() time.Time {
	at, _ := s.terms.stamp(s.raft.CurrentTerm())
	return at
}

// LedFor returns how long this replica has led its current term, by its
// term clock: zero when it does not lead. What another node said before
// this replica's election predates whatever ended the last leader's term.
func (s *Shard) LedFor() time.Duration {
	if s.raft.State() != raft.Leader {
		return 0
	}
	_, led := s.terms.stamp(s.raft.CurrentTerm())
	return led
}

// watchLeadership notes each term this replica comes to lead as soon as
// Raft reports it, so that a new leader's wait before a takeover starts
// at its election rather than at its first lease command. An
// observation dropped or missed (the first election of a replica that
// bootstraps alone can precede the observer) is noted at that first
// command instead, which only waits longer.
func (s *Shard) watchLeadership() {
	ch := make(chan raft.Observation, 4)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		st, ok := o.Data.(raft.RaftState)
		return ok && st == raft.Leader
	})
	s.raft.RegisterObserver(obs)
	go func() {
		defer s.raft.DeregisterObserver(obs)
		for {
			select {
			case <-ch:
				if s.raft.State() == raft.Leader {
					s.terms.lead(s.raft.CurrentTerm())
				}
			case <-s.closed:
				return
			}
		}
	}()
}

// timeLease stamps cmd, a lease command this leader is about to propose,
// with its term clock, and refuses (schema.ErrConflict, as the state
// machine refuses an unexpired lease) a take of a lease that another
// holder has while this replica has led its term for less than the
// lease's length.
func (s *Shard) timeLease(ctx context.Context, cmd *schema.Command, l *schema.Lease) (*schema.Result, error) {
	at, led := s.terms.stamp(s.raft.CurrentTerm())
	cmd.Time = at.UnixNano()
	if l.Release || led >= time.Duration(l.TTL) {
		return nil, nil
	}
	// The state read below must hold what earlier terms committed.
	if err := s.ReadyToRead(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", l.Op(), err)
	}
	other := false
	if err := s.fsm.read(func(r *Reader) error {
		holder, _, held := r.Lease(l.Key)
		other = held && holder != l.Holder
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", l.Op(), err)
	}
	if other {
		res := fail(schema.CodeConflict)
		return res, res.Err()
	}
	return nil, nil
}
