package mailstore

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	// watchBuffer is how many events a watcher holds before it is told to
	// resynchronise instead.
	watchBuffer = 1024
	// syncTimeout bounds how long a write waits for its events to reach
	// the account's watchers; a watcher that misses it is resynchronised
	// instead, so the session reloads rather than miss its own change.
	syncTimeout = 5 * time.Second
	// refreshTimeout bounds how long Refresh waits for a watcher to catch
	// up with another session's write (or to learn the leader's index);
	// past it the session answers with what it has, and the changes
	// follow at a later command. A watcher waits for a given index once.
	refreshTimeout = syncTimeout
	// leaderIndexTimeout bounds Refresh's read of how far the shard's
	// leader has applied: a leader answers it from its lease in
	// milliseconds, and a node cut off from it should not hold every
	// NOOP for long.
	leaderIndexTimeout = 2 * time.Second
)

// watcher turns one mailbox's sealed change events, from whichever
// replica serves them, into decrypted changes on a channel. Events are
// queued by the cluster's callback (which must not block) and decrypted
// on the watcher's own goroutine.
type watcher struct {
	a    *Account
	mbox schema.ID
	out  chan schema.Change

	wait   func(ctx context.Context, index uint64) error
	cancel func()

	mu        sync.Mutex
	cond      *sync.Cond
	queue     []raftstore.Event
	overflow  bool
	enqueued  uint64 // highest index queued
	processed uint64 // highest index pushed to out
	// wanted is the highest index a write through this node made for the
	// user, by any session (Store.noteWrite), or the shard's leader had
	// applied when the session last asked it (Refresh): what Refresh
	// catches up to. reached is the highest such index a catch-up has
	// waited for, through it or until it gave up (catchUp).
	wanted   uint64
	reached  uint64
	nudged   bool // a catch-up started by another session's write runs (nudge)
	busy     bool // the worker holds events taken from the queue
	closed   bool
	done     chan struct{}
	stopOnce sync.Once
}

// Watch streams the changes to one mailbox, decrypted, in commit order.
// The account's own writes return only after their events are on the
// channel, so a session that drains it after its own command sees that
// command's effects. A watcher that falls behind, or whose event stream
// from another node broke beyond what the replica remembers, receives
// one schema.ChangeResync in place of what it missed.
func (a *Account) Watch(mbox schema.ID) (<-chan schema.Change, func()) {
	w := &watcher{a: a, mbox: mbox, out: make(chan schema.Change, watchBuffer), done: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	w.wait, w.cancel = a.s.c.Watch(a.shard, a.user, a.minIndex(), w.enqueue)
	a.mu.Lock()
	a.watchers[w] = struct{}{}
	a.mu.Unlock()
	a.s.watchMu.Lock()
	ws := a.s.watching[a.user]
	if ws == nil {
		ws = map[*watcher]struct{}{}
		a.s.watching[a.user] = ws
	}
	ws[w] = struct{}{}
	a.s.watchMu.Unlock()
	go w.run()
	return w.out, w.stop
}

// enqueue is the cluster's callback: it only queues.
func (w *watcher) enqueue(events []raftstore.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	for _, e := range events {
		if e.Index > w.enqueued {
			w.enqueued = e.Index
		}
		if e.Kind != schema.ChangeResync && e.Mailbox != w.mbox {
			continue
		}
		if len(w.queue) >= watchBuffer {
			w.overflow = true
			w.queue = w.queue[:0]
		}
		w.queue = append(w.queue, e)
	}
	if len(w.queue) == 0 && !w.busy && !w.overflow {
		w.processed = w.enqueued // nothing for this mailbox: all caught up
	}
	w.cond.Broadcast()
}

func (w *watcher) run() {
	defer close(w.done)
	defer close(w.out)
	for {
		w.mu.Lock()
		for !w.closed && len(w.queue) == 0 && !w.overflow {
			w.cond.Wait()
		}
		if w.closed {
			w.mu.Unlock()
			return
		}
		batch, overflow, through := w.queue, w.overflow, w.enqueued
		w.queue, w.overflow, w.busy = nil, false, true
		w.mu.Unlock()

		if overflow {
			w.push(schema.Change{Kind: schema.ChangeResync, Index: through, Mailbox: w.mbox})
		}
		for _, e := range batch {
			w.push(w.change(e))
		}
		w.mu.Lock()
		w.busy = false
		if through > w.processed {
			w.processed = through
		}
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

// change decrypts one event (on the watcher's goroutine, never the FSM's).
func (w *watcher) change(e raftstore.Event) schema.Change {
	c := schema.Change{Kind: e.Kind, Index: e.Index, ReqID: e.ReqID, Mailbox: e.Mailbox, UID: e.UID}
	if e.Message != nil {
		info, err := w.a.s.openMessage(w.a.keys, w.a.user, e.Message)
		if err != nil {
			w.a.s.log.Error("open message of change event", "err", err)
			return schema.Change{Kind: schema.ChangeResync, Index: e.Index, Mailbox: w.mbox}
		}
		c.Message = &info
	}
	return c
}

// push queues a change for the session; when the session does not keep
// up, what is queued is replaced by one resync.
func (w *watcher) push(c schema.Change) {
	select {
	case w.out <- c:
		return
	default:
	}
	for {
		select {
		case <-w.out:
			continue
		default:
		}
		break
	}
	w.out <- schema.Change{Kind: schema.ChangeResync, Index: c.Index, Mailbox: w.mbox}
}

// sync waits until every event up to index is on the channel. If that
// does not happen in time (the event stream is slow or broken), the
// session is told to resynchronise, which reads the mailbox afresh.
func (w *watcher) sync(ctx context.Context, index uint64) {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := w.wait(ctx, index); err != nil {
		w.resync(index)
		return
	}
	if !w.drained(ctx) {
		w.resync(index)
	}
}

// drained waits until every event queued so far is on the channel, and
// reports whether that happened (false: ctx ended first).
func (w *watcher) drained(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.closed && ctx.Err() == nil && (w.busy || len(w.queue) > 0 || w.overflow || w.processed < w.enqueued) {
		w.cond.Wait()
	}
	return w.closed || ctx.Err() == nil
}

// catchUp waits, for at most refreshTimeout, until every event up to the
// index asked for (want: another session's write, or the leader's
// applied index) is on the channel. Unlike sync it resyncs
// nothing when time runs out: the events still come, in order, and the
// session shows them at a later command.
func (w *watcher) catchUp(ctx context.Context) {
	w.mu.Lock()
	index := w.wanted
	done := w.closed || index <= w.reached || index <= w.processed && !w.busy && len(w.queue) == 0 && !w.overflow
	w.mu.Unlock()
	if done {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	if err := w.wait(ctx, index); err != nil || !w.drained(ctx) {
		w.a.s.log.Debug("watcher catch-up cut short", "index", index, "err", err)
	}
	// The index may be another user's write, which brings this watcher
	// no event to count: remember that it was passed. One that was not
	// (the replica is cut off) is not waited for again: its events come
	// when they come, and the session's later commands go on meanwhile.
	w.mu.Lock()
	w.reached = max(w.reached, index)
	w.mu.Unlock()
}

// want raises the index catchUp waits for.
func (w *watcher) want(index uint64) {
	w.mu.Lock()
	w.wanted = max(w.wanted, index)
	w.mu.Unlock()
}

// nudge starts a catch-up in the background, unless one already runs or
// the watcher has the events. A session in IDLE calls nothing that would
// catch up, and on a node whose replica follows it would hear of another
// session's write only when the replica learns of the commit (a
// CommitTimeout later); the catch-up has the watcher take the leader's
// events from then on, as a write of its own would. Only watchers of
// users who write through this node are nudged, so sessions that only
// read still open no stream to the leader.
func (w *watcher) nudge() {
	w.mu.Lock()
	start := !w.closed && !w.nudged && w.wanted > max(w.reached, w.processed)
	if start {
		w.nudged = true
	}
	w.mu.Unlock()
	if !start {
		return
	}
	go func() {
		w.catchUp(context.Background())
		w.mu.Lock()
		w.nudged = false
		w.mu.Unlock()
	}()
}

// resync queues a resynchronisation for the session.
func (w *watcher) resync(index uint64) {
	w.mu.Lock()
	if !w.closed {
		w.queue = append(w.queue, raftstore.Event{Kind: schema.ChangeResync, Index: index, Mailbox: w.mbox})
		w.cond.Broadcast()
	}
	w.mu.Unlock()
}

// stop ends the watcher; the channel is closed once its goroutine ends.
func (w *watcher) stop() {
	w.stopOnce.Do(func() {
		w.cancel()
		w.mu.Lock()
		w.closed = true
		w.cond.Broadcast()
		w.mu.Unlock()
		<-w.done
		w.a.mu.Lock()
		delete(w.a.watchers, w)
		w.a.mu.Unlock()
		s := w.a.s
		s.watchMu.Lock()
		if ws := s.watching[w.a.user]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(s.watching, w.a.user)
			}
		}
		s.watchMu.Unlock()
	})
}

// noteWrite tells every watcher of user on this node, whichever session
// opened it, that a write committed the user's shard up to index. The
// writing account (from, nil for a delivery) waits for its own watchers
// (syncWatchers); the others catch up when their session next looks for
// changes (Account.Refresh), or at once in the background (nudge), so a
// session sees at its next command, or in IDLE, what another session on
// the same node has done, even while this node's replica follows the
// shard's leader and learns of commits a moment after them.
func (s *Store) noteWrite(user schema.ID, index uint64, from *Account) {
	s.watchMu.Lock()
	ws := make([]*watcher, 0, len(s.watching[user]))
	for w := range s.watching[user] {
		w.want(index)
		if w.a != from {
			ws = append(ws, w)
		}
	}
	s.watchMu.Unlock()
	for _, w := range ws {
		w.nudge()
	}
}

// Refresh waits, briefly (refreshTimeout), until the account's watchers
// of mbox have been handed every change that writes through this node,
// by any session of the user, have committed; a session calls it before
// it reports a mailbox's changes (the updates after every IMAP command).
// With fromLeader it first asks the shard's leader how far it has
// applied, and waits for that too, so that changes made through other
// nodes show as well: what a client asking for news (NOOP, CHECK) is
// owed, at the cost of a read on the leader. Otherwise changes made
// through other nodes come as this node's replica learns of them.
func (a *Account) Refresh(ctx context.Context, mbox schema.ID, fromLeader bool) {
	a.mu.Lock()
	ws := make([]*watcher, 0, len(a.watchers))
	for w := range a.watchers {
		if w.mbox == mbox {
			ws = append(ws, w)
		}
	}
	a.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	if fromLeader {
		qctx, cancel := context.WithTimeout(ctx, leaderIndexTimeout)
		res, err := a.query(qctx, raftstore.Query{Kind: raftstore.QueryUserState})
		cancel()
		if err != nil {
			// The updates go out as they are; the command still
			// succeeds, as it would have before the changes came.
			a.s.log.Debug("refresh from the shard's leader", "err", err)
		} else {
			for _, w := range ws {
				w.want(res.Index)
			}
		}
	}
	for _, w := range ws {
		w.catchUp(ctx)
	}
}

// syncWatchers waits until the account's watchers of mboxes (of every
// mailbox when none is given) have every event up to index (see
// watcher.sync). A write waits only for the watchers of the mailboxes it
// changed: the others would drop its events anyway, and a mailbox
// selected later is read at or after the account's last index.
func (a *Account) syncWatchers(ctx context.Context, index uint64, mboxes ...schema.ID) {
	a.s.noteWrite(a.user, index, a)
	a.mu.Lock()
	ws := make([]*watcher, 0, len(a.watchers))
	for w := range a.watchers {
		if len(mboxes) == 0 || slices.Contains(mboxes, w.mbox) {
			ws = append(ws, w)
		}
	}
	a.mu.Unlock()
	for _, w := range ws {
		w.sync(ctx, index)
	}
}
