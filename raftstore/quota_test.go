package raftstore

import (
	"errors"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func usage(t *testing.T, s *Shard, user schema.ID) uint64 {
	t.Helper()
	var b uint64
	if err := s.View(func(r *Reader) (err error) { b, _, err = r.Usage(user); return }); err != nil {
		t.Fatal(err)
	}
	return b
}

func quotaAppend(user, mbox schema.ID, body string, quota uint64) *schema.Append {
	return &schema.Append{User: user, Mailbox: mbox, Message: schema.NewID(), Blob: schema.NewID(),
		Size: uint64(len(body)), Sealed: []byte("attrs"), Chunks: [][]byte{[]byte(body)}, Quota: quota}
}

func TestQuotaRefusesAtApplyAndExpungeFrees(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	const limit = 20
	r := apply(t, s, quotaAppend(f.user, f.inbox, "0123456789", limit)) // 10 of 20
	apply(t, s, quotaAppend(f.user, f.other, "01234567", limit))        // 18 of 20
	if _, err := applyErr(s, schema.NewID(), quotaAppend(f.user, f.inbox, "abc", limit)); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("append over quota: %v", err)
	}
	if got := usage(t, s, f.user); got != 18 {
		t.Fatalf("usage %d after a refused append, want 18", got)
	}
	// A copy adds the copied size; a move changes nothing.
	cp := &schema.Copy{User: f.user, Source: f.inbox, Dest: f.other, Items: []schema.CopyItem{{UID: r.UIDs[0], Message: schema.NewID(), Sealed: []byte("a")}}, Quota: limit}
	if _, err := applyErr(s, schema.NewID(), cp); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("copy over quota: %v", err)
	}
	cp.Move = true
	apply(t, s, cp)
	if got := usage(t, s, f.user); got != 18 {
		t.Fatalf("usage %d after a move, want 18", got)
	}
	// Without a quota the command is not limited.
	apply(t, s, quotaAppend(f.user, f.inbox, "unlimited", 0))
	if got := usage(t, s, f.user); got != 27 {
		t.Fatalf("usage %d, want 27", got)
	}
	// Expunging frees the space.
	ms := messages(t, s, f.user, f.other)
	var targets []schema.ExpungeTarget
	for _, m := range ms {
		targets = append(targets, schema.ExpungeTarget{UID: m.UID})
	}
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.other, Targets: targets})
	if got := usage(t, s, f.user); got != 9 {
		t.Fatalf("usage %d after expunge, want 9", got)
	}
	apply(t, s, quotaAppend(f.user, f.inbox, "fits again", limit))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The usage is the state's: the same after a restart.
	s2 := openShard(t, dir)
	if got := usage(t, s2, f.user); got != 19 {
		t.Fatalf("usage %d after restart, want 19", got)
	}
	if _, err := applyErr(s2, schema.NewID(), quotaAppend(f.user, f.inbox, "xx", limit)); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("append over quota after restart: %v", err)
	}
}

func TestMessageQuota(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	limited := func(body string) *schema.Append {
		a := quotaAppend(f.user, f.inbox, body, 0)
		a.MessageQuota = 2
		return a
	}
	r := apply(t, s, limited("one"))
	apply(t, s, limited("two"))
	if _, err := applyErr(s, schema.NewID(), limited("three")); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("third message with a limit of two: %v", err)
	}
	cp := &schema.Copy{User: f.user, Source: f.inbox, Dest: f.other, Items: []schema.CopyItem{{UID: r.UIDs[0], Message: schema.NewID(), Sealed: []byte("a")}}, MessageQuota: 2}
	if _, err := applyErr(s, schema.NewID(), cp); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("copy over the message limit: %v", err)
	}
	batch := &schema.AppendBatch{User: f.user, Mailbox: f.other, MessageQuota: 3, Items: []schema.Append{*quotaAppend(f.user, f.other, "a", 0), *quotaAppend(f.user, f.other, "b", 0)}}
	if _, err := applyErr(s, schema.NewID(), batch); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("batch over the message limit: %v", err)
	}
	batch.MessageQuota = 4
	apply(t, s, batch)
}

func TestAppendBatchAllOrNothing(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	item := func(body string) schema.Append { return *quotaAppend(f.user, f.other, body, 0) }
	r := apply(t, s, &schema.AppendBatch{User: f.user, Mailbox: f.other, Items: []schema.Append{item("one"), item("two")}})
	if len(r.UIDs) != 2 || r.UIDs[0] != 1 || r.UIDs[1] != 2 || r.UIDValidity == 0 {
		t.Fatalf("batch result %+v", r)
	}
	// A bad second message (never staged) stores neither.
	bad := item("three")
	bad.StagedChunks, bad.Chunks = 1, nil
	if _, err := applyErr(s, schema.NewID(), &schema.AppendBatch{User: f.user, Mailbox: f.other, Items: []schema.Append{item("ok"), bad}}); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("batch with a bad message: %v", err)
	}
	// Over quota together: neither.
	if _, err := applyErr(s, schema.NewID(), &schema.AppendBatch{User: f.user, Mailbox: f.other, Quota: 10, Items: []schema.Append{item("abc"), item("defg")}}); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("batch over quota: %v", err)
	}
	if got := uids(messages(t, s, f.user, f.other)); len(got) != 2 {
		t.Fatalf("messages after refused batches: %v", got)
	}
	if mb := mailbox(t, s, f.user, f.other); mb.Messages != 2 || mb.Size != 6 || mb.UIDNext != 3 {
		t.Fatalf("mailbox after refused batches %+v", mb)
	}
}
