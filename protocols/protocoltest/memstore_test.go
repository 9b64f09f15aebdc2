package protocoltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const pw = "correct horse battery"

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newUser(t *testing.T, addr string) (*Env, protocols.Account) {
	t.Helper()
	env := NewStore(t)
	env.AddUser(t, addr, pw)
	return env, env.Login(t, addr, pw)
}

func mustMailbox(t *testing.T, a protocols.Account, name string) schema.MailboxInfo {
	t.Helper()
	mb, err := a.Mailbox(testCtx(t), name)
	if err != nil {
		t.Fatalf("mailbox %s: %v", name, err)
	}
	return mb
}

func mustAppend(t *testing.T, a protocols.Account, mbox schema.ID, msg string, flags ...string) schema.AppendResult {
	t.Helper()
	r, err := a.Append(testCtx(t), mbox, []byte(msg), flags, time.Time{})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return r
}

func mustSnapshot(t *testing.T, a protocols.Account, mbox schema.ID) schema.MailboxSnapshot {
	t.Helper()
	snap, err := a.Snapshot(testCtx(t), mbox)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return snap
}

// queued returns the changes queued on ch, without waiting.
func queued(ch <-chan schema.Change) []schema.Change {
	var out []schema.Change
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, c)
		default:
			return out
		}
	}
}

func TestDirectory(t *testing.T) {
	env := NewStore(t)
	m := env.Mem
	ctx := testCtx(t)
	if err := m.AddUser(ctx, "alice@example.test", pw); !errors.Is(err, schema.ErrNoSuchDomain) {
		t.Fatalf("user in unknown domain: %v", err)
	}
	if err := m.AddDomain(ctx, "Example.TEST"); err != nil {
		t.Fatal(err)
	}
	if err := m.AddDomain(ctx, "example.test"); !errors.Is(err, schema.ErrDomainExists) {
		t.Fatalf("duplicate domain: %v", err)
	}
	for _, bad := range []string{"", "nodot", "bad_char.test", "-x.test", "ünï.test"} {
		if err := m.AddDomain(ctx, bad); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("domain %q: %v", bad, err)
		}
	}
	for _, tc := range []struct{ addr, pw string }{
		{"alice@example.test", "short"},
		{"not an address", pw},
		{"a b@example.test", pw},
		{"@example.test", pw},
		{"alice@", pw},
	} {
		if err := m.AddUser(ctx, tc.addr, tc.pw); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("add user %q: %v", tc.addr, err)
		}
	}
	if err := m.AddUser(ctx, "Alice@Example.test", pw); err != nil {
		t.Fatal(err)
	}
	if err := m.AddUser(ctx, "alice@example.test", pw); !errors.Is(err, schema.ErrUserExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	env.AddUser(t, "bob@example.test", pw)

	// Logins: case-insensitive address, canonical address on the account;
	// wrong password, unknown user and garbage fail the same way.
	a, err := env.Store.Authenticate(ctx, schema.Credentials{Username: " ALICE@example.TEST", Password: pw})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if a.Address() != "alice@example.test" {
		t.Errorf("address %q", a.Address())
	}
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	for _, cred := range [][2]string{{"alice@example.test", "wrong password"}, {"nobody@example.test", pw}, {"garbage", pw}, {"", ""}} {
		acct, err := env.Store.Authenticate(ctx, schema.Credentials{Username: cred[0], Password: cred[1]})
		if !errors.Is(err, schema.ErrAuthFailed) || acct != nil {
			t.Errorf("login %q: %v, %v", cred[0], acct, err)
		}
	}

	for _, tc := range []struct {
		addr string
		want error
	}{
		{"alice@example.test", nil},
		{"ALICE@EXAMPLE.TEST", nil},
		{"bob+lists@example.test", nil},
		{"bob+@example.test", nil},
		{"+bob@example.test", schema.ErrNoSuchUser},
		{"carol+x@example.test", schema.ErrNoSuchUser},
		{"nobody@example.test", schema.ErrNoSuchUser},
		{"someone@elsewhere.test", schema.ErrNotLocal},
		{"not an address", schema.ErrInvalid},
	} {
		if err := env.Store.LookupRecipient(ctx, tc.addr); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("recipient %q: %v, want %v", tc.addr, err, tc.want)
		}
	}
}

func TestDefaultMailboxesAndUIDValidity(t *testing.T) {
	_, a := newUser(t, "carol@example.test")
	boxes, err := a.Mailboxes(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(boxes) != len(schema.DefaultMailboxes) {
		t.Fatalf("%d mailboxes, want %d", len(boxes), len(schema.DefaultMailboxes))
	}
	got := map[string]string{}
	validities := map[uint32]bool{}
	for i, b := range boxes {
		got[b.Name] = b.SpecialUse
		if !b.Subscribed || b.UIDValidity == 0 || b.UIDNext != 1 || b.HighestModSeq != 1 || b.Messages != 0 {
			t.Errorf("default mailbox %+v", b)
		}
		if validities[b.UIDValidity] {
			t.Errorf("UIDVALIDITY %d used twice", b.UIDValidity)
		}
		validities[b.UIDValidity] = true
		if i > 0 && boxes[i-1].Name >= b.Name {
			t.Errorf("mailboxes not sorted by name: %q before %q", boxes[i-1].Name, b.Name)
		}
	}
	for _, d := range schema.DefaultMailboxes {
		if su, ok := got[d.Name]; !ok || su != d.SpecialUse {
			t.Errorf("default mailbox %s missing or wrong special use %q", d.Name, su)
		}
	}
	if mustMailbox(t, a, "inbox").Name != schema.InboxName || mustMailbox(t, a, "InBoX").Name != schema.InboxName {
		t.Error("INBOX is not case-insensitive")
	}
	if _, err := a.Mailbox(testCtx(t), "sent"); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Errorf("other names are case-sensitive: %v", err)
	}

	// A mailbox deleted and created again gets a greater UIDVALIDITY.
	max := uint32(0)
	for v := range validities {
		max = max32(max, v)
	}
	for i := 0; i < 3; i++ {
		if err := a.CreateMailbox(testCtx(t), "Again", ""); err != nil {
			t.Fatal(err)
		}
		v := mustMailbox(t, a, "Again").UIDValidity
		if v <= max {
			t.Fatalf("UIDVALIDITY %d not above %d", v, max)
		}
		max = v
		if err := a.DeleteMailbox(testCtx(t), "Again"); err != nil {
			t.Fatal(err)
		}
	}
}

func max32(a, b uint32) uint32 {
	if a > b {
		return a
	}
	return b
}

func TestMailboxHierarchy(t *testing.T) {
	_, a := newUser(t, "carol@example.test")
	ctx := testCtx(t)
	if err := a.CreateMailbox(ctx, "Projects/2026/Q4", schema.SpecialArchive); err != nil {
		t.Fatal(err)
	}
	if p := mustMailbox(t, a, "Projects"); p.SpecialUse != "" || p.Subscribed {
		t.Errorf("parent created as %+v", p)
	}
	mustMailbox(t, a, "Projects/2026")
	if q := mustMailbox(t, a, "Projects/2026/Q4"); q.SpecialUse != schema.SpecialArchive || q.Subscribed {
		t.Errorf("created %+v", q)
	}
	for _, name := range []string{"Projects", "INBOX", "inbox"} {
		if err := a.CreateMailbox(ctx, name, ""); !errors.Is(err, schema.ErrMailboxExists) {
			t.Errorf("create existing %s: %v", name, err)
		}
	}
	for _, bad := range []string{"", "a//b", "/lead", "trail/", "wild*", "pct%", "ctl\x01", strings.Repeat("a/", 32) + "a", "\xff"} {
		if err := a.CreateMailbox(ctx, bad, ""); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("create %q: %v", bad, err)
		}
	}
	if err := a.CreateMailbox(ctx, "Odd", `\Important`); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("unknown special use: %v", err)
	}
	if err := a.CreateMailbox(ctx, "inbox/Sub", ""); err != nil {
		t.Fatal(err)
	}
	mustMailbox(t, a, "INBOX/Sub")

	q4 := mustMailbox(t, a, "Projects/2026/Q4")
	if err := a.RenameMailbox(ctx, "Projects", "Work/Old"); err != nil {
		t.Fatal(err)
	}
	if moved := mustMailbox(t, a, "Work/Old/2026/Q4"); moved.ID != q4.ID || moved.UIDValidity != q4.UIDValidity || moved.SpecialUse != q4.SpecialUse {
		t.Fatalf("child not renamed with its parent: %+v", moved)
	}
	for _, gone := range []string{"Projects", "Projects/2026"} {
		if _, err := a.Mailbox(ctx, gone); !errors.Is(err, schema.ErrNoSuchMailbox) {
			t.Fatalf("old name %s still resolves: %v", gone, err)
		}
	}
	mustMailbox(t, a, "Work")
	for _, tc := range []struct {
		from, to string
		want     error
	}{
		{"Work", "Work/Inside", schema.ErrInvalid},
		{"Work", "Work", schema.ErrInvalid},
		{"Work", "inbox", schema.ErrInvalid},
		{"Sent", "Archive", schema.ErrMailboxExists},
		{"Nothing", "Something", schema.ErrNoSuchMailbox},
	} {
		if err := a.RenameMailbox(ctx, tc.from, tc.to); !errors.Is(err, tc.want) {
			t.Errorf("rename %s to %s: %v, want %v", tc.from, tc.to, err, tc.want)
		}
	}

	if err := a.SetSubscribed(ctx, "Work", true); err != nil || !mustMailbox(t, a, "Work").Subscribed {
		t.Fatalf("subscribe: %v", err)
	}
	if err := a.SetSubscribed(ctx, "Work", false); err != nil || mustMailbox(t, a, "Work").Subscribed {
		t.Fatalf("unsubscribe: %v", err)
	}
	if err := a.SetSubscribed(ctx, "Nothing", true); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("subscribe to nothing: %v", err)
	}
	if err := a.DeleteMailbox(ctx, "inbox"); !errors.Is(err, schema.ErrCannotDelete) {
		t.Fatalf("delete inbox: %v", err)
	}
	if err := a.DeleteMailbox(ctx, "Nothing"); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("delete nothing: %v", err)
	}
	if err := a.DeleteMailbox(ctx, "Work/Old"); err != nil {
		t.Fatal(err)
	}
	mustMailbox(t, a, "Work/Old/2026") // children survive their parent's deletion

	// A child left behind holds its name: renaming onto its parent's
	// old place collides with it unless it moves too.
	if err := a.CreateMailbox(ctx, "Other/2026", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.RenameMailbox(ctx, "Other", "Work/Old"); !errors.Is(err, schema.ErrMailboxExists) {
		t.Fatalf("rename onto a surviving child's name: %v", err)
	}
}

func TestRenameInbox(t *testing.T) {
	_, a := newUser(t, "carol@example.test")
	inbox := mustMailbox(t, a, "INBOX")
	mustAppend(t, a, inbox.ID, "Subject: one\r\n\r\n1\r\n", `\Seen`)
	mustAppend(t, a, inbox.ID, "Subject: two\r\n\r\n2\r\n")
	if err := a.CreateMailbox(testCtx(t), "INBOX/Child", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.RenameMailbox(testCtx(t), "inbox", "Old/Inbox"); err != nil {
		t.Fatal(err)
	}
	after := mustMailbox(t, a, "INBOX")
	if after.ID != inbox.ID || after.Messages != 0 || after.UIDNext != 3 {
		t.Fatalf("INBOX after rename %+v", after)
	}
	old := mustMailbox(t, a, "Old/Inbox")
	snap := mustSnapshot(t, a, old.ID)
	if len(snap.Messages) != 2 || !snap.Messages[0].HasFlag(`\Seen`) || snap.Messages[1].UID != 2 {
		t.Fatalf("renamed inbox %+v", snap.Messages)
	}
	mustMailbox(t, a, "Old")
	mustMailbox(t, a, "INBOX/Child") // INBOX's children stay
}

func TestMessages(t *testing.T) {
	_, a := newUser(t, "dave@example.test")
	ctx := testCtx(t)
	inbox := mustMailbox(t, a, "INBOX")
	trash := mustMailbox(t, a, "Trash")

	small := []byte("Subject: hello\nFrom: x@y.test\n\nbare LF body\n")
	date := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	r1, err := a.Append(ctx, inbox.ID, small, []string{`\Seen`, "$Label1", `\seen`, `\Recent`}, date)
	if err != nil {
		t.Fatal(err)
	}
	if r1.UID != 1 || r1.UIDValidity != inbox.UIDValidity {
		t.Fatalf("append result %+v", r1)
	}
	r2 := mustAppend(t, a, inbox.ID, "no header end")
	for _, bad := range [][]string{{"bad flag("}, {`\`}, {""}, {"sp ace"}, {strings.Repeat("x", 257)}} {
		if _, err := a.Append(ctx, inbox.ID, small, bad, time.Time{}); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("flags %q: %v", bad, err)
		}
	}
	for _, mbox := range []schema.ID{{}, schema.NewID()} {
		if _, err := a.Append(ctx, mbox, small, nil, time.Time{}); !errors.Is(err, schema.ErrNoSuchMailbox) {
			t.Errorf("append to %s: %v", mbox, err)
		}
	}

	snap := mustSnapshot(t, a, inbox.ID)
	if len(snap.Messages) != 2 || snap.Mailbox.Messages != 2 || snap.Mailbox.UIDNext != 3 || snap.Mailbox.HighestModSeq != 3 || snap.Index == 0 {
		t.Fatalf("snapshot %+v", snap.Mailbox)
	}
	m1 := snap.Messages[0]
	want := bytes.ReplaceAll(small, []byte("\n"), []byte("\r\n"))
	if m1.Size != uint64(len(want)) || snap.Mailbox.Size != uint64(len(want)+len("no header end")) {
		t.Fatalf("sizes %d, %d", m1.Size, snap.Mailbox.Size)
	}
	if !m1.InternalDate.Equal(date) || !slices.Equal(m1.Flags, []string{`\Seen`, "$Label1"}) || m1.ModSeq != 2 {
		t.Fatalf("message 1 %+v", m1)
	}
	if m2 := snap.Messages[1]; m2.UID != r2.UID || m2.Flags != nil || m2.InternalDate.IsZero() {
		t.Fatalf("message 2 %+v", m2)
	}
	body, err := a.Body(ctx, m1.Blob)
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("body %q, %v", body, err)
	}
	hdr, err := a.Header(ctx, m1.Blob)
	if err != nil || string(hdr) != "Subject: hello\r\nFrom: x@y.test\r\n\r\n" {
		t.Fatalf("header %q, %v", hdr, err)
	}
	if hdr, err := a.Header(ctx, snap.Messages[1].Blob); err != nil || string(hdr) != "no header end" {
		t.Fatalf("header without body %q, %v", hdr, err)
	}
	if _, err := a.Body(ctx, schema.NewID()); !errors.Is(err, schema.ErrNoSuchMessage) {
		t.Fatalf("unknown blob: %v", err)
	}
	// What the store returns is a copy.
	body[0] = 'X'
	snap.Messages[0].Flags[0] = "mutated"
	if again, _ := a.Body(ctx, m1.Blob); !bytes.Equal(again, want) {
		t.Fatal("body shares memory with the caller")
	}
	if again := mustSnapshot(t, a, inbox.ID); again.Messages[0].Flags[0] != `\Seen` {
		t.Fatal("flags share memory with the caller")
	}

	infos, err := a.StoreFlags(ctx, inbox.ID, []schema.UID{2, 1, 99}, schema.FlagsAdd, []string{`\Flagged`})
	if err != nil || len(infos) != 2 || infos[0].UID != 1 || infos[1].UID != 2 {
		t.Fatalf("store: %+v %v", infos, err)
	}
	if !infos[0].HasFlag(`\Flagged`) || !infos[0].HasFlag(`\Seen`) || infos[0].ModSeq <= m1.ModSeq {
		t.Fatalf("after +FLAGS %+v", infos[0])
	}
	// No change, no new MODSEQ.
	before := mustSnapshot(t, a, inbox.ID)
	infos, _ = a.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsAdd, []string{`\FLAGGED`})
	if infos[0].ModSeq != before.Messages[0].ModSeq || mustSnapshot(t, a, inbox.ID).Mailbox.HighestModSeq != before.Mailbox.HighestModSeq {
		t.Fatalf("no-op store changed MODSEQ: %+v", infos[0])
	}
	infos, _ = a.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsRemove, []string{`\SEEN`})
	if infos[0].HasFlag(`\Seen`) || !infos[0].HasFlag(`\Flagged`) {
		t.Fatalf("after -FLAGS %+v", infos[0])
	}
	infos, _ = a.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsSet, []string{`\Deleted`, `\Recent`})
	if !slices.Equal(infos[0].Flags, []string{`\Deleted`}) {
		t.Fatalf("after FLAGS %+v", infos[0])
	}
	if _, err := a.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsAdd, []string{"(bad"}); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("bad flag: %v", err)
	}
	if _, err := a.StoreFlags(ctx, schema.NewID(), []schema.UID{1}, schema.FlagsAdd, nil); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("store in unknown mailbox: %v", err)
	}

	cr, err := a.Copy(ctx, inbox.ID, []schema.UID{1, 2, 77}, trash.ID)
	if err != nil || !slices.Equal(cr.Source, []schema.UID{1, 2}) || !slices.Equal(cr.Dest, []schema.UID{1, 2}) || cr.UIDValidity != trash.UIDValidity {
		t.Fatalf("copy %+v, %v", cr, err)
	}
	mr, err := a.Move(ctx, trash.ID, []schema.UID{2, 2, 55}, inbox.ID)
	if err != nil || !slices.Equal(mr.Source, []schema.UID{2}) || !slices.Equal(mr.Dest, []schema.UID{3}) || mr.UIDValidity != inbox.UIDValidity {
		t.Fatalf("move %+v, %v", mr, err)
	}
	if _, err := a.Copy(ctx, inbox.ID, []schema.UID{1}, schema.NewID()); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("copy to nowhere: %v", err)
	}
	if _, err := a.Move(ctx, schema.NewID(), []schema.UID{1}, inbox.ID); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("move from nowhere: %v", err)
	}
	// Flags and dates travel with the copy.
	tsnap := mustSnapshot(t, a, trash.ID)
	if len(tsnap.Messages) != 1 || !tsnap.Messages[0].HasFlag(`\Deleted`) || !tsnap.Messages[0].InternalDate.Equal(date) || tsnap.Messages[0].ID == m1.ID {
		t.Fatalf("trash after move %+v", tsnap.Messages)
	}

	// Expunge with a stale MODSEQ keeps the message.
	cur := mustSnapshot(t, a, inbox.ID)
	exp, err := a.Expunge(ctx, inbox.ID, []schema.ExpungeTarget{{UID: cur.Messages[0].UID, ModSeq: cur.Messages[0].ModSeq + 1}})
	if err != nil || len(exp) != 0 {
		t.Fatalf("stale expunge %v %v", exp, err)
	}
	exp, err = a.Expunge(ctx, inbox.ID, []schema.ExpungeTarget{{UID: 3}, {UID: 42}, {UID: 2}, {UID: cur.Messages[0].UID, ModSeq: cur.Messages[0].ModSeq}})
	if err != nil || !slices.Equal(exp, []schema.UID{3, 2, 1}) {
		t.Fatalf("expunge %v %v", exp, err)
	}
	if n := mustMailbox(t, a, "INBOX"); n.Messages != 0 || n.Size != 0 || n.UIDNext != 4 {
		t.Fatalf("inbox after expunge %+v", n)
	}
	if _, err := a.Expunge(ctx, schema.NewID(), nil); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("expunge nothing in unknown mailbox: %v", err)
	}
	// The copy in Trash still reads: stored messages are shared.
	if _, err := a.Body(ctx, tsnap.Messages[0].Blob); err != nil {
		t.Fatalf("copy lost its body: %v", err)
	}
	// Deleting the mailbox frees it.
	if err := a.DeleteMailbox(ctx, "Trash"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Body(ctx, tsnap.Messages[0].Blob); !errors.Is(err, schema.ErrNoSuchMessage) {
		t.Fatalf("body of a deleted mailbox's message: %v", err)
	}
	if _, err := a.Snapshot(ctx, trash.ID); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("snapshot of deleted mailbox: %v", err)
	}
}

func TestMoveWithinMailbox(t *testing.T) {
	_, a := newUser(t, "dave@example.test")
	inbox := mustMailbox(t, a, "INBOX")
	mustAppend(t, a, inbox.ID, "Subject: a\r\n\r\na\r\n")
	mr, err := a.Move(testCtx(t), inbox.ID, []schema.UID{1}, inbox.ID)
	if err != nil || !slices.Equal(mr.Dest, []schema.UID{2}) {
		t.Fatalf("move %+v %v", mr, err)
	}
	snap := mustSnapshot(t, a, inbox.ID)
	if len(snap.Messages) != 1 || snap.Messages[0].UID != 2 || snap.Mailbox.HighestModSeq != snap.Messages[0].ModSeq+1 {
		t.Fatalf("after move %+v", snap)
	}
}

func TestDeliver(t *testing.T) {
	env := NewStore(t)
	env.AddUser(t, "erin@example.test", pw)
	env.AddUser(t, "frank@example.test", pw)
	ctx := testCtx(t)
	msg := []byte("From: someone@remote.test\nSubject: hi\n\nhello\n")
	err := env.Store.Deliver(ctx, schema.Delivery{From: "someone@remote.test",
		Recipients: []string{"erin@example.test", "Frank+news@example.test", "erin@EXAMPLE.test"}, Message: msg})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
	for _, who := range []string{"erin@example.test", "frank@example.test"} {
		a := env.Login(t, who, pw)
		snap := mustSnapshot(t, a, mustMailbox(t, a, "INBOX").ID)
		if len(snap.Messages) != 1 || snap.Messages[0].Flags != nil {
			t.Fatalf("%s inbox: %+v", who, snap.Messages)
		}
		if body, _ := a.Body(ctx, snap.Messages[0].Blob); !bytes.Equal(body, want) {
			t.Fatalf("%s got %q", who, body)
		}
	}
	// Known recipients get their copy even when others fail.
	err = env.Store.Deliver(ctx, schema.Delivery{Recipients: []string{"nobody@example.test", "x@remote.test", "erin@example.test"}, Message: msg})
	if !errors.Is(err, schema.ErrNoSuchUser) || !errors.Is(err, schema.ErrNotLocal) {
		t.Fatalf("unknown recipients: %v", err)
	}
	if n := mustMailbox(t, env.Login(t, "erin@example.test", pw), "INBOX").Messages; n != 2 {
		t.Fatalf("erin has %d messages", n)
	}
	if err := env.Store.Deliver(ctx, schema.Delivery{Message: msg}); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("no recipients: %v", err)
	}
}

func TestWatch(t *testing.T) {
	env, a := newUser(t, "gina@example.test")
	other := env.Login(t, "gina@example.test", pw) // a second session of the same user
	ctx := testCtx(t)
	inbox := mustMailbox(t, a, "INBOX")
	sent := mustMailbox(t, a, "Sent")
	changes, stop := a.Watch(inbox.ID)
	defer stop()
	sentChanges, stopSent := other.Watch(sent.ID)
	defer stopSent()

	start := mustSnapshot(t, a, inbox.ID).Index
	r := mustAppend(t, other, inbox.ID, "Subject: a\r\n\r\na\r\n")
	// Queued before Append returned, on a watcher of another session.
	got := queued(changes)
	if len(got) != 1 || got[0].Kind != schema.ChangeAdded || got[0].UID != r.UID || got[0].Mailbox != inbox.ID ||
		got[0].Message == nil || got[0].Message.UID != r.UID || got[0].Index <= start || got[0].ReqID.IsZero() {
		t.Fatalf("append events %+v", got)
	}
	added := got[0]
	if snap := mustSnapshot(t, a, inbox.ID); snap.Index < added.Index {
		t.Fatalf("snapshot index %d before event index %d", snap.Index, added.Index)
	}
	if _, err := a.StoreFlags(ctx, inbox.ID, []schema.UID{r.UID}, schema.FlagsAdd, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Move(ctx, inbox.ID, []schema.UID{r.UID}, sent.ID); err != nil {
		t.Fatal(err)
	}
	got = queued(changes)
	if len(got) != 2 || got[0].Kind != schema.ChangeFlags || !got[0].Message.HasFlag(`\Seen`) || got[1].Kind != schema.ChangeExpunged ||
		got[0].Index <= added.Index || got[1].Index <= got[0].Index {
		t.Fatalf("flag and move events %+v", got)
	}
	if got[1].Message != nil {
		t.Errorf("expunge event carries a message")
	}
	moved := queued(sentChanges)
	if len(moved) != 1 || moved[0].Kind != schema.ChangeAdded || moved[0].Index != got[1].Index || moved[0].ReqID != got[1].ReqID || !moved[0].Message.HasFlag(`\Seen`) {
		t.Fatalf("move events on the destination %+v", moved)
	}
	// Mailbox changes: subscription and deletion.
	if err := a.SetSubscribed(ctx, "Sent", false); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteMailbox(ctx, "Sent"); err != nil {
		t.Fatal(err)
	}
	if got := queued(sentChanges); len(got) != 2 || got[0].Kind != schema.ChangeMailbox || got[1].Kind != schema.ChangeMailbox {
		t.Fatalf("mailbox events %+v", got)
	}
	if got := queued(changes); len(got) != 0 {
		t.Fatalf("INBOX watcher saw other mailboxes' events %+v", got)
	}
	// A failed write emits nothing.
	if _, err := a.Append(ctx, inbox.ID, []byte("x"), []string{"(bad"}, time.Time{}); err == nil {
		t.Fatal("bad flag accepted")
	}
	if got := queued(changes); len(got) != 0 {
		t.Fatalf("events from a failed write %+v", got)
	}

	stop()
	stop()
	if _, ok := <-changes; ok {
		t.Fatal("channel open after stop")
	}
	mustAppend(t, a, inbox.ID, "Subject: after stop\r\n\r\nx\r\n") // must not panic
}

func TestWatchOverflow(t *testing.T) {
	_, a := newUser(t, "hank@example.test")
	inbox := mustMailbox(t, a, "INBOX")
	changes, stop := a.Watch(inbox.ID)
	defer stop()
	for i := 0; i < watchBuffer+5; i++ {
		mustAppend(t, a, inbox.ID, fmt.Sprintf("Subject: %d\r\n\r\nx\r\n", i))
	}
	got := queued(changes)
	if len(got) != 5 || got[0].Kind != schema.ChangeResync || got[0].Mailbox != inbox.ID {
		t.Fatalf("after overflow: %d events, first %+v", len(got), got[0])
	}
	for _, c := range got[1:] {
		if c.Kind != schema.ChangeAdded || c.Index <= got[0].Index {
			t.Fatalf("after resync %+v", c)
		}
	}
}

func TestUnavailable(t *testing.T) {
	env, a := newUser(t, "ivan@example.test")
	ctx := testCtx(t)
	inbox := mustMailbox(t, a, "INBOX")
	mustAppend(t, a, inbox.ID, "Subject: a\r\n\r\na\r\n")
	changes, stop := a.Watch(inbox.ID)
	defer stop()
	env.SetUnavailable(true)
	writes := map[string]func() error{
		"append": func() error { _, err := a.Append(ctx, inbox.ID, []byte("x"), nil, time.Time{}); return err },
		"deliver": func() error {
			return env.Store.Deliver(ctx, schema.Delivery{Recipients: []string{"ivan@example.test"}, Message: []byte("x")})
		},
		"store": func() error {
			_, err := a.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsAdd, []string{`\Seen`})
			return err
		},
		"copy":      func() error { _, err := a.Copy(ctx, inbox.ID, []schema.UID{1}, inbox.ID); return err },
		"move":      func() error { _, err := a.Move(ctx, inbox.ID, []schema.UID{1}, inbox.ID); return err },
		"expunge":   func() error { _, err := a.Expunge(ctx, inbox.ID, []schema.ExpungeTarget{{UID: 1}}); return err },
		"create":    func() error { return a.CreateMailbox(ctx, "New", "") },
		"delete":    func() error { return a.DeleteMailbox(ctx, "Junk") },
		"rename":    func() error { return a.RenameMailbox(ctx, "Junk", "Spam") },
		"subscribe": func() error { return a.SetSubscribed(ctx, "Junk", false) },
		"add user":  func() error { return env.Mem.AddUser(ctx, "judy@example.test", pw) },
	}
	for name, write := range writes {
		if err := write(); !errors.Is(err, schema.ErrUnavailable) {
			t.Errorf("%s while unavailable: %v", name, err)
		}
	}
	if got := queued(changes); len(got) != 0 {
		t.Fatalf("events while unavailable %+v", got)
	}
	// Reads still work.
	if snap := mustSnapshot(t, a, inbox.ID); len(snap.Messages) != 1 || snap.Messages[0].Flags != nil {
		t.Fatalf("state changed while unavailable %+v", snap.Messages)
	}
	env.SetUnavailable(false)
	if _, err := a.Expunge(ctx, inbox.ID, []schema.ExpungeTarget{{UID: 1}}); err != nil {
		t.Fatalf("expunge after recovery: %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	_, a := newUser(t, "kim@example.test")
	inbox := mustMailbox(t, a, "INBOX")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Append(ctx, inbox.ID, []byte("x"), nil, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with canceled context: %v", err)
	}
	if n := mustMailbox(t, a, "INBOX").Messages; n != 0 {
		t.Fatalf("%d messages", n)
	}
}

func TestTooLarge(t *testing.T) {
	env, a := newUser(t, "lou@example.test")
	env.Mem.maxSize = 10 // the production limit, 256 MiB, is too big to test cheaply
	inbox := mustMailbox(t, a, "INBOX")
	// The limit applies to the message after CRLF normalisation.
	if _, err := a.Append(testCtx(t), inbox.ID, []byte("x\nxxxxxxxx"), nil, time.Time{}); !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("oversize append: %v", err)
	}
	if _, err := a.Append(testCtx(t), inbox.ID, []byte("x\r\nxxxxxxxx"), nil, time.Time{}); !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("oversize append: %v", err)
	}
	if _, err := a.Append(testCtx(t), inbox.ID, []byte("x\nxxxxxxx"), nil, time.Time{}); err != nil {
		t.Fatalf("append at the limit: %v", err)
	}
	err := env.Store.Deliver(testCtx(t), schema.Delivery{Recipients: []string{"lou@example.test"}, Message: []byte("01234567890")})
	if !errors.Is(err, schema.ErrTooLarge) {
		t.Fatalf("oversize delivery: %v", err)
	}
}

// TestConcurrentSessions runs writers, readers and watchers of one
// mailbox at once (meaningful under -race) and checks that every watcher
// sees every append, in UID order.
func TestConcurrentSessions(t *testing.T) {
	env, a := newUser(t, "max@example.test")
	inbox := mustMailbox(t, a, "INBOX")
	const writers, perWriter = 4, 50
	changes, stop := a.Watch(inbox.ID)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, writers*2)
	for w := 0; w < writers; w++ {
		sess := env.Login(t, "max@example.test", pw)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				r, err := sess.Append(context.Background(), inbox.ID, []byte("Subject: c\r\n\r\nc\r\n"), nil, time.Time{})
				if err == nil {
					_, err = sess.StoreFlags(context.Background(), inbox.ID, []schema.UID{r.UID}, schema.FlagsAdd, []string{`\Seen`})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				if _, err := sess.Snapshot(context.Background(), inbox.ID); err != nil {
					errs <- err
					return
				}
				if _, err := sess.Mailboxes(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var last schema.UID
	var lastIndex uint64
	added := 0
	for _, c := range queued(changes) {
		if c.Index < lastIndex {
			t.Fatalf("index went back: %d after %d", c.Index, lastIndex)
		}
		lastIndex = c.Index
		if c.Kind == schema.ChangeAdded {
			if c.UID <= last {
				t.Fatalf("UID %d after %d", c.UID, last)
			}
			last = c.UID
			added++
		}
	}
	if added != writers*perWriter {
		t.Fatalf("%d appends seen, want %d", added, writers*perWriter)
	}
}

func TestCheckConsistency(t *testing.T) {
	env, a := newUser(t, "nina@example.test")
	inbox := mustMailbox(t, a, "INBOX")
	mustAppend(t, a, inbox.ID, "Subject: a\r\n\r\na\r\n")
	if err := env.Mem.CheckConsistency(); err != nil {
		t.Fatalf("fresh store: %v", err)
	}
	mb := env.Mem.users["nina@example.test"].mailboxes[inbox.ID]
	blob := env.Mem.users["nina@example.test"].blobs[mb.msgs[0].Blob]
	for _, tc := range []struct {
		name          string
		corrupt, mend func()
	}{
		{"message count", func() { mb.info.Messages++ }, func() { mb.info.Messages-- }},
		{"UIDNEXT", func() { mb.info.UIDNext = 1 }, func() { mb.info.UIDNext = 2 }},
		{"MODSEQ", func() { mb.msgs[0].ModSeq = 99 }, func() { mb.msgs[0].ModSeq = 2 }},
		{"blob references", func() { blob.refs++ }, func() { blob.refs-- }},
	} {
		tc.corrupt()
		if err := env.Mem.CheckConsistency(); err == nil {
			t.Errorf("%s: corruption not found", tc.name)
		}
		tc.mend()
	}
	if err := env.Mem.CheckConsistency(); err != nil {
		t.Fatalf("mended store: %v", err)
	}
}
