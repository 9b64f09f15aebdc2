package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// quietGroup is a group of three replicas over TCP on loopback, each
// transport a quietTransport whose clock stands still, so that an
// acknowledged append stays fresh for ever: only the rules about what an
// append says, and about failures, decide what goes out.
type quietGroup struct {
	shards []*Shard
	trans  []*quietTransport
}

func startQuietGroup(t *testing.T) *quietGroup {
	t.Helper()
	timing := Timing{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 10 * time.Millisecond}
	frozen := time.Now()
	return startTCPGroup(t, timing, func(_ int, q *quietTransport, _ *Config) {
		q.now = func() time.Time { return frozen }
	})
}

// startTCPGroup starts three replicas of shard 1 over TCP on loopback,
// each with a quietTransport, n1 bootstrapping the group and adding the
// others as voters; configure adjusts replica i's transport and config
// before it opens.
func startTCPGroup(t *testing.T, timing Timing, configure func(i int, q *quietTransport, cfg *Config)) *quietGroup {
	t.Helper()
	g := &quietGroup{}
	for i := range 3 {
		nt, err := raft.NewTCPTransportWithConfig("127.0.0.1:0", nil, &raft.NetworkTransportConfig{
			MaxPool: 3, Timeout: 2 * time.Second, MaxRPCsInFlight: 1,
			Logger: newHclog(slog.New(slog.DiscardHandler), hclog.Error),
		})
		if err != nil {
			t.Fatal(err)
		}
		q := newQuietTransport(nt, timing.HeartbeatTimeout)
		cfg := Config{Shard: 1, Dir: t.TempDir(), NodeID: fmt.Sprintf("n%d", i+1),
			Address: string(nt.LocalAddr()), Transport: q, Bootstrap: i == 0, Timing: timing}
		if configure != nil {
			configure(i, q, &cfg)
		}
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		g.shards = append(g.shards, s)
		g.trans = append(g.trans, q)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g.shards[0].WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for i, s := range g.shards[1:] {
		if err := g.shards[0].AddVoter(ctx, fmt.Sprintf("n%d", i+2), s.cfg.Address); err != nil {
			t.Fatal(err)
		}
	}
	g.waitApplied(t, g.shards[0].CommitIndex())
	return g
}

// waitApplied waits until every running replica has applied index.
func (g *quietGroup) waitApplied(t *testing.T, index uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, s := range g.shards {
		if err := s.WaitApplied(ctx, index); err != nil {
			t.Fatalf("replica n%d did not apply index %d: %v", i+1, index, err)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leader returns the replica that leads now, waiting for one.
func (g *quietGroup) leader(t *testing.T) int {
	t.Helper()
	i := -1
	waitFor(t, "a replica leads", 10*time.Second, func() bool {
		for j, s := range g.shards {
			if s.IsLeader() {
				i = j
				return true
			}
		}
		return false
	})
	return i
}

// waitQuiet waits until the leader has answered some empty appends
// itself, and returns it.
func (g *quietGroup) waitQuiet(t *testing.T) int {
	t.Helper()
	var i int
	waitFor(t, "the leader answers empty appends itself", 20*time.Second, func() bool {
		i = g.leader(t)
		return g.trans[i].replayed.Load() > 20
	})
	return i
}

func TestQuietTransportAnswersRepeatedAppends(t *testing.T) {
	g := startQuietGroup(t)
	// Idle, the leader's empty appends all repeat the last acknowledged
	// one: once each follower has acknowledged one, none goes out. A
	// loaded machine may hold an election meanwhile, which sends new
	// appends: such a window is measured again.
	stable := false
	for attempt := 0; attempt < 5 && !stable; attempt++ {
		i := g.waitQuiet(t)
		s, q := g.shards[i], g.trans[i]
		term := s.raft.CurrentTerm()
		sent, replayed := q.sent.Load(), q.replayed.Load()
		time.Sleep(300 * time.Millisecond) // about 20 CommitTimeouts per follower
		if !s.IsLeader() || s.raft.CurrentTerm() != term {
			continue
		}
		stable = true
		if d := q.sent.Load() - sent; d != 0 {
			t.Errorf("%d empty appends went out while the group was idle", d)
		}
		if d := q.replayed.Load() - replayed; d < 10 {
			t.Errorf("only %d empty appends answered in 300 ms of idle group", d)
		}
	}
	if !stable {
		t.Fatal("the leadership changed in every window")
	}

	// A write changes the commit index: the followers learn it, although
	// the clock says every acknowledgement is fresh.
	for n := range 3 {
		var res *schema.Result
		var err error
		for try := 0; try < 10; try++ {
			res, err = applyErr(g.shards[g.leader(t)], schema.NewID(), &schema.PutSetting{Key: fmt.Sprintf("quiet/%d", n), Value: []byte("v")})
			if !errors.Is(err, ErrNotLeader) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		g.waitApplied(t, res.Index)
	}
}

func TestQuietTransportLetsALeaderLoseItsQuorum(t *testing.T) {
	g := startQuietGroup(t)
	i := g.waitQuiet(t)
	// With both followers gone, heartbeats fail and nothing is answered
	// for them any more, so the leader no longer hears from a quorum and
	// steps down; a replayed answer would keep its lease alive.
	for j, s := range g.shards {
		if j != i {
			s.Close()
		}
	}
	waitFor(t, "the leader steps down", 10*time.Second, func() bool { return !g.shards[i].IsLeader() })
}

func TestIsHeartbeat(t *testing.T) {
	hb := &raft.AppendEntriesRequest{Term: 3, Leader: []byte("n1")}
	if !isHeartbeat(hb) {
		t.Error("a heartbeat is not recognised")
	}
	for name, a := range map[string]*raft.AppendEntriesRequest{
		"empty append": {Term: 3, PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: 9},
		"first append": {Term: 3, LeaderCommitIndex: 1},
		"entries":      {Term: 3, Entries: []*raft.Log{{Index: 1}}},
	} {
		if isHeartbeat(a) {
			t.Errorf("%s taken for a heartbeat", name)
		}
	}
}

// TestQuietTransportRules drives the transport with a scripted follower
// and a clock of its own: which empty appends go out and which are
// answered without going out.
func TestQuietTransportRules(t *testing.T) {
	const hbTimeout = 500 * time.Millisecond // beat 100 ms, maxAge 500 ms
	var (
		clock   = time.Unix(1000, 0)
		calls   int
		fail    error
		refuse  bool
		term    uint64 = 3
		lastLog uint64 = 9
	)
	q := newQuietTransport(nil, hbTimeout)
	q.now = func() time.Time { return clock }
	q.send = func(_ raft.ServerID, _ raft.ServerAddress, a *raft.AppendEntriesRequest, r *raft.AppendEntriesResponse) error {
		calls++
		if fail != nil {
			return fail
		}
		*r = raft.AppendEntriesResponse{Term: term, LastLog: lastLog, Success: !refuse}
		return nil
	}
	heartbeat := func() {
		t.Helper()
		var r raft.AppendEntriesResponse
		_ = q.AppendEntries("n2", "a2", &raft.AppendEntriesRequest{Term: 3, Leader: []byte("a1")}, &r)
	}
	empty := func(commit uint64) (sent bool) {
		t.Helper()
		before := calls
		var r raft.AppendEntriesResponse
		err := q.AppendEntries("n2", "a2", &raft.AppendEntriesRequest{Term: 3, Leader: []byte("a1"),
			PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: commit}, &r)
		if err == nil && (!r.Success && !refuse || r.Term != term || r.LastLog != lastLog) {
			t.Fatalf("answer %+v", r)
		}
		return calls > before
	}
	step := func(name string, wantSent, sent bool) {
		t.Helper()
		if sent != wantSent {
			t.Errorf("%s: sent %v, want %v", name, sent, wantSent)
		}
	}

	step("first empty append", true, empty(9))
	step("repeated without a heartbeat", true, empty(9))
	heartbeat()
	step("repeated after a heartbeat", false, empty(9))
	step("repeated again", false, empty(9))
	step("a new commit index", true, empty(10))
	step("the new one repeated", false, empty(10))

	clock = clock.Add(120 * time.Millisecond)
	step("repeated, heartbeat too old", true, empty(10))
	heartbeat()
	clock = clock.Add(520 * time.Millisecond)
	heartbeat()
	step("repeated, acknowledgement too old", true, empty(10))
	step("repeated after a fresh acknowledgement", false, empty(10))

	fail = io.ErrUnexpectedEOF
	heartbeat()
	fail = nil
	heartbeat()
	step("repeated after a failed heartbeat", true, empty(10))
	step("repeated once more", false, empty(10))

	refuse = true
	heartbeat()
	refuse = false
	step("repeated after a refused heartbeat", true, empty(10))
	heartbeat()
	step("repeated after the next heartbeat", false, empty(10))

	var r raft.AppendEntriesResponse
	_ = q.AppendEntries("n2", "a2", &raft.AppendEntriesRequest{Term: 3, Leader: []byte("a1"),
		PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: 10, Entries: []*raft.Log{{Index: 10, Term: 3}}}, &r)
	step("repeated after an append with entries", true, empty(10))

	term = 4 // the follower moved to a newer term: its heartbeat says so
	heartbeat()
	step("after a heartbeat answered in a newer term", true, empty(10))
	heartbeat()
	step("an answer in a newer term is not kept", true, empty(10))
	term = 3
	heartbeat()

	fail = io.ErrUnexpectedEOF
	step("failed append", true, empty(10))
	fail = nil
	heartbeat()
	step("repeated after a failed append", true, empty(10))
	step("and then answered", false, empty(10))
	if got := q.replayed.Load(); got != 7 {
		t.Errorf("replayed %d, want 7", got)
	}
}

// TestQuietTransportKeepsWhenAcceptedRequestsLeft: a follower counts as
// having followed this leader since a time only through a request that
// left at or after it and that it accepted in the same term; a replayed
// answer, a refusal, an error or an answer in another term proves
// nothing new, and a request's time is when it left, not when its
// answer came back.
func TestQuietTransportKeepsWhenAcceptedRequestsLeft(t *testing.T) {
	var (
		clock  = time.Unix(1000, 0)
		fail   error
		refuse bool
		term   uint64        = 3
		during time.Duration // how far the clock moves while a request is out
	)
	q := newQuietTransport(nil, 500*time.Millisecond)
	q.now = func() time.Time { return clock }
	q.send = func(_ raft.ServerID, _ raft.ServerAddress, a *raft.AppendEntriesRequest, r *raft.AppendEntriesResponse) error {
		clock = clock.Add(during)
		if fail != nil {
			return fail
		}
		*r = raft.AppendEntriesResponse{Term: term, LastLog: 9, Success: !refuse}
		return nil
	}
	heartbeat := func(id raft.ServerID) {
		var r raft.AppendEntriesResponse
		_ = q.AppendEntries(id, "a", &raft.AppendEntriesRequest{Term: 3, Leader: []byte("a1")}, &r)
	}
	empty := func() {
		var r raft.AppendEntriesResponse
		_ = q.AppendEntries("n2", "a2", &raft.AppendEntriesRequest{Term: 3, Leader: []byte("a1"),
			PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: 9}, &r)
	}
	followers := []raft.ServerID{"n2", "n3"}
	check := func(what string, term uint64, since time.Time, want int) {
		t.Helper()
		if n, _ := q.acceptedSince(term, since, followers); n != want {
			t.Errorf("%s: %d followers accepted a request since %v, want %d", what, n, since.Sub(time.Unix(1000, 0)), want)
		}
	}

	start := clock
	check("before any request", 3, start, 0)
	_, next := q.acceptedSince(3, start, followers)
	heartbeat("n2")
	select {
	case <-next:
	default:
		t.Error("an accepted heartbeat did not signal")
	}
	check("after n2 accepted a heartbeat", 3, start, 1)
	check("in another term", 4, start, 0)
	check("after the heartbeat left", 3, start.Add(time.Nanosecond), 0)

	empty() // goes out: the first empty append
	empty() // answered without going out
	clock = clock.Add(10 * time.Millisecond)
	at := clock
	empty() // replayed: the follower was not asked
	check("after a replayed answer", 3, at, 0)
	if q.replayed.Load() != 2 {
		t.Fatalf("replayed %d empty appends, want 2", q.replayed.Load())
	}

	refuse = true
	heartbeat("n3")
	refuse = false
	check("after n3 refused", 3, at, 0)
	fail = io.ErrUnexpectedEOF
	heartbeat("n3")
	fail = nil
	check("after a failed request to n3", 3, at, 0)
	term = 4
	heartbeat("n3")
	term = 3
	check("after n3 answered in a newer term", 3, at, 0)

	// A request out for 50 ms: its answer proves what was true when it
	// left, not when it came back.
	clock = clock.Add(10 * time.Millisecond)
	left := clock
	during = 50 * time.Millisecond
	heartbeat("n3")
	during = 0
	check("since the heartbeat left", 3, left, 1)
	check("since a moment after it left", 3, left.Add(time.Millisecond), 0)
	check("both, since the start", 3, start, 2)
}
