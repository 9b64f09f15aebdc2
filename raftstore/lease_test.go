package raftstore

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestReadLeaseTiming checks when a lease lets a leader read without
// asking the quorum: from its grant for its duration, in its term only,
// never while a leadership transfer runs, and not again after one until
// it is granted anew. The lease reads its own clock, which is the
// monotonic one in production, so a wall clock stepped back cannot
// stretch it.
func TestReadLeaseTiming(t *testing.T) {
	var now time.Duration
	l := &readLease{now: func() time.Duration { return now }}
	const term, d = 7, 500 * time.Millisecond

	now = 10 * time.Second
	if ok, _ := l.valid(term); ok {
		t.Fatal("a lease never granted is valid")
	}
	start := now
	now += 20 * time.Millisecond // the quorum's answer took this long
	l.grant(term, start, d)
	if ok, left := l.valid(term); !ok || left != d-20*time.Millisecond {
		t.Fatalf("after the grant: valid %v, %v left; want true, %v", ok, left, d-20*time.Millisecond)
	}
	if ok, _ := l.valid(term + 1); ok {
		t.Fatal("a lease is valid in another term")
	}
	now = start + d - time.Nanosecond
	if ok, _ := l.valid(term); !ok {
		t.Fatal("the lease ended before its duration from the grant's start")
	}
	now = start + d
	if ok, _ := l.valid(term); ok {
		t.Fatal("the lease outlived its duration")
	}

	now = 20 * time.Second
	l.grant(term, now, d)
	done := l.transferring()
	if ok, _ := l.valid(term); ok {
		t.Fatal("a lease is valid while leadership is being handed over")
	}
	done()
	if ok, _ := l.valid(term); ok {
		t.Fatal("a lease granted before a transfer is valid after it")
	}
}

// TestLeaseClockIsMonotonic checks that the production clock of leases
// carries on from the process's start and never goes back, as the
// monotonic clock does; a wall-clock reading (time.Now().UnixNano())
// would not.
func TestLeaseClockIsMonotonic(t *testing.T) {
	var l readLease
	prev := l.clock()
	if prev <= 0 {
		t.Fatalf("lease clock %v, want the time since the process started", prev)
	}
	for i := 0; i < 1000; i++ {
		c := l.clock()
		if c < prev {
			t.Fatalf("lease clock went back from %v to %v", prev, c)
		}
		prev = c
	}
	// time.Time's String ends in "m=±<seconds>" when the value
	// carries a monotonic reading, which time.Since then uses.
	if !strings.Contains(leaseEpoch.String(), " m=") {
		t.Fatalf("the lease clock's origin %v has no monotonic reading", leaseEpoch)
	}
}

// heldSends holds the appends and heartbeats one replica sends, as a
// process stopped by SIGSTOP holds them: those that left before the mark
// reached the follower, and their answers wait until releaseStale;
// those that leave after it wait, unsent, until releaseAll.
type heldSends struct {
	mu     sync.Mutex
	holder int // the replica whose sends are held; -1 for none
	mark   time.Time
	early  map[raft.ServerID]int // answers held per follower, of requests that left before mark
	stale  chan struct{}
	all    chan struct{}
	// staleOpen and allOpen say whether stale and all are still open.
	staleOpen, allOpen bool
}

// hold starts holding replica i's sends, afresh.
func (h *heldSends) hold(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holder, h.mark, h.early = i, time.Time{}, map[raft.ServerID]int{}
	h.stale, h.all = make(chan struct{}), make(chan struct{})
	h.staleOpen, h.allOpen = true, true
}

// markNow makes every request that leaves from now on wait unsent.
func (h *heldSends) markNow() {
	h.mu.Lock()
	h.mark = time.Now()
	h.mu.Unlock()
}

// heldFrom returns how many followers have an answer held.
func (h *heldSends) heldFrom() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.early)
}

// releaseStale lets the answers to requests that left before the mark back.
func (h *heldSends) releaseStale() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.staleOpen {
		close(h.stale)
		h.staleOpen = false
	}
}

// releaseAll lets every request and answer through, from now on too.
func (h *heldSends) releaseAll() {
	h.releaseStale()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holder = -1
	if h.allOpen {
		close(h.all)
		h.allOpen = false
	}
}

func (h *heldSends) wrap(i int, q *quietTransport) {
	send := q.send
	q.send = func(id raft.ServerID, target raft.ServerAddress, a *raft.AppendEntriesRequest, r *raft.AppendEntriesResponse) error {
		left := time.Now()
		h.mu.Lock()
		if h.holder != i {
			h.mu.Unlock()
			return send(id, target, a, r)
		}
		mark, stale, all := h.mark, h.stale, h.all
		if !mark.IsZero() && !left.Before(mark) {
			h.mu.Unlock()
			<-all
			return send(id, target, a, r)
		}
		h.mu.Unlock()
		err := send(id, target, a, r)
		h.mu.Lock()
		if stale == h.stale {
			h.early[id]++
		}
		h.mu.Unlock()
		<-stale
		return err
	}
}

// TestVerifyCountsOnlyAnswersToRequestsSentAfterIt: a leader whose
// process is stopped finds, when it resumes, its followers' answers to
// requests sent before the pause; hashicorp/raft's VerifyLeader counts
// them, although the followers may have elected another leader since.
// Here the answers to requests sent before the confirmation began come
// back after it began, and every request sent after stays unanswered:
// no lease may be granted, and no read served.
func TestVerifyCountsOnlyAnswersToRequestsSentAfterIt(t *testing.T) {
	timing := Timing{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
		LeaderLeaseTimeout: time.Second, CommitTimeout: 10 * time.Millisecond}
	h := &heldSends{holder: -1}
	g := startTCPGroup(t, timing, func(i int, q *quietTransport, _ *Config) { h.wrap(i, q) })
	t.Cleanup(h.releaseAll) // before the replicas close

	// Hold the leader's sends until each follower has answered one; a
	// loaded machine may move the leadership meanwhile: then again.
	var s *Shard
	for attempt := 1; s == nil; attempt++ {
		i := g.leader(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := g.shards[i].ReadyToRead(ctx) // the term's barrier: later confirmations verify
		cancel()
		if err == nil {
			h.hold(i)
			end := time.Now().Add(5 * time.Second)
			for h.heldFrom() < 2 && g.shards[i].IsLeader() && time.Now().Before(end) {
				time.Sleep(10 * time.Millisecond)
			}
			if h.heldFrom() == 2 && g.shards[i].IsLeader() {
				s = g.shards[i]
				break
			}
			h.releaseAll()
		}
		if attempt == 3 {
			t.Fatalf("no leader kept its leadership while its sends were held (last: %v)", err)
		}
	}
	term := s.raft.CurrentTerm()
	h.markNow()
	s.reads.until.Store(0) // the lease ran out during the pause

	rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel()
	read := make(chan error, 1)
	go func() { read <- s.ReadyToRead(rctx) }()
	// Give VerifyLeader the time to be registered before the old answers
	// come back; if it is not yet, they do not count either way.
	time.Sleep(100 * time.Millisecond)
	h.releaseStale()
	if err := <-read; err == nil {
		t.Fatalf("a read was served on answers to requests sent before it (term %d, now %d, leader %v)",
			term, s.raft.CurrentTerm(), s.IsLeader())
	} else {
		t.Logf("read refused while only old answers came back: %v", err)
	}

	h.releaseAll()
	waitFor(t, "a read served once answers come back", 20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return g.shards[g.leader(t)].ReadyToRead(ctx) == nil
	})
}
