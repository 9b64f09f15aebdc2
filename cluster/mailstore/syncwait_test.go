package mailstore_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// waitRecorder is the real cluster, counting for each watcher (in the
// order they were opened) how often a write waited for it.
type waitRecorder struct {
	*cluster.Cluster
	mu     sync.Mutex
	waited []int
}

func (r *waitRecorder) Watch(n uint32, user schema.ID, from uint64, fn func([]raftstore.Event)) (func(context.Context, uint64) error, func()) {
	wait, cancel := r.Cluster.Watch(n, user, from, fn)
	r.mu.Lock()
	i := len(r.waited)
	r.waited = append(r.waited, 0)
	r.mu.Unlock()
	return func(ctx context.Context, index uint64) error {
		r.mu.Lock()
		r.waited[i]++
		r.mu.Unlock()
		return wait(ctx, index)
	}, cancel
}

// take returns the counts since the last call and starts again.
func (r *waitRecorder) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.waited)
	clear(r.waited)
	return out
}

// TestWritesWaitForTheWatchersTheyChange: a write waits for the watchers
// of the mailboxes it changes and for no other. A watcher that the write
// brings no event passes its index only at its source's next progress
// mark, a tick later on a follower's node: cluster3's APPEND into the
// selected mailbox waited that long for its \Recent claim (a user value,
// which changes no mailbox).
func TestWritesWaitForTheWatchersTheyChange(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 1})
	n := c.Nodes[0]
	c.AddUser("waits@example.test", pw)
	rec := &waitRecorder{Cluster: n.Cluster()}
	s := mailstore.New(rec, n.Directory(), mailstore.Config{})
	t.Cleanup(s.Close)
	a, err := s.Authenticate(ctx(t), schema.Credentials{Username: "waits@example.test", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	inbox, trash := mailbox(t, a, "INBOX").ID, mailbox(t, a, "Trash").ID
	_, stopInbox := a.Watch(inbox)
	defer stopInbox()
	_, stopTrash := a.Watch(trash)
	defer stopTrash()
	const inboxWatcher, trashWatcher = 0, 1

	msg := []byte("Subject: waits\r\n\r\nbody\r\n")
	app, err := a.Append(ctx(t), inbox, msg, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, want []int) {
		t.Helper()
		if got := rec.take(); !slices.Equal(got, want) {
			t.Errorf("%s waited for the watchers %v times (INBOX, Trash), want %v", what, got, want)
		}
	}
	check("APPEND to INBOX", []int{1, 0})

	if _, err := a.ClaimRecent(ctx(t), inbox, app.UID); err != nil {
		t.Fatal(err)
	}
	check("a \\Recent claim", []int{0, 0})
	// A deleted mailbox's subscription is kept in a user value.
	if err := a.CreateMailbox(ctx(t), "Projects", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.SetSubscribed(ctx(t), "Projects", true); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteMailbox(ctx(t), "Projects"); err != nil {
		t.Fatal(err)
	}
	rec.take()
	if err := a.SetSubscribed(ctx(t), "Projects", false); err != nil {
		t.Fatal(err)
	}
	check("dropping a kept subscription", []int{0, 0})

	if _, err := a.AppendBatch(ctx(t), trash, []schema.AppendMessage{{Message: msg}, {Message: msg}}); err != nil {
		t.Fatal(err)
	}
	check("MULTIAPPEND to Trash", []int{0, 1})
	if _, err := a.Copy(ctx(t), inbox, []schema.UID{app.UID}, trash); err != nil {
		t.Fatal(err)
	}
	check("COPY to Trash", []int{0, 1})
	if _, err := a.Move(ctx(t), inbox, []schema.UID{app.UID}, trash); err != nil {
		t.Fatal(err)
	}
	check("MOVE to Trash", []int{1, 1})
}
