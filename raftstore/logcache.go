package raftstore

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Sizes of each replica's cache of recent log entries. Raft reads an entry
// back soon after storing it: the leader to send it to followers, a
// follower to apply it. The cache answers those reads from memory. It is
// bounded in bytes as well as in entries because an entry carries a whole
// message: raft's own LogCache (a count only) held 512 entries per shard,
// which with large mail kept hundreds of MiB per shard alive and made the
// heap grow onto fresh pages for as long as the caches filled.
const (
	logCacheEntries = 512
	logCacheBytes   = 8 << 20
)

// logCache is a raft.LogStore that keeps the most recent entries stored
// through it in memory, at most a number of entries and of bytes (data and
// extensions), and forwards everything to the store beneath. Entries are
// evicted oldest first; one larger than the whole budget is not cached.
type logCache struct {
	store raft.LogStore

	mu     sync.RWMutex
	ring   []*raft.Log // entry i at ring[i%len(ring)], nil if not cached
	budget int
	bytes  int    // size of the cached entries
	oldest uint64 // no entry below it is cached
	newest uint64 // highest index stored since the last reset, 0 for none

	stored atomic.Uint64 // bytes of every entry stored through the cache

	// writing times the write to the store under way (see
	// Shard.stuckWrite); writes holds it while the replica's disk is
	// stalled (Shard.StallWrites), and before runs ahead of it in tests.
	writing writeClock
	writes  *writeGate
	before  func() // Config.beforeLogWrite

	// queue, when set, takes the leader's entries and writes them beside
	// replication (leaderlog.go) while beside reports true: while this
	// replica leads a group with other voters. A sole voter has no
	// follower to write beside, so it writes as before.
	queue  *logQueue
	beside atomic.Pointer[func() bool]
}

func newLogCache(store raft.LogStore, entries, budget int) *logCache {
	return &logCache{store: store, ring: make([]*raft.Log, entries), budget: budget}
}

func entrySize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) }

// IsMonotonic reports the store's own answer: raft-wal requires that raft
// never rewrites indexes below what it keeps (raft.MonotonicLogStore).
func (c *logCache) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// GetLog answers from memory when the entry is cached or waits to be
// written.
func (c *logCache) GetLog(idx uint64, log *raft.Log) error {
	if c.queue != nil && c.queue.get(idx, log) {
		return nil
	}
	c.mu.RLock()
	cached := c.ring[idx%uint64(len(c.ring))]
	c.mu.RUnlock()
	if cached != nil && cached.Index == idx {
		*log = *cached
		return nil
	}
	return c.store.GetLog(idx, log)
}

// StoreLog stores one entry.
func (c *logCache) StoreLog(log *raft.Log) error {
	return c.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores the entries beneath, then caches them. A leader's
// entries are queued for the writer instead when the cache writes beside
// replication (leaderlog.go); every other write waits for the queue to
// be written first, so the log takes its writes in order.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if c.queue != nil {
		if b := c.beside.Load(); b != nil && (*b)() {
			return c.queue.add(logs)
		}
		if err := c.queue.waitWritten(c.queue.last()); err != nil {
			return err
		}
	}
	if err := c.write(logs); err != nil {
		return err
	}
	c.cache(logs)
	return nil
}

// write stores logs in the store beneath, timed (see Shard.stuckWrite).
func (c *logCache) write(logs []*raft.Log) error {
	c.writing.begin()
	if c.writes != nil {
		c.writes.wait()
	}
	if c.before != nil {
		c.before()
	}
	err := c.store.StoreLogs(logs)
	c.writing.end()
	if err != nil {
		return fmt.Errorf("store log entries: %w", err)
	}
	return nil
}

// cache keeps logs, just written, in memory.
func (c *logCache) cache(logs []*raft.Log) {
	var n int
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		c.put(l)
		n += entrySize(l)
	}
	c.stored.Add(uint64(n))
}

// storedBytes is how many bytes of entries were stored through the cache
// since it was made.
func (c *logCache) storedBytes() uint64 { return c.stored.Load() }

// put caches l, which follows the entries stored before it, and evicts the
// oldest entries beyond the budget. c.mu is held.
func (c *logCache) put(l *raft.Log) {
	n := uint64(len(c.ring))
	if l.Index != c.newest+1 {
		// Not the entry after the last one stored: the first (past an
		// empty cache), raft storing over entries it removed (only after
		// DeleteRange, which emptied the cache) or past a gap. Start
		// afresh, so every cached entry is in the window of the last
		// len(ring) indexes and counted once.
		c.clear()
		c.oldest = l.Index
	}
	c.newest = l.Index
	slot := l.Index % n
	if old := c.ring[slot]; old != nil {
		c.bytes -= entrySize(old)
		c.ring[slot] = nil
	}
	if c.oldest+n <= l.Index {
		c.oldest = l.Index - n + 1
	}
	size := entrySize(l)
	if size > c.budget {
		return
	}
	c.ring[slot] = l
	c.bytes += size
	for c.bytes > c.budget && c.oldest < l.Index {
		c.evictThrough(c.oldest + 1)
	}
}

// evictThrough drops the cached entries below index. c.mu is held.
func (c *logCache) evictThrough(index uint64) {
	n := uint64(len(c.ring))
	for ; c.oldest < index; c.oldest++ {
		slot := c.oldest % n
		if e := c.ring[slot]; e != nil && e.Index == c.oldest {
			c.bytes -= entrySize(e)
			c.ring[slot] = nil
		}
	}
}

// clear empties the cache. c.mu is held.
func (c *logCache) clear() {
	clear(c.ring)
	c.bytes, c.newest, c.oldest = 0, 0, 0
}

// FirstIndex is the store's.
func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

// LastIndex is the store's, or the last entry waiting to be written.
func (c *logCache) LastIndex() (uint64, error) {
	last, err := c.store.LastIndex()
	if c.queue != nil && err == nil {
		last = max(last, c.queue.last())
	}
	return last, err
}

// DeleteRange empties the cache, then removes the entries beneath, once
// those of them that wait to be written are.
func (c *logCache) DeleteRange(min, max uint64) error {
	if c.queue != nil {
		if err := c.queue.waitWritten(max); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.clear()
	c.mu.Unlock()
	return c.store.DeleteRange(min, max)
}
