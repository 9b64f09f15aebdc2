package raftstore

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestQueryHeldOnlyForBlobsHeld: a replica answers a read of a blob's
// contents itself only while it holds every blob the read names, and
// never a read of anything that changes.
func TestQueryHeldOnlyForBlobsHeld(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	uid, blob := appendMsg(t, s, f, f.inbox, "Subject: kept\r\n\r\nbody\r\n")
	other := schema.NewID()

	held := func(q Query) (*QueryResult, bool) {
		t.Helper()
		q.User = f.user
		res, ok, err := s.QueryHeld(q)
		if err != nil {
			t.Fatalf("QueryHeld(%d): %v", q.Kind, err)
		}
		return res, ok
	}
	if res, ok := held(Query{Kind: QueryBody, Blob: blob}); !ok || len(res.Chunks) != 1 || string(res.Chunks[0]) != "Subject: kept\r\n\r\nbody\r\n" {
		t.Fatalf("body of a held blob: %v held=%v", res, ok)
	}
	if res, ok := held(Query{Kind: QueryHeader, Blob: blob}); !ok || res.Index == 0 {
		t.Fatalf("header of a held blob: %v held=%v", res, ok)
	}
	if _, ok := held(Query{Kind: QuerySearchRecords, Blobs: []schema.ID{blob}}); !ok {
		t.Fatal("search records of a held blob: not held")
	}
	for _, q := range []Query{
		{Kind: QueryBody, Blob: other},
		{Kind: QueryHeader, Blob: other},
		{Kind: QuerySearchRecords, Blobs: []schema.ID{blob, other}},
		// What changes is never answered here, whatever blob it names.
		{Kind: QuerySnapshot, Mailbox: f.inbox, Blob: blob, Blobs: []schema.ID{blob}},
		{Kind: QueryMessages, Mailbox: f.inbox, UIDs: []schema.UID{uid}, Blob: blob, Blobs: []schema.ID{blob}},
		{Kind: QueryUserValue, Mailbox: f.inbox, Name: "recent", Blob: blob, Blobs: []schema.ID{blob}},
	} {
		if res, ok := held(q); ok || res != nil {
			t.Fatalf("query %d answered as held: %v", q.Kind, res)
		}
	}
	if _, ok, err := s.QueryHeld(Query{Kind: QueryBody, User: schema.NewID(), Blob: blob}); ok || err != nil {
		t.Fatalf("another user's read of the blob: held=%v err=%v", ok, err)
	}

	ms := messages(t, s, f.user, f.inbox)
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: []schema.ExpungeTarget{{UID: ms[0].UID}}})
	if res, ok := held(Query{Kind: QueryBody, Blob: blob}); ok {
		t.Fatalf("body of an expunged blob answered as held: %v", res)
	}
}

// TestQueryCommittedReadsTheStateFile: QueryCommitted answers any query
// from the state file as committed, with the index it applied, and a
// data-model error in the result's code.
func TestQueryCommittedReadsTheStateFile(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	uid, _ := appendMsg(t, s, f, f.inbox, "Subject: kept\r\n\r\nbody\r\n")
	var applied uint64
	if err := s.View(func(r *Reader) error { applied = r.AppliedIndex(); return nil }); err != nil { // commits the group
		t.Fatal(err)
	}
	res, err := s.QueryCommitted(Query{Kind: QuerySnapshot, User: f.user, Mailbox: f.inbox})
	if err != nil || len(res.Messages) != 1 || res.Messages[0].UID != uid || res.Index < applied || res.Mailbox.ID != f.inbox {
		t.Fatalf("snapshot as committed: %+v, %v (applied %d)", res, err, applied)
	}
	res, err = s.QueryCommitted(Query{Kind: QuerySnapshot, User: schema.NewID(), Mailbox: f.inbox})
	if err == nil || res.Code != schema.CodeNoSuchUser {
		t.Fatalf("a user the shard lacks: %+v, %v", res, err)
	}
}
