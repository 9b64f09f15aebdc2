package raftstore

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestSearchRecordFollowsBlob checks that a message's search record is
// stored with it (Append and AppendBatch), shared by a copy, kept by a
// move, deleted with the last message of its blob, and that messages
// stored without one read as none.
func TestSearchRecordFollowsBlob(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	records := func(blobs ...schema.ID) []string {
		t.Helper()
		res, err := s.Query(Query{Kind: QuerySearchRecords, User: f.user, Blobs: blobs})
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(res.Chunks))
		for i, c := range res.Chunks {
			out[i] = string(c)
		}
		return out
	}
	_, plain := appendMsg(t, s, f, f.inbox, "no record")
	if got := records(plain); got[0] != "" {
		t.Fatalf("message without a record reads %q", got)
	}
	blob := schema.NewID()
	r := apply(t, s, &schema.Append{User: f.user, Mailbox: f.inbox, Message: schema.NewID(), Blob: blob, Size: 4,
		Sealed: []byte("attrs"), Chunks: [][]byte{[]byte("body")}, SearchRecord: []byte("record-1")})
	uid := r.UIDs[0]
	b1, b2 := schema.NewID(), schema.NewID()
	apply(t, s, &schema.AppendBatch{User: f.user, Mailbox: f.inbox, Items: []schema.Append{
		{User: f.user, Mailbox: f.inbox, Message: schema.NewID(), Blob: b1, Size: 1, Sealed: []byte("a"), Chunks: [][]byte{[]byte("x")}, SearchRecord: []byte("record-2")},
		{User: f.user, Mailbox: f.inbox, Message: schema.NewID(), Blob: b2, Size: 1, Sealed: []byte("a"), Chunks: [][]byte{[]byte("y")}},
	}})
	if got := records(blob, b1, b2); got[0] != "record-1" || got[1] != "record-2" || got[2] != "" {
		t.Fatalf("records %q", got)
	}

	// A copy shares the blob and so the record; expunging the original
	// keeps it for the copy; a move keeps it; the last expunge drops it.
	cp := apply(t, s, &schema.Copy{User: f.user, Source: f.inbox, Dest: f.other, Items: []schema.CopyItem{{UID: uid, Message: schema.NewID(), Sealed: []byte("c")}}})
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: []schema.ExpungeTarget{{UID: uid}}})
	if got := records(blob); got[0] != "record-1" {
		t.Fatalf("record after expunging one of two copies: %q", got)
	}
	mv := apply(t, s, &schema.Copy{User: f.user, Source: f.other, Dest: f.inbox, Move: true, Items: []schema.CopyItem{{UID: cp.UIDs[0], Message: schema.NewID(), Sealed: []byte("m")}}})
	if got := records(blob); got[0] != "record-1" {
		t.Fatalf("record after a move: %q", got)
	}
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: []schema.ExpungeTarget{{UID: mv.UIDs[0]}}})
	if got := records(blob); got[0] != "" {
		t.Fatalf("record after the last expunge: %q", got)
	}

	// Deleting a mailbox drops the records of its messages.
	apply(t, s, &schema.Append{User: f.user, Mailbox: f.other, Message: schema.NewID(), Blob: blob, Size: 4,
		Sealed: []byte("attrs"), Chunks: [][]byte{[]byte("body")}, SearchRecord: []byte("record-3")})
	apply(t, s, &schema.DeleteMailbox{User: f.user, Mailbox: f.other})
	if got := records(blob); got[0] != "" {
		t.Fatalf("record after deleting its mailbox: %q", got)
	}
}
