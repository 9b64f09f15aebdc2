package raftstore

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// countingStore counts the reads that reach the store beneath the cache.
type countingStore struct {
	*raft.InmemStore
	reads int
}

func (s *countingStore) GetLog(idx uint64, l *raft.Log) error {
	s.reads++
	return s.InmemStore.GetLog(idx, l)
}

func entry(index uint64, size int) *raft.Log {
	data := bytes.Repeat([]byte{byte(index)}, size)
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// checkCache reads every index in [first, last] and compares it with what
// was stored; it returns how many reads reached the store.
func checkCache(t *testing.T, c *logCache, under *countingStore, first, last uint64, size func(uint64) int) int {
	t.Helper()
	before := under.reads
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := c.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if l.Index != i || !bytes.Equal(l.Data, entry(i, size(i)).Data) {
			t.Fatalf("GetLog(%d) = index %d, %d bytes; want entry %d of %d bytes", i, l.Index, len(l.Data), i, size(i))
		}
	}
	cached := 0
	for _, e := range c.ring {
		if e != nil {
			cached += entrySize(e)
		}
	}
	if cached != c.bytes || c.bytes > c.budget {
		t.Fatalf("cache counts %d bytes, holds %d, budget %d", c.bytes, cached, c.budget)
	}
	return under.reads - before
}

func TestLogCacheBoundsEntriesAndBytes(t *testing.T) {
	under := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(under, 8, 10<<10)

	small := func(uint64) int { return 100 }
	for i := uint64(1); i <= 20; i++ {
		if err := c.StoreLog(entry(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if n := checkCache(t, c, under, 13, 20, small); n != 0 {
		t.Errorf("the 8 newest small entries: %d reads reached the store, want 0", n)
	}
	if n := checkCache(t, c, under, 1, 12, small); n != 12 {
		t.Errorf("entries beyond the count: %d reads reached the store, want 12", n)
	}

	// Entries of 3 KiB: the 10 KiB budget holds the three newest.
	mid := func(i uint64) int {
		if i <= 20 {
			return 100
		}
		return 3 << 10
	}
	var batch []*raft.Log
	for i := uint64(21); i <= 26; i++ {
		batch = append(batch, entry(i, 3<<10))
	}
	if err := c.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if n := checkCache(t, c, under, 24, 26, mid); n != 0 {
		t.Errorf("the 3 newest 3 KiB entries: %d reads reached the store, want 0", n)
	}
	if n := checkCache(t, c, under, 15, 23, mid); n != 9 {
		t.Errorf("entries evicted for bytes: %d reads reached the store, want 9", n)
	}

	// An entry larger than the whole budget is stored but not cached,
	// and evicts nothing.
	big := func(i uint64) int {
		if i == 27 {
			return 20 << 10
		}
		return mid(i)
	}
	if err := c.StoreLog(entry(27, 20<<10)); err != nil {
		t.Fatal(err)
	}
	if n := checkCache(t, c, under, 27, 27, big); n != 1 {
		t.Errorf("an entry over the budget: %d reads reached the store, want 1", n)
	}
	if n := checkCache(t, c, under, 24, 26, big); n != 0 {
		t.Errorf("after an entry over the budget: %d reads of the cached ones reached the store, want 0", n)
	}
}

func TestLogCacheForgetsDeletedEntries(t *testing.T) {
	under := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(under, 16, 1<<20)
	for i := uint64(1); i <= 10; i++ {
		if err := c.StoreLog(entry(i, 10)); err != nil {
			t.Fatal(err)
		}
	}
	// A follower told that its entries from 6 on conflict with the
	// leader's removes them and stores the leader's in their place.
	if err := c.DeleteRange(6, 10); err != nil {
		t.Fatal(err)
	}
	for i := uint64(6); i <= 8; i++ {
		if err := c.StoreLog(entry(i, 50)); err != nil {
			t.Fatal(err)
		}
	}
	size := func(i uint64) int {
		if i >= 6 {
			return 50
		}
		return 10
	}
	if n := checkCache(t, c, under, 1, 8, size); n != 5 {
		t.Errorf("after the truncation: %d reads reached the store, want 5 (entries 1-5)", n)
	}
	var l raft.Log
	if err := c.GetLog(9, &l); err == nil {
		t.Errorf("GetLog(9) after its deletion found index %d", l.Index)
	}
}

// TestLogCacheRandomSizes stores batches of random sizes and checks after
// each that every entry reads back as stored and the byte count is right.
func TestLogCacheRandomSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	under := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(under, 32, 64<<10)
	sizes := map[uint64]int{}
	size := func(i uint64) int { return sizes[i] }
	next := uint64(1)
	for round := 0; round < 200; round++ {
		var batch []*raft.Log
		for n := 1 + rng.IntN(5); n > 0; n-- {
			s := rng.IntN(40 << 10)
			if rng.IntN(10) == 0 {
				s = 100 << 10
			}
			sizes[next] = s
			batch = append(batch, entry(next, s))
			next++
		}
		if err := c.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
		from := uint64(1)
		if next > 40 {
			from = next - 40
		}
		t.Run(fmt.Sprint(round), func(t *testing.T) { checkCache(t, c, under, from, next-1, size) })
	}
}

// TestLogCacheStartsAfreshAfterAGap: entries stored past a gap (raft
// restarts its log after a snapshot beyond its last index) leave no
// stale entry counted against the budget.
func TestLogCacheStartsAfreshAfterAGap(t *testing.T) {
	under := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(under, 8, 1<<20)
	for i := uint64(1); i <= 6; i++ {
		if err := c.StoreLog(entry(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.StoreLog(entry(20, 100)); err != nil {
		t.Fatal(err)
	}
	if c.bytes != 100 {
		t.Fatalf("after a gap the cache counts %d bytes, want only the new entry's 100", c.bytes)
	}
	if n := checkCache(t, c, under, 20, 20, func(uint64) int { return 100 }); n != 0 {
		t.Errorf("the entry after the gap: %d reads reached the store", n)
	}
}

// A replica whose log grows by SnapshotBytes takes a snapshot, and raft
// removes the log behind it, long before the entry threshold.
func TestSnapshotByLogSize(t *testing.T) {
	s := openShardTiming(t, t.TempDir(), Timing{SnapshotBytes: 256 << 10, SnapshotInterval: 50 * time.Millisecond, TrailingLogs: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := newFixture(t, s)
	body := strings.Repeat("x", 32<<10)
	for i := 0; i < 16; i++ { // 512 KiB of entries: twice the threshold
		appendMsg(t, s, f, f.inbox, body)
	}
	for {
		first, err := s.cache.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := s.snaps.List()
		if err != nil {
			t.Fatal(err)
		}
		if first > 1 && len(snaps) > 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no snapshot by size: log starts at %d, %d snapshots, %d bytes stored", first, len(snaps), s.cache.storedBytes())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got := len(messages(t, s, f.user, f.inbox)); got != 16 {
		t.Fatalf("%d messages after the snapshot, want 16", got)
	}
}
