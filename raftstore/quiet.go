package raftstore

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// quietTransport keeps an idle group from sending its followers the same
// append over and over. Without writes, a hashicorp/raft leader sends each
// follower an empty append every CommitTimeout (so that it learns the
// commit index), whether or not the follower already knows it: with the
// LAN profile's 20 ms, about 33 round trips a second per follower and
// group, beside the heartbeats, and most of an idle cluster's CPU.
//
// An empty append that repeats, field for field, the last one the
// follower acknowledged carries nothing new, and the follower's answer is
// known: the transport gives that answer without sending it, as long as
//   - the follower acknowledged that append less than maxAge ago, so a
//     real one still goes out now and then;
//   - a heartbeat of the same term, sent less than beat ago, was accepted
//     by the follower, so it is alive and follows this leader;
//   - nothing failed since: an RPC error, a refused heartbeat, an append
//     with entries or a snapshot forgets the acknowledgement.
//
// An append that brings a new commit index, a new entry or a new term
// differs from the last acknowledged and always goes out, so followers
// learn a commit as soon as they do today. What a replayed answer tells
// hashicorp/raft (the follower's last contact, a vote that it still
// leads) was true within beat: a follower that accepted a heartbeat
// elects no one for a heartbeat timeout after, and beat is a fifth of
// one. A read lease does not rest on replayed answers: it counts only
// requests that went out and were accepted after it was asked for
// (acceptedSince, Shard.verifyLeader). Heartbeats themselves always go
// out.
type quietTransport struct {
	*raft.NetworkTransport
	beat   time.Duration
	maxAge time.Duration
	now    func() time.Time
	// send makes the RPC: NetworkTransport's AppendEntries.
	send func(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error

	mu    sync.Mutex
	peers map[raft.ServerID]*quietPeer

	// sent and replayed count the empty appends (heartbeats aside) that
	// went out and that were answered without going out.
	sent, replayed atomic.Uint64

	// stuck, when set, says why the replica's write to its disk counts
	// as hung (Shard.Stuck), nil while none does; nothing goes out then
	// (holdWhileStuck).
	stuck    func() error
	stuckLog *slog.Logger
	holding  atomic.Bool
	held     atomic.Uint64 // appends and heartbeats not sent

	// accepted, when not nil, is closed at the next append or heartbeat
	// a follower accepts (see acceptedSince).
	accepted chan struct{}

	// writtenThrough, when set, bounds the commit index that appends
	// carry: the leader's log entries written so far (leaderlog.go).
	writtenThrough func() uint64
}

// limitCommit makes every append carry a commit index no higher than
// writtenThrough returns, so that followers apply no entry the leader
// has not written to its own log yet (leaderlog.go).
func (q *quietTransport) limitCommit(writtenThrough func() uint64) {
	q.writtenThrough = writtenThrough
}

// errWriteStuck fails the appends of a leader whose disk write hangs.
var errWriteStuck = errors.New("this replica's write to its disk has not returned: appends held so that another replica leads")

// holdWhileStuck makes the transport send no append and no heartbeat
// while the replica's write to its disk counts as hung (stuck). A leader
// whose disk hangs (a stalled volume, a failing device, a frozen
// filesystem) blocks hashicorp/raft's leader loop in its log write, or in
// handing committed entries to a state machine that waits for its
// commit or for the leader's own log write (leaderlog.go; the leader
// loop itself waits once the queue of entries to write is full), but
// its heartbeat and replication goroutines go on: the
// followers keep hearing from it, elect no one, and the group takes no
// write for as long as the disk hangs. Silent, the leader is replaced
// within an election timeout, as if it had crashed; when its write
// returns it learns of the new term and follows. Holding messages back
// is always safe in Raft: it is what a lost network does.
func (q *quietTransport) holdWhileStuck(stuck func() error, log *slog.Logger) {
	q.stuck, q.stuckLog = stuck, log
}

// isStuck reports whether appends are held now, logging the start and
// the end of each episode.
func (q *quietTransport) isStuck() bool {
	if q.stuck == nil {
		return false
	}
	if err := q.stuck(); err != nil {
		if q.holding.CompareAndSwap(false, true) && q.stuckLog != nil {
			q.stuckLog.Warn(err.Error() + "; sending no appends so that another replica leads")
		}
		return true
	}
	// Read first: this runs for every append, and a write to the flag
	// from each sender would bounce its cache line between cores.
	if q.holding.Load() && q.holding.CompareAndSwap(true, false) && q.stuckLog != nil {
		q.stuckLog.Warn("the disk write returned; appends go out again")
	}
	return false
}

// quietPeer is what the transport knows of one follower.
type quietPeer struct {
	beatTerm uint64    // term of the last heartbeat the follower accepted
	beatSent time.Time // when that heartbeat was sent
	acked    bool      // ack holds the last append the follower acknowledged
	ack      appendKey
	ackSent  time.Time
	resp     raft.AppendEntriesResponse
	// The term and send time of the latest append or heartbeat that went
	// out and that the follower accepted (replayed answers aside): proof
	// that it followed this leader at some moment after that time.
	heardTerm uint64
	heardSent time.Time
}

// appendKey is what an empty append says.
type appendKey struct {
	version      raft.ProtocolVersion
	id, addr     string
	term         uint64
	prevLogEntry uint64
	prevLogTerm  uint64
	commit       uint64
	leader       string
}

func keyOf(a *raft.AppendEntriesRequest) appendKey {
	return appendKey{
		version: a.ProtocolVersion, id: string(a.ID), addr: string(a.Addr),
		term: a.Term, prevLogEntry: a.PrevLogEntry, prevLogTerm: a.PrevLogTerm,
		commit: a.LeaderCommitIndex, leader: string(a.Leader),
	}
}

// isHeartbeat tells a heartbeat from an append, as NetworkTransport's
// receiving side does.
func isHeartbeat(a *raft.AppendEntriesRequest) bool {
	return a.Term != 0 && a.PrevLogEntry == 0 && a.PrevLogTerm == 0 &&
		len(a.Entries) == 0 && a.LeaderCommitIndex == 0
}

func newQuietTransport(t *raft.NetworkTransport, heartbeatTimeout time.Duration) *quietTransport {
	return &quietTransport{
		NetworkTransport: t,
		beat:             heartbeatTimeout / 5,
		maxAge:           heartbeatTimeout,
		now:              time.Now,
		send:             t.AppendEntries,
		peers:            make(map[raft.ServerID]*quietPeer),
	}
}

func (q *quietTransport) peer(id raft.ServerID) *quietPeer {
	p := q.peers[id]
	if p == nil {
		p = &quietPeer{}
		q.peers[id] = p
	}
	return p
}

// AppendEntries sends an append or a heartbeat, or answers an empty
// append that repeats the last acknowledged one (see quietTransport).
func (q *quietTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if q.isStuck() {
		q.held.Add(1)
		q.mu.Lock()
		p := q.peer(id)
		p.acked, p.beatTerm = false, 0
		q.mu.Unlock()
		return errWriteStuck
	}
	if q.writtenThrough != nil && args.LeaderCommitIndex > 0 {
		// Lowered before the comparison with the last acknowledged
		// append, which holds the commit index that went out.
		args.LeaderCommitIndex = min(args.LeaderCommitIndex, q.writtenThrough())
	}
	heartbeat := isHeartbeat(args)
	empty := !heartbeat && len(args.Entries) == 0
	now := q.now()
	var key appendKey
	if empty {
		key = keyOf(args)
		q.mu.Lock()
		p := q.peer(id)
		if p.acked && p.ack == key && now.Sub(p.ackSent) < q.maxAge &&
			p.beatTerm == args.Term && now.Sub(p.beatSent) < q.beat {
			*resp = p.resp
			q.mu.Unlock()
			q.replayed.Add(1)
			return nil
		}
		q.mu.Unlock()
		q.sent.Add(1)
	}
	err := q.send(id, target, args, resp)
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.peer(id)
	if err == nil && resp.Success && resp.Term == args.Term {
		if p.heardTerm != args.Term || now.After(p.heardSent) {
			p.heardTerm, p.heardSent = args.Term, now
		}
		if q.accepted != nil {
			close(q.accepted)
			q.accepted = nil
		}
	}
	switch {
	case err != nil:
		p.acked, p.beatTerm = false, 0
	case heartbeat:
		if resp.Success && resp.Term == args.Term {
			if now.After(p.beatSent) || p.beatTerm != args.Term {
				p.beatTerm, p.beatSent = args.Term, now
			}
		} else {
			p.acked, p.beatTerm = false, 0
		}
	case empty && resp.Success && resp.Term == args.Term:
		p.acked, p.ack, p.ackSent, p.resp = true, key, now, *resp
	default:
		p.acked = false
	}
	return err
}

// clock reads the clock the transport times its requests on.
func (q *quietTransport) clock() time.Time { return q.now() }

// acceptedSince returns how many of the followers ids accepted an append
// or a heartbeat of term that this transport sent at or after since (by
// its clock), and a channel closed at the next acceptance by any. An
// answer tells when the follower last followed this leader only through
// the time its request left: hashicorp/raft's VerifyLeader counts every
// answer that arrives after it asked, also one to a request sent long
// before (a leader whose process was stopped finds its followers'
// earlier answers waiting when it resumes).
func (q *quietTransport) acceptedSince(term uint64, since time.Time, ids []raft.ServerID) (n int, next <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		if p := q.peers[id]; p != nil && p.heardTerm == term && !p.heardSent.Before(since) {
			n++
		}
	}
	if q.accepted == nil {
		q.accepted = make(chan struct{})
	}
	return n, q.accepted
}

// InstallSnapshot sends a snapshot; the follower's log changes with it, so
// its last acknowledged append is forgotten.
func (q *quietTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	q.mu.Lock()
	q.peer(id).acked = false
	q.mu.Unlock()
	return q.NetworkTransport.InstallSnapshot(id, target, args, resp, data)
}
