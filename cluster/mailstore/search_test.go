package mailstore_test

import (
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestSearchRecords checks that a message appended or delivered through
// a store with an indexer has the record the indexer built, opened with
// the user's key, that a copy reads the same record, and that an
// expunged message has none.
func TestSearchRecords(t *testing.T) {
	env := newEnv(t)
	env.AddUser(t, "rec@example.test", pw)
	a := env.Login(t, "rec@example.test", pw).(*mailstore.Account)
	inbox := mailbox(t, a, "INBOX")
	msg := "From: A <a@example.test>\r\nSubject: Quarterly report\r\n\r\nFigures attached.\r\n"
	res, err := a.Append(ctx(t), inbox.ID, []byte(msg), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Store.Deliver(ctx(t), schema.Delivery{Recipients: []string{"rec@example.test"}, Message: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
	snap, err := a.Snapshot(ctx(t), inbox.ID)
	if err != nil || len(snap.Messages) != 2 {
		t.Fatalf("snapshot %+v, %v", snap, err)
	}
	want := string(imap.BuildSearchRecord([]byte(msg)))
	blobs := []schema.ID{snap.Messages[0].Blob, snap.Messages[1].Blob, schema.NewID()}
	recs, err := a.SearchRecords(ctx(t), blobs)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || string(recs[0]) != want || string(recs[1]) != want || recs[2] != nil {
		t.Fatalf("records %q, want two of %q and none", recs, want)
	}

	archive := mailbox(t, a, "Archive")
	if _, err := a.Copy(ctx(t), inbox.ID, []schema.UID{res.UID}, archive.ID); err != nil {
		t.Fatal(err)
	}
	asnap, err := a.Snapshot(ctx(t), archive.ID)
	if err != nil || len(asnap.Messages) != 1 {
		t.Fatalf("archive %+v, %v", asnap, err)
	}
	if _, err := a.Expunge(ctx(t), inbox.ID, []schema.ExpungeTarget{{UID: res.UID}}); err != nil {
		t.Fatal(err)
	}
	if recs, err = a.SearchRecords(ctx(t), []schema.ID{asnap.Messages[0].Blob}); err != nil || string(recs[0]) != want {
		t.Fatalf("copy's record %q, %v", recs, err)
	}
	if _, err := a.Expunge(ctx(t), archive.ID, []schema.ExpungeTarget{{UID: asnap.Messages[0].UID}}); err != nil {
		t.Fatal(err)
	}
	// The record goes with the last expunge. A blob's contents are read
	// from the state file as committed while they are there (QueryHeld),
	// so until the expunge's group commits, a read may still find it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, err = a.SearchRecords(ctx(t), []schema.ID{asnap.Messages[0].Blob})
		if err != nil {
			t.Fatal(err)
		}
		if recs[0] == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record after the last expunge, 10 s on: %q", recs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
