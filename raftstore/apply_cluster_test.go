package raftstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// testClock is a settable clock for a shard's lease times (Config.clock).
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// applyAt applies p with the proposer's time at, and, when the shard
// reads clk, with clk set to at first.
func applyAt(s *Shard, clk *testClock, at time.Time, p schema.Payload) (*schema.Result, error) {
	if clk != nil {
		clk.set(at)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Apply(ctx, schema.Command{ReqID: schema.NewID(), Time: at.UnixNano(), Payload: p})
}

func TestSwapSettingIsCompareAndSet(t *testing.T) {
	s := openShard(t, t.TempDir())
	if _, err := applyErr(s, schema.NewID(), &schema.SwapSetting{Key: "token/a", OldAbsent: true, New: []byte("unused")}); err != nil {
		t.Fatal(err)
	}
	// Two spenders read "unused"; only the first wins.
	spend := &schema.SwapSetting{Key: "token/a", Old: []byte("unused"), New: []byte("used")}
	if _, err := applyErr(s, schema.NewID(), spend); err != nil {
		t.Fatal(err)
	}
	if _, err := applyErr(s, schema.NewID(), spend); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("second spend: %v, want conflict", err)
	}
	if _, err := applyErr(s, schema.NewID(), &schema.SwapSetting{Key: "token/a", OldAbsent: true, New: []byte("x")}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("create over an existing value: %v, want conflict", err)
	}
	if _, err := applyErr(s, schema.NewID(), &schema.SwapSetting{Key: "token/a", Old: []byte("used")}); err != nil {
		t.Fatal(err)
	}
	var got map[string][]byte
	_ = s.View(func(r *Reader) error { got = r.Settings("token/"); return nil })
	if len(got) != 0 {
		t.Fatalf("deleted setting still there: %q", got)
	}
}

func TestLeaseExcludesOthersUntilItExpires(t *testing.T) {
	now := time.Now()
	clk := &testClock{t: now}
	s := openShardConfig(t, Config{Dir: t.TempDir(), clock: clk.now})
	a, b := schema.NewID(), schema.NewID()
	ttl := int64(30 * time.Second)
	if _, err := applyAt(s, clk, now, &schema.Lease{Key: "pop3/u", Holder: a, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	if _, err := applyAt(s, clk, now.Add(time.Second), &schema.Lease{Key: "pop3/u", Holder: b, TTL: ttl}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("second holder: %v, want conflict", err)
	}
	// The holder renews; another takes it only once it has expired.
	if _, err := applyAt(s, clk, now.Add(20*time.Second), &schema.Lease{Key: "pop3/u", Holder: a, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	if _, err := applyAt(s, clk, now.Add(40*time.Second), &schema.Lease{Key: "pop3/u", Holder: b, TTL: ttl}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("before the renewed expiry: %v, want conflict", err)
	}
	if _, err := applyAt(s, clk, now.Add(51*time.Second), &schema.Lease{Key: "pop3/u", Holder: b, TTL: ttl}); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	// Only the holder releases.
	if _, err := applyAt(s, clk, now.Add(52*time.Second), &schema.Lease{Key: "pop3/u", Holder: a, Release: true}); err != nil {
		t.Fatal(err)
	}
	var holder schema.ID
	var held bool
	_ = s.View(func(r *Reader) error { holder, _, held = r.Lease("pop3/u"); return nil })
	if !held || holder != b {
		t.Fatalf("lease held %v by %v, want b", held, holder)
	}
	if _, err := applyAt(s, clk, now.Add(53*time.Second), &schema.Lease{Key: "pop3/u", Holder: b, Release: true}); err != nil {
		t.Fatal(err)
	}
	_ = s.View(func(r *Reader) error { _, _, held = r.Lease("pop3/u"); return nil })
	if held {
		t.Fatal("released lease still held")
	}
}

func TestSpoolKeepsAMessageUntilEveryRecipientIsDone(t *testing.T) {
	s := openShard(t, t.TempDir())
	id, u1, u2 := schema.NewID(), schema.NewID(), schema.NewID()
	body := strings.Repeat("body", largeChunk/2) // large: a bucket of its own
	apply(t, s, &schema.StageChunk{User: id, Blob: id, Index: 0, Sealed: []byte("head")})
	sp := &schema.Spool{ID: id, From: []byte("from"), Size: 8, StagedChunks: 1, Chunks: [][]byte{[]byte(body)},
		Recipients: []schema.SpoolRecipient{{User: u1, Shard: 1}, {User: u2, Shard: 2}}}
	apply(t, s, sp)
	apply(t, s, sp) // a retry changes nothing
	var recs []schema.SpoolRecord
	var c0, c1 []byte
	_ = s.View(func(r *Reader) (err error) {
		recs, err = r.Spooled()
		c0, _ = r.SpoolChunk(id, 0)
		c1, _ = r.SpoolChunk(id, 1)
		return err
	})
	if len(recs) != 1 || recs[0].Chunks != 2 || len(recs[0].Recipients) != 2 || string(c0) != "head" || string(c1) != body {
		t.Fatalf("spooled %+v, chunks of %d and %d bytes", recs, len(c0), len(c1))
	}
	apply(t, s, &schema.SpoolDone{ID: id, Users: []schema.ID{u1}})
	_ = s.View(func(r *Reader) (err error) { recs, err = r.Spooled(); return err })
	if len(recs) != 1 || len(recs[0].Recipients) != 1 || recs[0].Recipients[0].User != u2 {
		t.Fatalf("after one recipient: %+v", recs)
	}
	apply(t, s, &schema.SpoolDone{ID: id, Users: []schema.ID{u2}})
	apply(t, s, &schema.SpoolDone{ID: id, Users: []schema.ID{u2}})
	_ = s.View(func(r *Reader) (err error) {
		recs, err = r.Spooled()
		c0, _ = r.SpoolChunk(id, 0)
		c1, _ = r.SpoolChunk(id, 1)
		return err
	})
	if len(recs) != 0 || c0 != nil || c1 != nil {
		t.Fatalf("finished spool left %+v, chunks of %d and %d bytes", recs, len(c0), len(c1))
	}
}
