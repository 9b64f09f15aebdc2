package raftstore

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestLeaderWritesItsLogBesideReplication: while the leader's write to
// its own log hangs, its followers receive and write the entry (the
// writes run side by side), but nothing that raft's early count of the
// leader could make visible happens: the proposer gets no answer, no
// follower is told of a commit index that covers the entry or applies
// it, and the leader's CommitIndex stays below it. When the write
// returns, the entry is answered and applied everywhere.
func TestLeaderWritesItsLogBesideReplication(t *testing.T) {
	// Long enough that a loaded machine elects no one else during the
	// hold: a new leader would commit the entry with the followers alone,
	// as Raft should, and the checks below would not hold.
	timing := Timing{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
		LeaderLeaseTimeout: 800 * time.Millisecond, CommitTimeout: 10 * time.Millisecond, StuckWriteAfter: time.Minute}
	gates := []*writeGate{{}, {}, {}}
	var told [3]atomic.Uint64 // highest commit index each replica's appends carried
	g := startTCPGroup(t, timing, func(i int, q *quietTransport, cfg *Config) {
		cfg.beforeLogWrite = gates[i].wait
		send := q.send
		q.send = func(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
			for c := told[i].Load(); args.LeaderCommitIndex > c && !told[i].CompareAndSwap(c, args.LeaderCommitIndex); c = told[i].Load() {
			}
			return send(id, target, args, resp)
		}
	})
	t.Cleanup(func() { // before the replicas close: a held write holds Close
		for _, gt := range gates {
			gt.set(false)
		}
	})
	l := g.leader(t)
	leader := g.shards[l]
	if leader.cache.queue == nil {
		t.Fatal("the leader's log cache has no write queue")
	}
	f := newFixture(t, leader)
	appendMsg(t, leader, f, f.inbox, "before the hold")
	before, startTerm := leader.raft.LastIndex(), leader.raft.CurrentTerm()

	gates[l].set(true)
	done := appendInBackground(leader, f)
	var idx uint64
	waitFor(t, "the leader to take the entry", 10*time.Second, func() bool {
		idx = leader.raft.LastIndex()
		return idx > before
	})
	for i, s := range g.shards {
		if i == l {
			continue
		}
		waitFor(t, "a follower to write the entry while the leader's write hangs", 10*time.Second, func() bool {
			var e raft.Log
			return s.cache.GetLog(idx, &e) == nil && s.raft.LastIndex() >= idx
		})
	}
	// raft counts the leader in as its StoreLogs returned: the entry is
	// committed in its own view once a follower has answered.
	waitFor(t, "raft to count the entry committed", 10*time.Second, func() bool { return leader.raft.CommitIndex() >= idx })
	// Some more appends go out to the followers (every CommitTimeout)
	// after that count; none may carry it.
	seen := g.trans[l].sent.Load() + g.trans[l].replayed.Load()
	waitFor(t, "more appends to the followers", 10*time.Second, func() bool {
		return g.trans[l].sent.Load()+g.trans[l].replayed.Load() >= seen+10
	})
	if term := leader.raft.CurrentTerm(); !leader.IsLeader() || term != startTerm {
		t.Fatalf("leadership moved during the hold (term %d, then %d): the checks below say nothing", startTerm, term)
	}
	select {
	case err := <-done:
		t.Fatalf("the proposer was answered (%v) before the leader wrote the entry", err)
	default:
	}
	if c := told[l].Load(); c >= idx {
		t.Errorf("followers were told of commit index %d, covering entry %d the leader has not written", c, idx)
	}
	if c := leader.CommitIndex(); c >= idx {
		t.Errorf("the leader reports commit index %d before writing entry %d", c, idx)
	}
	for i, s := range g.shards {
		if a := s.PublishedIndex(); a >= idx {
			t.Errorf("replica n%d applied entry %d (applied index %d) before the leader wrote it", i+1, idx, a)
		}
	}

	gates[l].set(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the held append failed: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the held append was not answered after the leader's write returned")
	}
	g.waitApplied(t, idx)
	if n := len(messages(t, leader, f.user, f.inbox)); n != 2 {
		t.Fatalf("inbox holds %d messages, want 2", n)
	}
}

// appendInBackground proposes a small message to f's inbox through s and
// returns a channel that gets the outcome. The proposal waits up to a
// minute, longer than the tests hold a write on a loaded machine.
func appendInBackground(s *Shard, f fixture) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := s.Apply(ctx, schema.Command{ReqID: schema.NewID(), Time: time.Now().UnixNano(),
			Payload: &schema.Append{User: f.user, Mailbox: f.inbox, Message: schema.NewID(),
				Blob: schema.NewID(), Size: 4, Sealed: []byte("attrs"), Chunks: [][]byte{[]byte("held")}}})
		done <- err
	}()
	return done
}

// TestSoleVoterWritesItsLogAtOnce: a leader without another voter has no
// follower to write beside, so its entries go to its log before raft
// goes on, as without the queue; with voters again, they queue.
func TestSoleVoterWritesItsLogAtOnce(t *testing.T) {
	timing := Timing{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 10 * time.Millisecond, StuckWriteAfter: time.Minute}
	gates := []*writeGate{{}, {}, {}}
	g := startTCPGroup(t, timing, func(i int, _ *quietTransport, cfg *Config) { cfg.beforeLogWrite = gates[i].wait })
	t.Cleanup(func() {
		for _, gt := range gates {
			gt.set(false)
		}
	})
	l := g.leader(t)
	leader := g.shards[l]
	f := newFixture(t, leader)
	held := func(wantQueued bool) {
		t.Helper()
		gates[l].set(true)
		done := appendInBackground(leader, f)
		waitFor(t, "the leader's log write to start", 10*time.Second, func() bool { return leader.cache.writing.lasted() > 0 })
		if queued := leader.cache.queue.last() != 0; queued != wantQueued {
			t.Errorf("entry queued: %v, want %v", queued, wantQueued)
		}
		gates[l].set(false)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	held(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, s := range g.shards {
		if i != l {
			if err := leader.RemoveServer(ctx, s.cfg.NodeID); err != nil {
				t.Fatal(err)
			}
		}
	}
	held(false)
}

// queueEntries returns n entries of the given size from index first.
func queueEntries(first uint64, n, size int) []*raft.Log {
	out := make([]*raft.Log, n)
	for i := range out {
		out[i] = entry(first+uint64(i), size)
	}
	return out
}

// TestLogQueueWritesInOrder: the writer writes what was queued, oldest
// first, in batches of whatever queued meanwhile; a queued entry reads
// back until it is written; waitWritten and writtenThrough follow it.
func TestLogQueueWritesInOrder(t *testing.T) {
	q := newLogQueue()
	var mu sync.Mutex
	var wrote []uint64
	release := make(chan struct{})
	go q.run(func(b []*raft.Log) error {
		<-release
		mu.Lock()
		defer mu.Unlock()
		for _, l := range b {
			wrote = append(wrote, l.Index)
		}
		return nil
	}, func([]*raft.Log) {}, nil)
	if got := q.writtenThrough(); got != math.MaxUint64 {
		t.Fatalf("empty queue: writtenThrough %d", got)
	}
	if err := q.add(queueEntries(5, 3, 10)); err != nil {
		t.Fatal(err)
	}
	if err := q.add(queueEntries(8, 2, 10)); err != nil {
		t.Fatal(err)
	}
	if err := q.add(queueEntries(11, 1, 10)); err == nil {
		t.Fatal("an entry past a gap was queued")
	}
	if got := q.writtenThrough(); got != 4 {
		t.Fatalf("writtenThrough %d, want 4", got)
	}
	var e raft.Log
	if !q.get(9, &e) || e.Index != 9 || q.get(10, &e) || q.get(4, &e) {
		t.Fatal("get does not answer exactly the queued entries")
	}
	close(release)
	if err := q.waitWritten(9); err != nil {
		t.Fatal(err)
	}
	q.close(false)
	mu.Lock()
	defer mu.Unlock()
	for i, idx := range wrote {
		if idx != uint64(5+i) {
			t.Fatalf("written in the order %v", wrote)
		}
	}
	if len(wrote) != 5 {
		t.Fatalf("wrote %v, want 5 through 9", wrote)
	}
}

// TestLogQueueFailure: a failed write stops the queue: what waited for
// it, and every later entry, gets the error; the failure is reported once.
func TestLogQueueFailure(t *testing.T) {
	q := newLogQueue()
	disk := errors.New("disk on fire")
	reported := make(chan error, 2)
	go q.run(func([]*raft.Log) error { return disk }, func([]*raft.Log) {}, func(err error) { reported <- err })
	if err := q.add(queueEntries(1, 2, 10)); err != nil {
		t.Fatal(err)
	}
	if err := q.waitWritten(1); !errors.Is(err, disk) {
		t.Fatalf("waitWritten: %v, want the write's error", err)
	}
	if err := q.add(queueEntries(3, 1, 10)); !errors.Is(err, disk) {
		t.Fatalf("add after the failure: %v", err)
	}
	if err := <-reported; !errors.Is(err, disk) {
		t.Fatalf("reported %v", err)
	}
	if w := q.writtenThrough(); w != 0 {
		t.Fatalf("writtenThrough %d after a failed write of entry 1", w)
	}
	q.close(false)
	if len(reported) != 0 {
		t.Fatal("the failure was reported twice")
	}
}

// TestLogQueueAbort: an abort drops the entries not written, as a crash
// would, and releases whoever waits for them.
func TestLogQueueAbort(t *testing.T) {
	q := newLogQueue()
	hold := make(chan struct{})
	go q.run(func([]*raft.Log) error { <-hold; return nil }, func([]*raft.Log) {}, nil)
	if err := q.add(queueEntries(1, 1, 10)); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- q.waitWritten(1) }()
	aborted := make(chan struct{})
	go func() { q.close(true); close(aborted) }()
	if err := <-waited; !errors.Is(err, errLogAborted) {
		t.Fatalf("waitWritten after an abort: %v", err)
	}
	close(hold) // the write under way ends; then the writer does
	<-aborted
	if err := q.add(queueEntries(2, 1, 10)); err == nil {
		t.Fatal("an aborted queue took an entry")
	}
}
