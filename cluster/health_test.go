package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
)

// TestCaughtUpAgainstCommitAtPing: a replica's report is judged against
// the leader's commit index when the ping went out, so a replica that
// keeps up with a loaded shard counts as caught up although the leader
// has committed more than catchUpLag entries since; one that is behind
// what was committed then does not.
func TestCaughtUpAgainstCommitAtPing(t *testing.T) {
	c := &Cluster{}
	c.health = newHealth(c)
	report := func(applied, commitAtPing uint64) {
		resp := PingResponse{NodeID: "n5", Shards: []raftstore.Status{{Shard: 1, State: "follower", AppliedIndex: applied}}}
		var commits map[uint32]uint64
		if commitAtPing > 0 {
			commits = map[uint32]uint64{1: commitAtPing}
		}
		c.health.record("n5", resp, nil, commits, clockOffset{})
	}

	// Answered at 4,600 when the leader had committed 4,620; it has
	// committed 4,739 since.
	report(4600, 4620)
	if !c.caughtUp("n5", 1, 4739) {
		t.Error("a replica within catchUpLag of the commit index at the ping is not caught up")
	}
	report(4600, 4700)
	if c.caughtUp("n5", 1, 4739) {
		t.Error("a replica 100 entries behind the commit index at the ping counts as caught up")
	}
	// Without a commit index at the ping (this node did not lead then),
	// the one of now decides.
	report(4600, 0)
	if c.caughtUp("n5", 1, 4739) {
		t.Error("a replica 139 entries behind counts as caught up")
	}
	if !c.caughtUp("n5", 1, 4650) {
		t.Error("a replica 50 entries behind is not caught up")
	}
	if c.caughtUp("n5", 2, 10) {
		t.Error("a replica the report does not list counts as caught up")
	}
}

// TestPingRoundsDoNotWaitForASilentPeer: a member that answers nothing
// holds its own ping until the timeout, while the next round pings the
// others again; it gets no second ping while the first is under way.
func TestPingRoundsDoNotWaitForASilentPeer(t *testing.T) {
	c := &Cluster{cfg: Config{NodeID: "n1"}, leaders: map[uint32]leaderHint{}}
	c.view = &metaView{nodes: map[string]NodeRecord{
		"n1": {ID: "n1", Address: "a1"}, "n2": {ID: "n2", Address: "a2"}, "n3": {ID: "n3", Address: "a3"}}}
	c.health = newHealth(c)
	h := c.health
	silent := make(chan struct{})
	var toN2, toN3 atomic.Int32
	h.ping = func(ctx context.Context, addr string) (PingResponse, error) {
		switch addr {
		case "a2":
			toN2.Add(1)
			return PingResponse{NodeID: "n2"}, nil
		case "a3":
			toN3.Add(1)
			select {
			case <-silent:
			case <-ctx.Done():
			}
			return PingResponse{}, errors.New("n3 answered nothing")
		}
		return PingResponse{}, fmt.Errorf("ping of %s, which is no member", addr)
	}
	defer func() { close(silent); h.pings.Wait() }()

	waitPings := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for toN2.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("n2 pinged %d times, want %d", toN2.Load(), want)
			}
			time.Sleep(time.Millisecond) // polling with a deadline
		}
	}
	h.round()
	waitPings(1)
	h.round()
	waitPings(2)
	if n := toN3.Load(); n != 1 {
		t.Errorf("n3 pinged %d times in two rounds while its first ping was under way, want 1", n)
	}
	if !h.alive("n2", time.Minute) {
		t.Error("n2's answers were not recorded")
	}
}

// syncBuffer is a log sink for goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPeerClockOffset: a peer whose clock runs five seconds ahead is
// measured at five seconds, to within half the ping's round trip, and
// warned of once however many rounds follow; when its clock agrees
// again, that is logged once too.
func TestPeerClockOffset(t *testing.T) {
	var logs syncBuffer
	c := &Cluster{cfg: Config{NodeID: "n1"}, leaders: map[uint32]leaderHint{},
		log: slog.New(slog.NewTextHandler(&logs, nil))}
	c.view = &metaView{nodes: map[string]NodeRecord{"n1": {ID: "n1", Address: "a1"}, "n2": {ID: "n2", Address: "a2"}}}
	c.health = newHealth(c)
	h := c.health
	var ahead atomic.Int64
	ahead.Store(int64(5 * time.Second))
	var answered atomic.Int32
	h.ping = func(ctx context.Context, addr string) (PingResponse, error) {
		defer answered.Add(1)
		return PingResponse{NodeID: "n2", Time: time.Now().Add(time.Duration(ahead.Load())).UTC()}, nil
	}
	rounds := func(n int32) clockOffset {
		t.Helper()
		for range n {
			want := answered.Load() + 1
			h.round()
			waitUntil(t, "n2 answered", func() bool { return answered.Load() >= want })
			h.pings.Wait()
		}
		p, _ := h.peer("n2")
		return p.clock
	}

	got := rounds(3)
	if !got.Known || (got.Offset-5*time.Second).Abs() > got.RTT/2+50*time.Millisecond {
		t.Fatalf("n2's clock measured %v ahead (round trip %v, known %v), want 5s", got.Offset, got.RTT, got.Known)
	}
	if n := strings.Count(logs.String(), "clock differs"); n != 1 {
		t.Fatalf("%d warnings of n2's clock after three rounds, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "node=n2") {
		t.Errorf("the warning does not name n2:\n%s", logs.String())
	}
	ahead.Store(0)
	if got := rounds(2); got.Offset.Abs() > got.RTT/2+50*time.Millisecond {
		t.Fatalf("n2's clock measured %v ahead after it agreed again", got.Offset)
	}
	if n := strings.Count(logs.String(), "agrees with this node's again"); n != 1 {
		t.Fatalf("%d notes of n2's clock agreeing again, want 1:\n%s", n, logs.String())
	}
	if m := measureClock(time.Time{}, time.Now(), time.Now()); m.Known {
		t.Error("a report without a time gave a clock offset")
	}
}

// waitUntil polls cond with a deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// TestUpNowAfterDeathOrStop: a node that answered the last ping is up
// now; one whose last ping failed (a killed process refuses the
// connection) is not, although its last report is still fresh for
// caughtUp; nor is one whose ping has gone unanswered for longer than a
// running node takes (a stopped process, a host cut off), while a ping
// under way for less does not count against it.
func TestUpNowAfterDeathOrStop(t *testing.T) {
	c := &Cluster{}
	c.health = newHealth(c)
	h := c.health
	answer := func() {
		resp := PingResponse{NodeID: "n2", Shards: []raftstore.Status{{Shard: 1, State: "follower", AppliedIndex: 100}}}
		h.record("n2", resp, nil, nil, clockOffset{Known: true, RTT: time.Millisecond})
	}
	if h.upNow("n2") {
		t.Fatal("a node never heard from is up")
	}
	answer()
	if !h.upNow("n2") {
		t.Fatal("a node that just answered is not up")
	}
	// Killed: the next ping is refused. Its report still counts for
	// catching up, not for being there.
	h.record("n2", PingResponse{}, errors.New("connection refused"), nil, clockOffset{})
	if h.upNow("n2") {
		t.Error("a node whose last ping failed is up")
	}
	if !c.caughtUp("n2", 1, 100) {
		t.Error("the last report no longer counts for catching up")
	}
	answer()
	// Stopped: a ping goes out and nothing comes back.
	if !h.startPing("n2") {
		t.Fatal("no ping could start")
	}
	if !h.upNow("n2") {
		t.Error("a node with a ping under way for a moment is not up")
	}
	h.mu.Lock()
	h.pinging["n2"] = time.Now().Add(-slowPing - 50*time.Millisecond)
	h.mu.Unlock()
	if h.upNow("n2") {
		t.Error("a node with a ping unanswered beyond slowPing is up")
	}
	// A far node's ping may take twice its round trip.
	h.mu.Lock()
	delete(h.pinging, "n2")
	h.mu.Unlock()
	h.record("n2", PingResponse{NodeID: "n2"}, nil, nil, clockOffset{Known: true, RTT: 400 * time.Millisecond})
	h.startPing("n2")
	h.mu.Lock()
	h.pinging["n2"] = time.Now().Add(-slowPing - 50*time.Millisecond)
	h.mu.Unlock()
	if !h.upNow("n2") {
		t.Error("a ping within twice a far node's round trip counts against it")
	}
	// An answer more than two ping intervals old is too old.
	h.mu.Lock()
	delete(h.pinging, "n2")
	h.peers["n2"].lastSeen = time.Now().Add(-2*pingEvery - time.Millisecond)
	h.mu.Unlock()
	if h.upNow("n2") {
		t.Error("a node last heard from over two ping intervals ago is up")
	}
}
