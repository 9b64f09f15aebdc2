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
	a := &Account{s: &Store{watching: map[schema.ID]map[*watcher]struct{}{}}, watchers: map[*watcher]struct{}{}}
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

// TestRefreshCatchesUpWithOtherSessions: a write through one account
// has the watchers of the user's other accounts on the node catch up to
// its index, in the background (nudge), once; the writer's own watcher
// only syncs, a watcher of another user is left alone, and a Refresh
// after the catch-up waits for nothing more.
func TestRefreshCatchesUpWithOtherSessions(t *testing.T) {
	s := &Store{watching: map[schema.ID]map[*watcher]struct{}{}}
	user, other := schema.NewID(), schema.NewID()
	writer := &Account{s: s, user: user, watchers: map[*watcher]struct{}{}}
	reader := &Account{s: s, user: user, watchers: map[*watcher]struct{}{}}
	stranger := &Account{s: s, user: other, watchers: map[*watcher]struct{}{}}
	inbox := schema.NewID()
	var mu sync.Mutex
	waits := map[*Account][]uint64{}
	waitsOf := func(a *Account) []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]uint64(nil), waits[a]...)
	}
	watchers := map[*Account]*watcher{}
	watch := func(a *Account) {
		w := &watcher{a: a, mbox: inbox, done: make(chan struct{})}
		w.cond = sync.NewCond(&w.mu)
		w.wait = func(_ context.Context, index uint64) error {
			mu.Lock()
			waits[a] = append(waits[a], index)
			mu.Unlock()
			return nil
		}
		a.watchers[w] = struct{}{}
		if s.watching[a.user] == nil {
			s.watching[a.user] = map[*watcher]struct{}{}
		}
		s.watching[a.user][w] = struct{}{}
		watchers[a] = w
	}
	watch(writer)
	watch(reader)
	watch(stranger)
	// settled waits until no background catch-up runs.
	settled := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, w := range watchers {
			for {
				w.mu.Lock()
				nudged := w.nudged
				w.mu.Unlock()
				if !nudged {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("a background catch-up did not end")
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	writer.syncWatchers(ctx, 7, inbox)
	settled()
	if got := waitsOf(reader); len(got) != 1 || got[0] != 7 {
		t.Fatalf("the other session's watcher waited for %v, want 7 once, by itself", got)
	}
	if got := waitsOf(writer); len(got) != 1 || got[0] != 7 {
		t.Fatalf("the writer's watcher waited for %v, want 7 once (its sync)", got)
	}
	reader.Refresh(ctx, inbox, false)
	stranger.Refresh(ctx, inbox, false)
	if got := waitsOf(reader); len(got) != 1 {
		t.Fatalf("Refresh after the catch-up waited again: %v", got)
	}
	if got := waitsOf(stranger); len(got) != 0 {
		t.Fatalf("another user's watcher waited for %v", got)
	}
	s.noteWrite(user, 9, nil) // a delivery
	settled()
	reader.Refresh(ctx, inbox, false)
	if got := waitsOf(reader); len(got) != 2 || got[1] != 9 {
		t.Fatalf("after a delivery the watcher waited for %v, want 7 then 9", got)
	}
}
