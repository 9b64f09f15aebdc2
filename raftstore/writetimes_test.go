package raftstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestTimeHist: each duration lands in the first bucket whose bound it
// does not exceed, the buckets count cumulatively, and what exceeds
// every bound counts only in the total.
func TestTimeHist(t *testing.T) {
	var h timeHist
	for _, d := range []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 300 * time.Microsecond, 3 * time.Millisecond, time.Minute} {
		h.observe(d)
	}
	wt := h.snapshot()
	if wt.Count != 5 || wt.Sum != 50*time.Microsecond+100*time.Microsecond+300*time.Microsecond+3*time.Millisecond+time.Minute {
		t.Fatalf("count %d, sum %v", wt.Count, wt.Sum)
	}
	want := map[time.Duration]uint64{100 * time.Microsecond: 2, 250 * time.Microsecond: 2, 500 * time.Microsecond: 3,
		2500 * time.Microsecond: 3, 5 * time.Millisecond: 4, 10 * time.Second: 4}
	for i, b := range WriteTimeBounds {
		if n, ok := want[b]; ok && wt.Buckets[i] != n {
			t.Errorf("bucket <= %v holds %d, want %d", b, wt.Buckets[i], n)
		}
	}
}

// TestShardTimes: a replica times its log appends, its state file's
// commits and the commands it proposed, one apply each.
func TestShardTimes(t *testing.T) {
	s := openShard(t, t.TempDir())
	before := s.Times()
	const n = 20
	for i := range n {
		apply(t, s, &schema.PutSetting{Key: fmt.Sprintf("timed/%d", i), Value: []byte("v")})
	}
	// A view commits the state file's pending group first.
	if err := s.View(func(*Reader) error { return nil }); err != nil {
		t.Fatal(err)
	}
	got := s.Times()
	if d := got.Applies.Count - before.Applies.Count; d != n {
		t.Errorf("%d applies timed, want %d", d, n)
	}
	if got.LogWrites.Count <= before.LogWrites.Count || got.StateCommits.Count <= before.StateCommits.Count {
		t.Errorf("log writes %d -> %d, state commits %d -> %d: not timed",
			before.LogWrites.Count, got.LogWrites.Count, before.StateCommits.Count, got.StateCommits.Count)
	}
	for name, wt := range map[string]WriteTimes{"log writes": got.LogWrites, "state commits": got.StateCommits, "applies": got.Applies} {
		if wt.Sum <= 0 {
			t.Errorf("%s: sum %v", name, wt.Sum)
		}
		for i := 1; i < len(wt.Buckets); i++ {
			if wt.Buckets[i] < wt.Buckets[i-1] || wt.Buckets[i] > wt.Count {
				t.Fatalf("%s: buckets %v of %d are not cumulative", name, wt.Buckets, wt.Count)
			}
		}
	}
}
