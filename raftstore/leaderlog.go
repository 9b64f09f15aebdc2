package raftstore

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/hashicorp/raft"
)

// A leader's log write beside its appends to followers.
//
// hashicorp/raft's leader stores a batch in its own log before it hands
// the batch to its replicators, so a write to a group of several replicas
// waits for two log writes in series: the leader's, then a follower's
// (docs/architecture.md, twenty-third round). Raft allows the leader to
// write its log in parallel with replication, provided it counts itself
// in a quorum only for entries it has written (Ongaro's thesis, section
// 10.2.1). hashicorp/raft counts the leader in as soon as StoreLogs
// returns and offers no way to write in parallel, so a leader's log cache
// returns at once, writes the entries in a goroutine of its own, and
// holds back everything that raft's early count could make visible:
//
//   - the state machine applies no entry before this replica has written
//     it (fsm.ApplyBatch waits in logQueue.waitWritten), so no proposer
//     hears of a commit, and no read sees it, before the leader's write;
//   - no follower is told of a commit index past the leader's written
//     entries (quietTransport lowers LeaderCommitIndex to
//     logQueue.writtenThrough), so none applies an entry that only it and
//     an unwritten leader hold;
//   - Shard.CommitIndex reports the same bound.
//
// An index at or below both raft's commit index and the leader's written
// entries is in the log of the leader and of enough followers (each of
// which wrote it before answering) to make a quorum: committed in the
// thesis's sense. An entry above that bound is known, if the leader
// crashes, only to the logs that wrote it; it was acknowledged to no one
// and applied nowhere, which is what a crash before the write leaves in
// any Raft. The leader's vote requests after it steps down may count
// entries it has not finished writing, as its log in memory holds them;
// a crash then loses them as above, and a write that ends keeps them.
//
// Only a replica whose transport can lower the commit index (groups that
// talk over the cluster port) writes this way, and only while it leads
// other voters; a follower's writes, and every write of a replica that
// does not lead, stay synchronous (a follower's answer says the entries
// are on its disk), and so do a sole voter's, which has no one to write
// beside.

// Bounds of the entries a leader has handed over and not yet written:
// while they are exceeded, raft's leader loop waits in StoreLogs, as it
// did on the disk before, so a disk that falls behind slows the leader
// instead of filling its memory.
const (
	maxQueuedLogBytes   = 32 << 20
	maxQueuedLogEntries = 4096
)

// errLogAborted fails what waits on a leader's log write when the replica
// stops as a crash would (Shard.Abort): the entries not yet written are
// dropped.
var errLogAborted = errors.New("raft log: replica stopped before these entries were written")

// logQueue is a leader's entries handed over by raft and not yet written
// to the log beneath, and the goroutine that writes them, oldest first,
// as many at a time as have queued.
type logQueue struct {
	mu      sync.Mutex
	entries []*raft.Log // consecutive indexes
	bytes   int
	err     error         // a failed write; nothing is written after it
	closed  bool          // no more entries; the writer ends when entries is empty
	aborted bool          // closed, and the entries dropped
	changed chan struct{} // closed and replaced when entries shrink or err or closed is set
	work    chan struct{} // wakes the writer
	done    chan struct{} // closed when the writer has ended
}

func newLogQueue() *logQueue {
	return &logQueue{changed: make(chan struct{}), work: make(chan struct{}, 1), done: make(chan struct{})}
}

// signal wakes every waiter. q.mu is held.
func (q *logQueue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// waitLocked releases q.mu until the next change, then takes it again.
func (q *logQueue) waitLocked() {
	ch := q.changed
	q.mu.Unlock()
	<-ch
	q.mu.Lock()
}

// add queues logs for the writer, waiting while the queue is full.
func (q *logQueue) add(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.err == nil && !q.closed && len(q.entries) > 0 &&
		(q.bytes >= maxQueuedLogBytes || len(q.entries) >= maxQueuedLogEntries) {
		q.waitLocked()
	}
	switch {
	case q.err != nil:
		return q.err
	case q.closed:
		return ErrClosed
	}
	if n := len(q.entries); n > 0 && logs[0].Index != q.entries[n-1].Index+1 {
		return fmt.Errorf("raft log: entry %d queued after %d", logs[0].Index, q.entries[n-1].Index)
	}
	for _, l := range logs {
		q.entries = append(q.entries, l)
		q.bytes += entrySize(l)
	}
	select {
	case q.work <- struct{}{}:
	default:
	}
	return nil
}

// get copies the queued entry idx into log and reports whether it was
// queued.
func (q *logQueue) get(idx uint64, log *raft.Log) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.entries) == 0 {
		return false
	}
	first := q.entries[0].Index
	if idx < first || idx-first >= uint64(len(q.entries)) {
		return false
	}
	*log = *q.entries[idx-first]
	return true
}

// last returns the highest queued index, 0 when none is queued.
func (q *logQueue) last() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.entries) == 0 {
		return 0
	}
	return q.entries[len(q.entries)-1].Index
}

// writtenThrough returns the highest index below which every entry
// handed over has been written: all of them when none waits.
func (q *logQueue) writtenThrough() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.entries) == 0 {
		return math.MaxUint64
	}
	return q.entries[0].Index - 1
}

// waitWritten returns once no entry at or below idx waits to be written,
// or with the error that keeps one from being written.
func (q *logQueue) waitWritten(idx uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.entries) > 0 && q.entries[0].Index <= idx {
		switch {
		case q.err != nil:
			return q.err
		case q.aborted:
			return errLogAborted
		}
		q.waitLocked()
	}
	if q.aborted {
		return errLogAborted
	}
	return nil
}

// run writes the queued entries with write until the queue is closed and
// empty, or a write fails. failed, if set, hears of a failure.
func (q *logQueue) run(write func([]*raft.Log) error, written func([]*raft.Log), failed func(error)) {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.entries) == 0 && !q.closed {
			q.mu.Unlock()
			<-q.work
			q.mu.Lock()
		}
		if len(q.entries) == 0 || q.aborted {
			q.mu.Unlock()
			return
		}
		batch := q.entries
		q.mu.Unlock()

		err := write(batch)

		q.mu.Lock()
		if q.aborted {
			q.mu.Unlock()
			return
		}
		if err != nil {
			q.err = fmt.Errorf("raft log: write of entries %d-%d failed, this replica writes no more: %w",
				batch[0].Index, batch[len(batch)-1].Index, err)
			q.signal()
			err = q.err
			q.mu.Unlock()
			if failed != nil {
				failed(err)
			}
			return
		}
		// The written entries go to the cache before they leave the
		// queue, so a read finds them in one or the other.
		written(batch)
		q.entries = append([]*raft.Log(nil), q.entries[len(batch):]...)
		for _, l := range batch {
			q.bytes -= entrySize(l)
		}
		q.signal()
		q.mu.Unlock()
	}
}

// close stops the queue once the writer has written what is queued, or,
// with abort, drops it unwritten as a crash would; it returns when the
// writer has ended. A write under way ends first.
func (q *logQueue) close(abort bool) {
	q.mu.Lock()
	q.closed = true
	if abort {
		q.aborted = true
		q.entries, q.bytes = nil, 0
	}
	q.signal()
	select {
	case q.work <- struct{}{}:
	default:
	}
	q.mu.Unlock()
	<-q.done
}
