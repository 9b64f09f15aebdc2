package mailstore_test

import (
	"slices"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestWritesWaitForTheWatchersTheyChange: a write waits for the watchers
// of the mailboxes it changes and for no other. A watcher that the write
// brings no event passes its index only at its source's next progress
// mark, a tick later on a follower's node: cluster3's APPEND into the
// selected mailbox waited that long for its \Recent claim (a user value,
// which changes no mailbox).
func TestWritesWaitForTheWatchersTheyChange(t *testing.T) {
	rec, a := newRecordedAccount(t, "waits@example.test")
	inbox, trash := mailbox(t, a, "INBOX").ID, mailbox(t, a, "Trash").ID
	_, stopInbox := a.Watch(inbox)
	defer stopInbox()
	_, stopTrash := a.Watch(trash)
	defer stopTrash()

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
