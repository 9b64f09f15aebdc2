package raftstore

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestLeaderWithAStuckDiskIsReplaced: a write of the leader to its disk
// hangs (a stalled volume, a frozen filesystem). hashicorp/raft's leader
// loop waits in its log write, or for a state machine that waits in its
// commit, while its heartbeats go on, so without holdWhileStuck the
// followers never elect anyone and the group takes no write until the
// disk comes back. With it the leader goes silent after StuckWriteAfter,
// another replica is elected and commits; when the write returns, the old
// leader follows and catches up. Each case hangs one kind of write, and
// the last all of them (StallWrites).
func TestLeaderWithAStuckDiskIsReplaced(t *testing.T) {
	cases := []struct {
		name string
		// hang installs gate on the replica's config, or returns false to
		// have the case stall the replica through StallWrites.
		hang func(gate *writeGate, cfg *Config) bool
	}{
		{"log", func(g *writeGate, cfg *Config) bool { cfg.beforeLogWrite = g.wait; return true }},
		{"state file", func(g *writeGate, cfg *Config) bool { cfg.beforeStateCommit = g.wait; return true }},
		{"StallWrites", func(*writeGate, *Config) bool { return false }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			timing := Timing{HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
				LeaderLeaseTimeout: 200 * time.Millisecond, CommitTimeout: 10 * time.Millisecond, StuckWriteAfter: time.Second}
			gates := []*writeGate{{}, {}, {}}
			hooked := false
			g := startTCPGroup(t, timing, func(i int, _ *quietTransport, cfg *Config) {
				hooked = tc.hang(gates[i], cfg)
			})
			shards, trans := g.shards, g.trans
			hang := func(on bool) {
				if hooked {
					gates[0].set(on)
				} else {
					shards[0].StallWrites(on)
				}
			}
			t.Cleanup(func() { hang(false) }) // before the replicas close: a held write would hold Close
			f := newFixture(t, shards[0])
			_, early := appendMsg(t, shards[0], f, f.inbox, "before the disk hangs")

			hang(true)
			blocked := make(chan error, 1)
			go func() {
				_, err := applyErr(shards[0], schema.NewID(), &schema.Append{User: f.user, Mailbox: f.inbox, Message: schema.NewID(),
					Blob: schema.NewID(), Size: 5, Sealed: []byte("attrs"), Chunks: [][]byte{[]byte("stuck")}})
				blocked <- err
			}()
			next := -1
			waitFor(t, "another replica leads while n1's disk hangs", 20*time.Second, func() bool {
				for i, s := range shards[1:] {
					if s.IsLeader() {
						next = i + 1
						return true
					}
				}
				return false
			})
			if trans[0].held.Load() == 0 {
				t.Error("n1 held no append back while its disk hung")
			}
			// n1 says its disk hangs, leads nothing meanwhile, and its
			// status does not wait for the disk either.
			waitFor(t, "n1 to say that its disk hangs", 10*time.Second, func() bool { return shards[0].Stuck() != nil })
			status := make(chan Status, 1)
			go func() { status <- shards[0].Status() }()
			select {
			case st := <-status:
				if st.Stuck == "" || st.LeaderID == "n1" {
					t.Errorf("n1's status while its disk hangs: stuck %q, leader %q", st.Stuck, st.LeaderID)
				}
			case <-time.After(5 * time.Second):
				t.Error("n1's status waited for its disk")
			}
			t.Logf("n1: %v", shards[0].Stuck())
			if shards[0].IsLeader() {
				t.Error("n1 still acts as the leader while its disk hangs")
			}
			// A read on n1 of a blob its state file holds answers at once
			// from that file, even while a commit of it hangs.
			read := make(chan error, 1)
			go func() {
				_, held, err := shards[0].QueryHeld(Query{Kind: QueryBody, User: f.user, Blob: early})
				if err == nil && !held {
					err = errors.New("not held")
				}
				read <- err
			}()
			select {
			case err := <-read:
				if err != nil {
					t.Errorf("a blob read on n1 while its disk hangs: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("a blob read on n1 waited for its disk")
			}
			uid, _ := appendMsg(t, shards[next], f, f.inbox, "while n1's disk hangs")

			hang(false)
			select {
			case err := <-blocked:
				t.Logf("the write n1 took while its disk hung: %v", err)
			case <-time.After(20 * time.Second):
				t.Fatal("n1's write did not return after its disk came back")
			}
			waitFor(t, "n1 follows", 10*time.Second, func() bool { return !shards[0].IsLeader() && shards[0].Stuck() == nil })
			index := shards[next].CommitIndex()
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer wcancel()
			for i, s := range shards {
				if err := s.WaitApplied(wctx, index); err != nil {
					t.Fatalf("n%d did not catch up to index %d: %v", i+1, index, err)
				}
			}
			for i, s := range shards {
				found := false
				for _, m := range messages(t, s, f.user, f.inbox) {
					found = found || m.UID == uid
				}
				if !found {
					t.Errorf("n%d lacks the message committed while n1's disk hung", i+1)
				}
			}
		})
	}
}

// TestReadGivesUpOnACommitThatHangs: a read that comes just as a commit
// of the state file starts to hang answers ErrStuck once the commit has
// lasted heldReadPatience, rather than waiting until the disk answers;
// once it does, reads see the group.
func TestReadGivesUpOnACommitThatHangs(t *testing.T) {
	s, hold := openShardHoldingCommits(t)
	f := newFixture(t, s)
	hold.on.Store(true)
	appendMsg(t, s, f, f.inbox, "applied, its commit hangs")
	hold.waitStarted(t)
	begun := time.Now()
	read := make(chan error, 1)
	go func() { read <- s.Read(func(*Reader) error { return nil }) }()
	select {
	case err := <-read:
		if !errors.Is(err, ErrStuck) {
			t.Fatalf("a read while the commit hangs: %v, want ErrStuck", err)
		}
		t.Logf("the read gave up after %v", time.Since(begun).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("a read that came as the commit began waited for the disk")
	}

	hold.let()
	waitFor(t, "reads answer once the commit returns", 10*time.Second, func() bool {
		return s.Read(func(*Reader) error { return nil }) == nil
	})
	if ms := messages(t, s, f.user, f.inbox); len(ms) != 1 {
		t.Fatalf("%d messages after the commit returned, want 1", len(ms))
	}
}

// TestStableStoreWriteThatHangsIsStuck: a follower whose write of a new
// term to raft.db hangs (at the election after a leadership transfer)
// says so through Stuck, naming the write, and stops saying so once the
// write returns.
func TestStableStoreWriteThatHangsIsStuck(t *testing.T) {
	timing := Timing{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
		LeaderLeaseTimeout: time.Second, CommitTimeout: 10 * time.Millisecond, StuckWriteAfter: time.Second}
	var armed [3]atomic.Bool
	release := make(chan struct{})
	g := startTCPGroup(t, timing, func(i int, _ *quietTransport, cfg *Config) {
		cfg.beforeStableWrite = func() {
			if armed[i].Load() {
				<-release
			}
		}
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	// The new leader's term reaches the armed replica, which writes it;
	// on a loaded machine a handover may fail or miss it: then again.
	hung := -1
	for attempt := 1; hung < 0; attempt++ {
		if attempt > 3 {
			t.Fatal("no replica's write of a new term hung in three handovers")
		}
		from := g.leader(t)
		follower, to := (from+1)%3, (from+2)%3
		armed[follower].Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := g.shards[from].TransferLeadership(ctx, g.shards[to].cfg.NodeID, g.shards[to].cfg.Address); err != nil {
			t.Logf("transfer: %v (an election may follow all the same)", err)
		}
		cancel()
		end := time.Now().Add(10 * time.Second)
		for time.Now().Before(end) {
			if err := g.shards[follower].Stuck(); err != nil && strings.Contains(err.Error(), "raft.db") {
				hung = follower
				break
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
		if hung < 0 && g.shards[follower].stable.writing.lasted() == 0 {
			armed[follower].Store(false) // its write never came; nothing is held
		} else if hung < 0 {
			t.Fatalf("n%d's write of a term hangs but Stuck says %v", follower+1, g.shards[follower].Stuck())
		}
	}
	t.Logf("n%d: %v", hung+1, g.shards[hung].Stuck())
	armed[hung].Store(false)
	close(release)
	released = true
	waitFor(t, "the replica is no longer stuck once the write returns", 10*time.Second, func() bool {
		return g.shards[hung].Stuck() == nil
	})
}

// TestReadWaitsOutASlowCommit: a commit of the state file that takes most
// of a second (a slow or busy disk, not a hung one) is waited for: a read
// that comes meanwhile answers once the commit returns, instead of
// failing with ErrStuck, which on the meta shard refuses a login.
func TestReadWaitsOutASlowCommit(t *testing.T) {
	s, hold := openShardHoldingCommits(t)
	f := newFixture(t, s)
	hold.on.Store(true)
	appendMsg(t, s, f, f.inbox, "applied, its commit is slow")
	hold.waitStarted(t)
	read := make(chan error, 1)
	go func() { read <- s.Read(func(*Reader) error { return nil }) }()
	time.AfterFunc(800*time.Millisecond, hold.let)
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("a read while a commit took 800 ms: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read outwaited the slow commit by seconds")
	}
	if ms := messages(t, s, f.user, f.inbox); len(ms) != 1 {
		t.Fatalf("%d messages after the slow commit, want 1", len(ms))
	}
}
