package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// readLease is what lets a leader serve reads from its own state without
// a Raft round per read, and still never serve a stale one (Raft thesis,
// section 6.4):
//
//   - A new leader may not have applied entries its predecessor committed
//     and acknowledged, so its first read of a term waits for a barrier
//     (an entry of its own term, committed and applied).
//   - A leader cut off from the others, or one that has just handed its
//     leadership over, still believes it leads while another replica
//     commits writes. Reads are served only within a lease: a quorum
//     answered this leader after the lease began, and none of those
//     voters elects anyone else before a heartbeat timeout without news
//     from it, of which the lease is half. A leadership transfer skips
//     that wait (the target is elected at once), so from the moment this
//     replica starts one it serves no reads until it is known to have
//     kept or lost its leadership.
//
// The lease is timed on the monotonic clock. A wall clock stepped back
// (NTP, an operator's date) would otherwise stretch it, and a leader cut
// off from the others could serve stale reads for as long as the step.
type readLease struct {
	term      atomic.Uint64 // the term whose barrier made the state current
	until     atomic.Int64  // reads may be served until then (leaseClock ns)
	transfers atomic.Int32  // leadership transfers in progress
	gen       atomic.Uint64 // bumped by every transfer, so a lease won before one is not kept
	renewing  atomic.Bool   // a background renewal is under way
	sem       chan struct{} // one confirmation round at a time
	once      sync.Once
	// now reads the clock the lease is timed on; nil means leaseClock.
	now func() time.Duration
}

// leaseEpoch is the origin of leaseClock.
var leaseEpoch = time.Now()

// leaseClock is the time since the process started, read on the
// monotonic clock, which no change of the wall clock moves.
func leaseClock() time.Duration { return time.Since(leaseEpoch) }

func (l *readLease) clock() time.Duration {
	if l.now != nil {
		return l.now()
	}
	return leaseClock()
}

// grant starts a lease of term that lasts d from start (a reading of
// clock taken before the quorum was asked).
func (l *readLease) grant(term uint64, start, d time.Duration) {
	l.term.Store(term)
	l.until.Store(int64(start + d))
}

func (l *readLease) lock(ctx context.Context) error {
	l.once.Do(func() { l.sem = make(chan struct{}, 1) })
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *readLease) unlock() { <-l.sem }

// transferring marks a leadership transfer as started; the returned
// function marks it as ended.
func (l *readLease) transferring() (done func()) {
	l.transfers.Add(1)
	l.gen.Add(1)
	l.until.Store(0)
	return func() { l.transfers.Add(-1) }
}

// valid reports whether reads of term may be served now without asking
// the quorum, and how long the lease has left.
func (l *readLease) valid(term uint64) (ok bool, left time.Duration) {
	if l.transfers.Load() > 0 || l.term.Load() != term {
		return false, 0
	}
	left = time.Duration(l.until.Load()) - l.clock()
	return left > 0, left
}

// ReadyToRead makes sure this replica may serve a read from its own state
// now: it leads, its state holds everything committed before its term,
// and no other replica can have been elected since a quorum last
// answered it (see readLease). Reads inside a lease cost nothing; the
// lease is renewed in the background while reads keep coming. A replica
// that does not lead gets ErrNotLeader.
func (s *Shard) ReadyToRead(ctx context.Context) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	term := s.raft.CurrentTerm()
	if ok, left := s.reads.valid(term); ok {
		if left < s.readLeaseDuration()/2 && s.reads.renewing.CompareAndSwap(false, true) {
			go func() {
				defer s.reads.renewing.Store(false)
				ctx, cancel := context.WithTimeout(context.Background(), s.readLeaseDuration())
				defer cancel()
				_ = s.confirmLeadership(ctx, term)
			}()
		}
	} else if err := s.confirmLeadership(ctx, term); err != nil {
		return err
	}
	// Applied entries are readable and published before their group
	// commits (see fsm.read); a replica whose state file lost some serves
	// nothing.
	if err := s.fsm.brokenErr(); err != nil {
		return fmt.Errorf("shard %d: %w", s.cfg.Shard, err)
	}
	return nil
}

// readLeaseDuration is how long a confirmation of leadership lets a leader
// serve reads: half the heartbeat timeout, a margin for clock-rate
// differences between nodes and for the time a confirmation takes.
func (s *Shard) readLeaseDuration() time.Duration { return s.cfg.Timing.HeartbeatTimeout / 2 }

// confirmLeadership asks the quorum whether this replica still leads in
// term (with a barrier at the first read of a term) and starts a lease.
func (s *Shard) confirmLeadership(ctx context.Context, term uint64) error {
	if err := s.reads.lock(ctx); err != nil {
		return fmt.Errorf("shard %d: wait to confirm leadership: %w", s.cfg.Shard, err)
	}
	defer s.reads.unlock()
	if ok, left := s.reads.valid(term); ok && left > s.readLeaseDuration()/2 {
		return nil // another reader renewed it meanwhile
	}
	if s.reads.transfers.Load() > 0 {
		return fmt.Errorf("shard %d: handing leadership over: %w", s.cfg.Shard, ErrNotLeader)
	}
	gen := s.reads.gen.Load()
	start := s.reads.clock()
	var err error
	if s.reads.term.Load() != term {
		// The barrier is a new entry: only replicas that accept it from
		// this leader, after start, commit it.
		err = s.await(ctx, s.raft.Barrier(time.Until(deadline(ctx, 10*time.Second))))
	} else {
		err = s.verifyLeader(ctx, term)
	}
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return fmt.Errorf("shard %d: confirm leadership: %w", s.cfg.Shard, ErrNotLeader)
		}
		return fmt.Errorf("shard %d: confirm leadership: %w", s.cfg.Shard, err)
	}
	// After the barrier everything before this term is applied; what this
	// replica applied as a follower may not be committed yet.
	if err := s.fsm.flush(); err != nil {
		return fmt.Errorf("shard %d: confirm leadership: %w", s.cfg.Shard, err)
	}
	if s.raft.CurrentTerm() != term || s.reads.gen.Load() != gen || s.reads.transfers.Load() > 0 {
		return fmt.Errorf("shard %d: leadership changed while confirming it: %w", s.cfg.Shard, ErrNotLeader)
	}
	s.reads.grant(term, start, s.readLeaseDuration())
	return nil
}

// sendTimes is what verifyLeader needs of the transport (quietTransport):
// its clock, and which followers accepted a request sent after a time.
type sendTimes interface {
	clock() time.Time
	acceptedSince(term uint64, since time.Time, ids []raft.ServerID) (n int, next <-chan struct{})
}

// verifyLeader asks the quorum whether this replica still leads in term,
// counting only answers to requests sent after it began. hashicorp/raft's
// VerifyLeader alone also counts answers to appends and heartbeats sent
// before it was asked: a leader stopped for seconds (SIGSTOP, a paused
// VM) finds its followers' answers from before the pause waiting when it
// resumes, and VerifyLeader could confirm it while the others have
// elected a new leader and committed writes. So the quorum must also
// have accepted a request that left after the start, as the heartbeats
// VerifyLeader sends do (the transport keeps their send times).
func (s *Shard) verifyLeader(ctx context.Context, term uint64) error {
	q, _ := s.trans.(sendTimes)
	var since time.Time
	if q != nil {
		since = q.clock()
	}
	for {
		if err := s.await(ctx, s.raft.VerifyLeader()); err != nil {
			return err
		}
		if q == nil {
			return nil // a transport that keeps no send times (tests)
		}
		var followers []raft.ServerID
		voters, self := 0, 0
		for _, srv := range s.raft.GetConfiguration().Configuration().Servers {
			switch {
			case srv.Suffrage != raft.Voter:
				continue
			case srv.ID == raft.ServerID(s.cfg.NodeID):
				self = 1
			default:
				followers = append(followers, srv.ID)
			}
			voters++
		}
		// Heartbeats go out every tenth of a heartbeat timeout; one that
		// does not come back by then is asked for again.
		retry := time.NewTimer(s.cfg.Timing.HeartbeatTimeout / 10)
		for {
			n, next := q.acceptedSince(term, since, followers)
			if n+self > voters/2 {
				retry.Stop()
				return nil
			}
			if s.raft.CurrentTerm() != term || !s.IsLeader() {
				retry.Stop()
				return raft.ErrNotLeader
			}
			select {
			case <-next:
				continue
			case <-retry.C:
			case <-ctx.Done():
				retry.Stop()
				return ctx.Err()
			case <-s.closed:
				retry.Stop()
				return ErrClosed
			}
			break
		}
	}
}
