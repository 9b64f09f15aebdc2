package mailstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestSyncWatchersOfChangedMailboxes: a write waits for the watchers of
// the mailboxes it changed, not for a watcher of another mailbox, whose
// replica may be far behind.
func TestSyncWatchersOfChangedMailboxes(t *testing.T) {
	a := &Account{watchers: map[*watcher]struct{}{}}
	inbox, sent := schema.NewID(), schema.NewID()
	var mu sync.Mutex
	waited := map[schema.ID]uint64{}
	watch := func(mbox schema.ID) {
		w := &watcher{a: a, mbox: mbox, done: make(chan struct{})}
		w.cond = sync.NewCond(&w.mu)
		w.wait = func(_ context.Context, index uint64) error {
			mu.Lock()
			waited[mbox] = index
			mu.Unlock()
			return nil
		}
		a.watchers[w] = struct{}{}
	}
	watch(inbox)
	watch(sent)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	a.syncWatchers(ctx, 7, sent)
	if waited[inbox] != 0 || waited[sent] != 7 {
		t.Fatalf("a write to Sent waited for %v, want Sent's watcher only", waited)
	}
	a.syncWatchers(ctx, 9)
	if waited[inbox] != 9 || waited[sent] != 9 {
		t.Fatalf("a write to the account waited for %v, want every watcher", waited)
	}
}
