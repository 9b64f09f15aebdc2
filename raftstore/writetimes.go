package raftstore

import (
	"sync/atomic"
	"time"
)

// WriteTimeBounds are the upper bounds of the buckets of WriteTimes: a
// log append on a fast disk takes a fraction of a millisecond, a state
// file's commit a few, and one on a failing device seconds.
var WriteTimeBounds = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// WriteTimes is how long one kind of a replica's work took, since the
// replica was opened: the histogram an operator reads a disk's health
// and a write's latency from.
type WriteTimes struct {
	Count uint64
	Sum   time.Duration
	// Buckets[i] counts what took at most WriteTimeBounds[i]
	// (cumulative, as Prometheus histograms count).
	Buckets []uint64
}

// timeHist collects WriteTimes without locks: it is observed on the
// write path and read at scrape time.
type timeHist struct {
	counts [len(WriteTimeBounds) + 1]atomic.Uint64 // by bucket of WriteTimeBounds, then above them all
	sum    atomic.Int64
}

func (h *timeHist) observe(d time.Duration) {
	i := 0
	for i < len(WriteTimeBounds) && d > WriteTimeBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// snapshot returns what was observed so far. Taken while observations
// go on, its count may run ahead of its sum by the ones in flight.
func (h *timeHist) snapshot() WriteTimes {
	wt := WriteTimes{Sum: time.Duration(h.sum.Load()), Buckets: make([]uint64, len(WriteTimeBounds))}
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
		if i < len(WriteTimeBounds) {
			wt.Buckets[i] = n
		}
	}
	wt.Count = n
	return wt
}

// ShardTimes are a replica's latency histograms.
type ShardTimes struct {
	// LogWrites: appends to the replica's Raft log, each a batch of
	// entries written and synced (on a leader and on a follower alike).
	LogWrites WriteTimes
	// StateCommits: commits of the replica's state file (two syncs).
	StateCommits WriteTimes
	// Applies: the commands this replica proposed as leader, from the
	// proposal to their apply here: the log write on a quorum, the round
	// trip to the followers, the apply.
	Applies WriteTimes
}

// Times returns the replica's latency histograms since it was opened.
func (s *Shard) Times() ShardTimes {
	return ShardTimes{
		LogWrites:    s.cache.writing.times.snapshot(),
		StateCommits: s.fsm.committing.times.snapshot(),
		Applies:      s.applies.snapshot(),
	}
}
