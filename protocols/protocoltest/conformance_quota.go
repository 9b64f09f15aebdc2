package protocoltest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// CheckAppendBatch checks, on a fresh account without a quota, that
// AppendBatch stores its messages (a large one, over the size a store
// command carries inline, and a small one) together, in order, with
// consecutive UIDs, that an empty batch stores nothing, and that Quota
// counts every byte and message.
func CheckAppendBatch(t testing.TB, a protocols.Account) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.CreateMailbox(ctx, "Batch", schema.SpecialNone); err != nil {
		t.Fatal(err)
	}
	mb, err := a.Mailbox(ctx, "Batch")
	if err != nil {
		t.Fatal(err)
	}
	large := "Subject: large\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 80000) // about 1.4 MB
	small := "Subject: small\r\n\r\nsmall\r\n"
	res, err := a.AppendBatch(ctx, mb.ID, []schema.AppendMessage{
		{Message: []byte(large), Flags: []string{schema.FlagSeen}},
		{Message: []byte(small), Date: time.Date(2025, 2, 3, 9, 0, 0, 0, time.UTC)},
	})
	if err != nil {
		t.Fatalf("append batch: %v", err)
	}
	if len(res.UIDs) != 2 || res.UIDs[1] != res.UIDs[0]+1 || res.UIDValidity != mb.UIDValidity {
		t.Fatalf("append batch result %+v (mailbox UIDVALIDITY %d)", res, mb.UIDValidity)
	}
	if _, err := a.AppendBatch(ctx, mb.ID, nil); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("empty batch: %v", err)
	}
	if _, err := a.AppendBatch(ctx, schema.NewID(), []schema.AppendMessage{{Message: []byte(small)}}); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Errorf("batch to a missing mailbox: %v", err)
	}
	snap, err := a.Snapshot(ctx, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Messages) != 2 || !snap.Messages[0].HasFlag(schema.FlagSeen) || !snap.Messages[1].InternalDate.Equal(time.Date(2025, 2, 3, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("mailbox after the batch: %+v", snap.Messages)
	}
	for i, want := range []string{large, small} {
		body, err := a.Body(ctx, snap.Messages[i].Blob)
		if err != nil || !bytes.Equal(body, []byte(want)) {
			t.Fatalf("message %d: %d bytes, %v", i+1, len(body), err)
		}
	}
	q, err := a.Quota(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q.Limit != 0 || q.Usage < uint64(len(large)+len(small)) || q.Messages < 2 {
		t.Fatalf("quota %+v after a batch of %d bytes", q, len(large)+len(small))
	}
}

// CheckQuotaRefusals checks, on an account whose quota is limit bytes
// and that holds no mail yet, that APPEND, AppendBatch and Copy are
// refused with schema.ErrOverQuota when they would go over it and leave
// nothing behind, that Move is not limited, and that expunging frees
// space.
func CheckQuotaRefusals(t testing.TB, a protocols.Account, limit uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inbox, err := a.Mailbox(ctx, schema.InboxName)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreateMailbox(ctx, "Other", schema.SpecialNone); err != nil {
		t.Fatal(err)
	}
	other, err := a.Mailbox(ctx, "Other")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("Subject: q\r\n\r\n" + strings.Repeat("x", int(limit/2)-16) + "\r\n")
	first, err := a.Append(ctx, inbox.ID, msg, nil, time.Time{})
	if err != nil {
		t.Fatalf("append within quota: %v", err)
	}
	if _, err := a.AppendBatch(ctx, inbox.ID, []schema.AppendMessage{{Message: msg}, {Message: msg}}); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("batch over quota: %v", err)
	}
	if _, err := a.Append(ctx, inbox.ID, msg, nil, time.Time{}); err != nil {
		t.Fatalf("second append, still within quota: %v", err)
	}
	if _, err := a.Append(ctx, inbox.ID, []byte("Subject: one more\r\n\r\nx\r\n"), nil, time.Time{}); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("append over quota: %v", err)
	}
	if _, err := a.Copy(ctx, inbox.ID, []schema.UID{first.UID}, other.ID); !errors.Is(err, schema.ErrOverQuota) {
		t.Fatalf("copy over quota: %v", err)
	}
	q, err := a.Quota(ctx)
	if err != nil || q.Limit != limit || q.Messages != 2 || q.Usage != 2*uint64(len(msg)) {
		t.Fatalf("quota after refusals: %+v, %v", q, err)
	}
	if _, err := a.Move(ctx, inbox.ID, []schema.UID{first.UID}, other.ID); err != nil {
		t.Fatalf("move: %v", err)
	}
	snap, err := a.Snapshot(ctx, other.ID)
	if err != nil || len(snap.Messages) != 1 {
		t.Fatalf("other mailbox: %+v, %v", snap.Messages, err)
	}
	if _, err := a.Expunge(ctx, other.ID, []schema.ExpungeTarget{{UID: snap.Messages[0].UID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Append(ctx, inbox.ID, msg, nil, time.Time{}); err != nil {
		t.Fatalf("append after expunge: %v", err)
	}
}
