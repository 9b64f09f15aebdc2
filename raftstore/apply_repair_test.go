package raftstore

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/statedamage"
)

// TestRepairBlobPutsBackDamagedPieces: a RepairBlob writes over a chunk
// (small or large form) or a search record only where the replica holds
// other bytes of the same length, and counts it; an equal piece, a
// piece of another length and an expunged blob are left alone. The
// damage is statedamage's, on the closed state file, which also checks
// that package against the layout.
func TestRepairBlobPutsBackDamagedPieces(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	small := []byte("a small sealed chunk")
	large := bytes.Repeat([]byte("large sealed chunk "), 1000) // past largeChunk
	record := []byte("a sealed search record")
	blob := schema.NewID()
	r := apply(t, s, &schema.Append{User: f.user, Mailbox: f.inbox, Message: schema.NewID(), Blob: blob,
		Size: uint64(len(small) + len(large)), Sealed: []byte("attrs"), Chunks: [][]byte{small, large}, SearchRecord: record})
	piece := func(i uint32, rec bool) []byte {
		t.Helper()
		q := Query{Kind: QueryBody, User: f.user, Blob: blob}
		if rec {
			q = Query{Kind: QuerySearchRecords, User: f.user, Blobs: []schema.ID{blob}}
		}
		res, err := s.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		return res.Chunks[i]
	}
	code := func(p *schema.RepairBlob) schema.ErrCode {
		t.Helper()
		res, err := applyErr(s, schema.NewID(), p)
		if res == nil {
			t.Fatalf("repair: %v", err)
		}
		return res.Code
	}

	// Nothing damaged: nothing written, nothing counted.
	if c := code(&schema.RepairBlob{User: f.user, Blob: blob, Index: 0, Sealed: small}); c != schema.CodeOK || s.Status().Repaired != 0 {
		t.Fatalf("repair of a whole chunk: %v, %d repaired", c, s.Status().Repaired)
	}

	for _, tc := range []struct {
		name   string
		index  uint32
		rec    bool
		want   []byte
		damage func(path string) error
	}{
		{"small chunk", 0, false, small, func(path string) error { return statedamage.Chunk(path, f.user, blob, 0) }},
		{"large chunk", 1, false, large, func(path string) error { return statedamage.Chunk(path, f.user, blob, 1) }},
		{"search record", 0, true, record, func(path string) error { return statedamage.SearchRecord(path, f.user, blob) }},
	} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tc.damage(filepath.Join(dir, "state.db")); err != nil {
			t.Fatal(err)
		}
		s = openShard(t, dir)
		if bytes.Equal(piece(tc.index, tc.rec), tc.want) {
			t.Fatalf("%s: the damage did not take", tc.name)
		}
		// Bytes of another length are not this piece's.
		other := append(bytes.Clone(tc.want), 'x')
		if c := code(&schema.RepairBlob{User: f.user, Blob: blob, Index: tc.index, SearchRecord: tc.rec, Sealed: other}); c != schema.CodeInvalid {
			t.Fatalf("%s: repair with another length: %v", tc.name, c)
		}
		apply(t, s, &schema.RepairBlob{User: f.user, Blob: blob, Index: tc.index, SearchRecord: tc.rec, Sealed: tc.want})
		if got := piece(tc.index, tc.rec); !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: after the repair the piece reads %.40q", tc.name, got)
		}
		if n := s.Status().Repaired; n != 1 {
			t.Fatalf("%s: %d repairs counted since the replica opened, want 1", tc.name, n)
		}
	}

	// A chunk the blob does not have, an expunged blob, another user.
	if c := code(&schema.RepairBlob{User: f.user, Blob: blob, Index: 2, Sealed: small}); c != schema.CodeNoSuchMessage {
		t.Fatalf("repair of a chunk past the blob's: %v", c)
	}
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: []schema.ExpungeTarget{{UID: r.UIDs[0]}}})
	if c := code(&schema.RepairBlob{User: f.user, Blob: blob, Index: 0, Sealed: small}); c != schema.CodeOK {
		t.Fatalf("repair of an expunged blob: %v", c)
	}
	if c := code(&schema.RepairBlob{User: schema.NewID(), Blob: blob, Sealed: small}); c != schema.CodeNoSuchUser {
		t.Fatalf("repair for a user the shard lacks: %v", c)
	}
}
