package raftstore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// writeGate holds a replica's writes to its disk while it is shut, as a
// disk that hangs would: see Shard.StallWrites.
type writeGate struct {
	mu   sync.Mutex
	shut atomic.Pointer[chan struct{}] // nil while open
}

// wait returns at once while the gate is open, else when it opens.
func (g *writeGate) wait() {
	if ch := g.shut.Load(); ch != nil {
		<-*ch
	}
}

// set shuts (on) or opens the gate.
func (g *writeGate) set(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := g.shut.Load()
	switch {
	case on && ch == nil:
		c := make(chan struct{})
		g.shut.Store(&c)
	case !on && ch != nil:
		g.shut.Store(nil)
		close(*ch)
	}
}

// writeClock records when a write to the disk that is under way began,
// so that one that hangs can be told from one that is slow, and how long
// the writes that ended took (Shard.Times). One write is under way at a
// time.
type writeClock struct {
	start atomic.Int64 // leaseClock at the start, plus one so that zero means none
	times timeHist
}

func (w *writeClock) begin() { w.start.Store(int64(leaseClock()) + 1) }

func (w *writeClock) end() {
	if start := w.start.Swap(0); start != 0 {
		w.times.observe(leaseClock() - time.Duration(start-1))
	}
}

// lasted returns how long the write under way has lasted, or zero when
// none is.
func (w *writeClock) lasted() time.Duration {
	start := w.start.Load()
	if start == 0 {
		return 0
	}
	return leaseClock() - time.Duration(start-1)
}

// StallWrites holds every write of this replica to its disk (its Raft
// log, its state file's commits, its term and vote) while on, and lets
// them through when turned off, as a disk that hangs and comes back
// would: a stalled volume, a frozen filesystem. It exists for the
// in-process fault tests, whose nodes share one disk: a replica that
// leads stops sending appends once a write has hung for
// Timing.StuckWriteAfter, so that another is elected. A held write holds
// Close, so turn it off before closing.
func (s *Shard) StallWrites(on bool) {
	s.writes.set(on)
}

// stuckWrite returns how long the replica's oldest write to its disk
// under way has lasted, and which write it is.
func (s *Shard) stuckWrite() (time.Duration, string) {
	d, what := s.cache.writing.lasted(), "the Raft log write"
	if st := s.fsm.committing.lasted(); st > d {
		d, what = st, "the state file's commit"
	}
	if st := s.stable.writing.lasted(); st > d {
		d, what = st, "the Raft stable store's write (raft.db)"
	}
	return d, what
}

// Stuck returns, while a write of this replica to its disk (its Raft
// log, a commit of its state file, its term or vote) has lasted longer
// than Timing.StuckWriteAfter, an error saying which and for how long;
// nil otherwise. A replica that leads steps aside meanwhile (IsLeader), and
// its node is not ready to serve (cluster.Ready): a disk that hangs
// (a stalled volume, a failing device) is for an operator to see.
func (s *Shard) Stuck() error {
	d, what := s.stuckWrite()
	if d <= s.cfg.Timing.StuckWriteAfter {
		return nil
	}
	return fmt.Errorf("shard %d: %s has not returned for %s", s.cfg.Shard, what, d.Round(100*time.Millisecond))
}
