package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// applyLease proposes l on s with the proposer's clock at proposed.
func applyLease(s *Shard, proposed time.Time, l *schema.Lease) error {
	_, err := applyAt(s, nil, proposed, l)
	return err
}

// TestLeaseTimedByTheLeader checks that a lease's expiry and a take are
// read on the leader's clock, whatever clock the proposer sent: a node an
// hour ahead cannot take a lease its holder renewed, and a holder an hour
// behind does not shorten its own.
func TestLeaseTimedByTheLeader(t *testing.T) {
	t0 := time.Now()
	clk := &testClock{t: t0}
	s := openShardConfig(t, Config{Dir: t.TempDir(), clock: clk.now})
	a, b := schema.NewID(), schema.NewID()
	ttl := 30 * time.Second
	if err := applyLease(s, t0, &schema.Lease{Key: "pop3/u", Holder: a, TTL: int64(ttl)}); err != nil {
		t.Fatal(err)
	}
	// A minute on, the leader has led longer than a lease; the holder,
	// whose clock is an hour behind, renews.
	clk.set(t0.Add(time.Minute))
	if err := applyLease(s, t0.Add(time.Minute-time.Hour), &schema.Lease{Key: "pop3/u", Holder: a, TTL: int64(ttl)}); err != nil {
		t.Fatal(err)
	}
	var expires int64
	_ = s.Read(func(r *Reader) error { _, expires, _ = r.Lease("pop3/u"); return nil })
	if want := t0.Add(time.Minute + ttl).UnixNano(); expires != want {
		t.Fatalf("the renewed lease expires at %v, want %v (the leader's time plus the lease)",
			time.Unix(0, expires), time.Unix(0, want))
	}
	// A second later a node an hour ahead tries to take it.
	clk.set(t0.Add(time.Minute + time.Second))
	err := applyLease(s, t0.Add(time.Hour), &schema.Lease{Key: "pop3/u", Holder: b, TTL: int64(ttl)})
	if !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("a take proposed with a clock an hour ahead: %v, want conflict", err)
	}
	// Once the lease has run out on the leader's clock, it can.
	clk.set(t0.Add(time.Minute + ttl + time.Second))
	if err := applyLease(s, t0.Add(-time.Hour), &schema.Lease{Key: "pop3/u", Holder: b, TTL: int64(ttl)}); err != nil {
		t.Fatalf("a take after the lease ran out on the leader's clock: %v", err)
	}
}

// TestNewLeaderWaitsALeaseBeforeATakeover runs three replicas over TCP
// whose clocks differ by an hour. A lease taken under one leader is not
// taken by another holder right after the leadership moves to the replica
// whose clock is an hour ahead, although by that clock it ran out long
// ago; once the new leader has led for the lease's length it is. A lease
// nobody holds is taken at once all the same.
func TestNewLeaderWaitsALeaseBeforeATakeover(t *testing.T) {
	timing := Timing{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
		LeaderLeaseTimeout: time.Second, CommitTimeout: 10 * time.Millisecond}
	var offsets [3]atomic.Int64 // each replica's clock, ahead of the real one
	g := startTCPGroup(t, timing, func(i int, _ *quietTransport, cfg *Config) {
		cfg.clock = func() time.Time { return time.Now().Add(time.Duration(offsets[i].Load())) }
	})
	// Long enough that the take right after the handover comes within it
	// on a loaded machine too.
	const ttl = 8 * time.Second
	b := schema.NewID()

	// A loaded machine may move the leadership meanwhile: then again,
	// with a lease of its own.
	var s *Shard
	for attempt := 1; s == nil; attempt++ {
		if attempt > 3 {
			t.Fatal("the leadership did not stay with the replica it was handed to")
		}
		key := fmt.Sprintf("pop3/u%d", attempt)
		from := g.leader(t)
		if err := applyLease(g.shards[from], time.Now(), &schema.Lease{Key: key, Holder: schema.NewID(), TTL: int64(ttl)}); err != nil {
			t.Logf("take under n%d: %v", from+1, err)
			continue
		}
		to := (from + 1) % 3
		for i := range offsets {
			offsets[i].Store(0)
		}
		offsets[to].Store(int64(time.Hour))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := g.shards[from].TransferLeadership(ctx, g.shards[to].cfg.NodeID, g.shards[to].cfg.Address)
		cancel()
		if err != nil {
			t.Logf("hand the leadership from n%d to n%d: %v", from+1, to+1, err)
			continue
		}
		end := time.Now().Add(5 * time.Second)
		for !g.shards[to].IsLeader() && time.Now().Before(end) {
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
		if !g.shards[to].IsLeader() {
			continue
		}
		err = applyLease(g.shards[to], time.Now(), &schema.Lease{Key: key, Holder: b, TTL: int64(ttl)})
		if errors.Is(err, ErrNotLeader) {
			continue
		}
		if !errors.Is(err, schema.ErrConflict) {
			t.Fatalf("a take right after the leadership moved to a clock an hour ahead: %v, want conflict", err)
		}
		if err := applyLease(g.shards[to], time.Now(), &schema.Lease{Key: key + "-free", Holder: b, TTL: int64(ttl)}); err != nil {
			t.Fatalf("a lease nobody holds, taken under the new leader: %v", err)
		}
		s = g.shards[to]
		waitFor(t, "the lease taken over once the new leader led for its length", 30*time.Second, func() bool {
			err := applyLease(g.shards[g.leader(t)], time.Now(), &schema.Lease{Key: key, Holder: b, TTL: int64(ttl)})
			if err != nil && !errors.Is(err, schema.ErrConflict) && !errors.Is(err, ErrNotLeader) {
				t.Fatal(err)
			}
			return err == nil
		})
	}
}

// TestStagedPiecesTimedByTheLeader: a piece staged by a proposer whose
// clock is two hours behind is stamped with the leader's time, so an
// expiry of what was staged more than an hour ago leaves it.
func TestStagedPiecesTimedByTheLeader(t *testing.T) {
	s := openShard(t, t.TempDir())
	stage := &schema.StageChunk{User: schema.NewID(), Blob: schema.NewID(), Index: 0, Sealed: []byte("piece")}
	if _, err := applyAt(s, nil, time.Now().Add(-2*time.Hour), stage); err != nil {
		t.Fatal(err)
	}
	apply(t, s, &schema.ExpireStaged{Before: s.LeaderTime().Add(-time.Hour).UnixNano()})
	var n int
	_ = s.View(func(r *Reader) error { n = r.Stats().StagedChunks; return nil })
	if n != 1 {
		t.Fatalf("%d staged pieces left after expiring those over an hour old, want the one staged just now", n)
	}
}
