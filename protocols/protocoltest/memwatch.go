package protocoltest

import (
	"context"
	"sync"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// memWatcher is one Watch call's queue. Only commands push to it, under
// the store's mutex, so there is one producer at a time.
type memWatcher struct {
	mbox schema.ID
	ch   chan schema.Change
}

// push queues c. A full queue is emptied and replaced by one
// schema.ChangeResync, as the production store does for a watcher that
// fell behind.
func (w *memWatcher) push(c schema.Change) {
	select {
	case w.ch <- c:
		return
	default:
	}
	for drained := false; !drained; {
		select {
		case <-w.ch:
		default:
			drained = true
		}
	}
	w.ch <- schema.Change{Kind: schema.ChangeResync, Index: c.Index, Mailbox: w.mbox}
}

// Watch streams the changes to one mailbox in commit order until stop is
// called; stop closes the channel and may be called more than once.
// Events caused by a write are queued before the write returns, so a
// session that drains the channel after its own command sees that
// command's effects. A watcher that falls behind by more than 1024
// events receives one schema.ChangeResync in place of what it missed.
func (a *MemAccount) Watch(mbox schema.ID) (<-chan schema.Change, func()) {
	s := a.s
	w := &memWatcher{mbox: mbox, ch: make(chan schema.Change, watchBuffer)}
	s.mu.Lock()
	s.nextWatcher++
	id := s.nextWatcher
	a.u.watchers[id] = w
	s.mu.Unlock()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			delete(a.u.watchers, id)
			close(w.ch)
		})
	}
	return w.ch, stop
}

// Refresh returns at once: every session's writes queue their events on
// all the user's watchers before they return.
func (a *MemAccount) Refresh(ctx context.Context, mbox schema.ID, fromLeader bool) {}
