package raftstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// logGate holds a replica's log writes while it is shut.
type logGate struct {
	mu   sync.Mutex
	shut chan struct{} // nil while open
}

func (g *logGate) wait() {
	g.mu.Lock()
	ch := g.shut
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (g *logGate) close() {
	g.mu.Lock()
	g.shut = make(chan struct{})
	g.mu.Unlock()
}

func (g *logGate) open() {
	g.mu.Lock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
	g.mu.Unlock()
}

// TestLeaderWithAStuckLogIsReplaced: the leader's write to its Raft log
// hangs (a stalled disk). hashicorp/raft's leader loop waits in that
// write while its heartbeats go on, so without holdWhileStuck the
// followers never elect anyone and the group takes no write until the
// disk comes back. With it the leader goes silent after StuckLogAfter,
// another replica is elected and commits; when the write returns, the old
// leader follows and catches up.
func TestLeaderWithAStuckLogIsReplaced(t *testing.T) {
	timing := Timing{HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 200 * time.Millisecond, CommitTimeout: 10 * time.Millisecond, StuckLogAfter: time.Second}
	gates := []*logGate{{}, {}, {}}
	g := startTCPGroup(t, timing, func(i int, _ *quietTransport, cfg *Config) {
		cfg.beforeLogWrite = gates[i].wait
	})
	for _, gate := range gates {
		t.Cleanup(gate.open) // before the replicas close: a held write would hold Close
	}
	shards, trans := g.shards, g.trans
	f := newFixture(t, shards[0])
	appendMsg(t, shards[0], f, f.inbox, "before the disk hangs")

	gates[0].close()
	blocked := make(chan error, 1)
	go func() {
		_, err := applyErr(shards[0], schema.NewID(), &schema.Append{User: f.user, Mailbox: f.inbox, Message: schema.NewID(),
			Blob: schema.NewID(), Size: 5, Sealed: []byte("attrs"), Chunks: [][]byte{[]byte("stuck")}})
		blocked <- err
	}()
	next := -1
	waitFor(t, "another replica leads while n1's log write hangs", 20*time.Second, func() bool {
		for i, s := range shards[1:] {
			if s.IsLeader() {
				next = i + 1
				return true
			}
		}
		return false
	})
	if trans[0].held.Load() == 0 {
		t.Error("n1 held no append back while its log write hung")
	}
	uid, _ := appendMsg(t, shards[next], f, f.inbox, "while n1's disk hangs")

	gates[0].open()
	select {
	case err := <-blocked:
		t.Logf("the write n1 took while its disk hung: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("n1's write did not return after its disk came back")
	}
	waitFor(t, "n1 follows", 10*time.Second, func() bool { return !shards[0].IsLeader() })
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
}
