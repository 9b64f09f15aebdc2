package raftstore

import (
	"bytes"
	"crypto/sha256"
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

// TestRepairRecordPutsBackDamagedRecords: a RepairRecord writes over the
// sealed part of a message or mailbox record only where the replica
// holds exactly the damaged bytes it names, and counts it; a record
// changed since, other bytes, another length, an expunged message and a
// deleted mailbox are left alone.
func TestRepairRecordPutsBackDamagedRecords(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	uid, _ := appendMsg(t, s, f, f.inbox, "body")
	record := func() schema.MessageRecord {
		t.Helper()
		ms := messages(t, s, f.user, f.inbox)
		if len(ms) != 1 {
			t.Fatalf("%d messages", len(ms))
		}
		return ms[0]
	}
	mailbox := func() schema.MailboxRecord {
		t.Helper()
		res, err := s.Query(Query{Kind: QueryMailbox, User: f.user, Mailbox: f.inbox})
		if err != nil {
			t.Fatal(err)
		}
		return res.Mailbox
	}
	reopen := func(damage func(path string) error) {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := damage(filepath.Join(dir, "state.db")); err != nil {
			t.Fatal(err)
		}
		s = openShard(t, dir)
	}
	hash := func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
	attrs := []byte("attrs")
	inbox := []byte("sealed-inbox")

	reopen(func(path string) error { return statedamage.MessageRecord(path, f.user, f.inbox, uid) })
	damaged := record().Sealed
	if bytes.Equal(damaged, attrs) || len(damaged) != len(attrs) {
		t.Fatalf("the damage did not take: %q", damaged)
	}
	for _, p := range []*schema.RepairRecord{
		{User: f.user, Mailbox: f.inbox, UID: uid, Damaged: hash(attrs), Sealed: attrs},         // names bytes the replica does not hold
		{User: f.user, Mailbox: f.inbox, UID: uid, Damaged: hash(damaged), Sealed: []byte("x")}, // another length
	} {
		apply(t, s, p)
		if got := record().Sealed; !bytes.Equal(got, damaged) {
			t.Fatalf("repair %+v wrote %q", p, got)
		}
	}
	fix := &schema.RepairRecord{User: f.user, Mailbox: f.inbox, UID: uid, Damaged: hash(damaged), Sealed: attrs}
	apply(t, s, fix)
	if got := record(); !bytes.Equal(got.Sealed, attrs) || got.ModSeq == 0 {
		t.Fatalf("after the repair the record is %+v", got)
	}
	apply(t, s, fix) // again: no replica holds the damaged bytes now
	if n := s.Status().Repaired; n != 1 {
		t.Fatalf("%d repairs counted, want 1", n)
	}

	reopen(func(path string) error { return statedamage.MailboxRecord(path, f.user, f.inbox) })
	damaged = mailbox().Sealed
	if bytes.Equal(damaged, inbox) {
		t.Fatal("the mailbox record's damage did not take")
	}
	apply(t, s, &schema.RepairRecord{User: f.user, Mailbox: f.inbox, Damaged: hash(damaged), Sealed: inbox})
	if got := mailbox(); !bytes.Equal(got.Sealed, inbox) || got.UIDNext != uid+1 {
		t.Fatalf("after the repair the mailbox record is %+v", got)
	}
	if n := s.Status().Repaired; n != 1 {
		t.Fatalf("%d repairs counted since the replica opened, want 1", n)
	}

	// Damaged, then changed by a flag change before the repair applies:
	// the change stays.
	reopen(func(path string) error { return statedamage.MessageRecord(path, f.user, f.inbox, uid) })
	damaged = record().Sealed
	apply(t, s, &schema.SetAttrs{User: f.user, Mailbox: f.inbox, Updates: []schema.AttrUpdate{{UID: uid, Sealed: []byte("flags")}}})
	apply(t, s, &schema.RepairRecord{User: f.user, Mailbox: f.inbox, UID: uid, Damaged: hash(damaged), Sealed: []byte("attrs")})
	if got := record().Sealed; string(got) != "flags" {
		t.Fatalf("a repair undid a later change: %q", got)
	}

	// An expunged message, a deleted mailbox, a user the shard lacks.
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: []schema.ExpungeTarget{{UID: uid}}})
	apply(t, s, &schema.RepairRecord{User: f.user, Mailbox: f.inbox, UID: uid, Damaged: hash(damaged), Sealed: attrs})
	apply(t, s, &schema.DeleteMailbox{User: f.user, Mailbox: f.other})
	apply(t, s, &schema.RepairRecord{User: f.user, Mailbox: f.other, Damaged: hash(damaged), Sealed: attrs})
	res, err := applyErr(s, schema.NewID(), &schema.RepairRecord{User: schema.NewID(), Mailbox: f.inbox, Sealed: attrs})
	if res == nil || res.Code != schema.CodeNoSuchUser {
		t.Fatalf("repair for a user the shard lacks: %+v, %v", res, err)
	}
	if n := s.Status().Repaired; n != 0 {
		t.Fatalf("%d repairs counted since the replica opened, want 0", n)
	}
}

// TestRepairOutboundPutsBackDamagedParts: a RepairOutbound writes over
// an outbound queue entry's state or a chunk of its message only where
// the replica holds exactly the damaged bytes it names, and counts it; a
// state changed since and a chunk the entry lacks are left alone.
func TestRepairOutboundPutsBackDamagedParts(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	id := schema.NewID()
	small := []byte("a small sealed chunk")
	large := bytes.Repeat([]byte("large sealed chunk "), 1000) // past largeChunk
	state := []byte("sealed state")
	apply(t, s, &schema.Enqueue{ID: id, User: schema.NewID(), Size: 10, Chunks: [][]byte{small, large}, State: state})
	entry := func() *QueryResult {
		t.Helper()
		res, err := s.Query(Query{Kind: QueryOutboundChunks, Blob: id})
		if err != nil || len(res.Outbound) != 1 || len(res.Chunks) != 2 {
			t.Fatalf("queue entry: %+v, %v", res, err)
		}
		return res
	}
	hash := func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
	for _, tc := range []struct {
		name   string
		part   uint32
		want   []byte
		damage func(path string) error
		got    func(*QueryResult) []byte
	}{
		{"state", 0, state, func(path string) error { return statedamage.OutboundState(path, id) }, func(r *QueryResult) []byte { return r.Outbound[0].State }},
		{"small chunk", 1, small, func(path string) error { return statedamage.OutboundChunk(path, id, 0) }, func(r *QueryResult) []byte { return r.Chunks[0] }},
		{"large chunk", 2, large, func(path string) error { return statedamage.OutboundChunk(path, id, 1) }, func(r *QueryResult) []byte { return r.Chunks[1] }},
	} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tc.damage(filepath.Join(dir, "state.db")); err != nil {
			t.Fatal(err)
		}
		s = openShard(t, dir)
		damaged := tc.got(entry())
		if bytes.Equal(damaged, tc.want) {
			t.Fatalf("%s: the damage did not take", tc.name)
		}
		apply(t, s, &schema.RepairOutbound{ID: id, Part: tc.part, Damaged: hash(tc.want), Sealed: tc.want})
		if !bytes.Equal(tc.got(entry()), damaged) {
			t.Fatalf("%s: a repair naming other bytes wrote", tc.name)
		}
		apply(t, s, &schema.RepairOutbound{ID: id, Part: tc.part, Damaged: hash(damaged), Sealed: tc.want})
		if got := tc.got(entry()); !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: after the repair it reads %.40q", tc.name, got)
		}
		if n := s.Status().Repaired; n != 1 {
			t.Fatalf("%s: %d repairs counted since the replica opened, want 1", tc.name, n)
		}
	}

	// Damaged, then changed by a delivery attempt: the change stays.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := statedamage.OutboundState(filepath.Join(dir, "state.db"), id); err != nil {
		t.Fatal(err)
	}
	s = openShard(t, dir)
	rec := entry().Outbound[0]
	apply(t, s, &schema.UpdateOutbound{ID: id, Version: rec.Version, State: []byte("sealed after")})
	apply(t, s, &schema.RepairOutbound{ID: id, Damaged: hash(rec.State), Sealed: []byte("sealed state")})
	if got := entry().Outbound[0].State; string(got) != "sealed after" {
		t.Fatalf("a repair undid a later change: %q", got)
	}
	res, err := applyErr(s, schema.NewID(), &schema.RepairOutbound{ID: id, Part: 3, Damaged: hash(small), Sealed: small})
	if res == nil || res.Code != schema.CodeNoSuchMessage {
		t.Fatalf("repair of a chunk the entry lacks: %+v, %v", res, err)
	}
	apply(t, s, &schema.DeleteOutbound{ID: id})
	apply(t, s, &schema.RepairOutbound{ID: id, Damaged: hash(rec.State), Sealed: state})
	if n := s.Status().Repaired; n != 0 {
		t.Fatalf("%d repairs counted since the replica opened, want 0", n)
	}
}
