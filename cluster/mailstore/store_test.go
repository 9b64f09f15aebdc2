package mailstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// env is a one-node cluster: the real directory and mail store.
type env struct {
	t     *testing.T
	c     *clustertest.Cluster
	n     *clustertest.Node
	Store protocols.Store
	Dir   string
}

func newEnv(t *testing.T) *env {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 2, SearchIndexer: imap.BuildSearchRecord})
	n := c.Nodes[0]
	return &env{t: t, c: c, n: n, Store: protocols.StoreOf[*mailstore.Account](n.Store()), Dir: n.Dir}
}

func (e *env) dir() *directory.Directory { return e.n.Directory() }

func (e *env) AddUser(t *testing.T, addr, password string) { e.c.AddUser(addr, password) }

func (e *env) Login(t *testing.T, addr, password string) protocols.Account {
	return e.n.Login(addr, password)
}

const pw = "correct horse battery"

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestDirectory(t *testing.T) {
	env := newEnv(t)
	c := env.dir()
	if err := c.AddUser(ctx(t), "alice@example.test", pw); !errors.Is(err, schema.ErrNoSuchDomain) {
		t.Fatalf("user in unknown domain: %v", err)
	}
	if err := c.AddDomain(ctx(t), "Example.TEST", "", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.AddDomain(ctx(t), "example.test", directory.KeyModeDomain, ""); !errors.Is(err, schema.ErrDomainExists) {
		t.Fatalf("duplicate domain: %v", err)
	}
	for _, bad := range []string{"", "nodot", "bad_char.test", "-x.test", "ünï.test"} {
		if err := c.AddDomain(ctx(t), bad, "", ""); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("domain %q: %v", bad, err)
		}
	}
	if err := c.AddUser(ctx(t), "alice@example.test", "short"); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("short password: %v", err)
	}
	if err := c.AddUser(ctx(t), "not an address", pw); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("bad address: %v", err)
	}
	if err := c.AddUser(ctx(t), "Alice@Example.test", pw); err != nil {
		t.Fatal(err)
	}
	if err := c.AddUser(ctx(t), "alice@example.test", pw); !errors.Is(err, schema.ErrUserExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	env.AddUser(t, "bob@example.test", pw)
	users, err := c.Users(ctx(t), "example.test")
	if err != nil || !slices.Equal(users, []string{"alice@example.test", "bob@example.test"}) {
		t.Fatalf("users %v, %v", users, err)
	}
	doms, err := c.Domains(ctx(t))
	if err != nil || len(doms) != 1 || doms[0].Users != 2 || doms[0].KeyMode != directory.KeyModeUser {
		t.Fatalf("domains %+v, %v", doms, err)
	}
	if err := c.DeleteDomain(ctx(t), "example.test"); !errors.Is(err, schema.ErrCannotDelete) {
		t.Fatalf("delete domain with users: %v", err)
	}

	// Logins: case-insensitive address; wrong password and unknown user
	// fail the same way.
	if _, err := c.Authenticate(ctx(t), schema.Credentials{Username: "ALICE@example.test", Password: pw}); err != nil {
		t.Fatalf("login: %v", err)
	}
	for _, cred := range [][2]string{{"alice@example.test", "wrong password"}, {"nobody@example.test", pw}, {"garbage", pw}} {
		if _, err := c.Authenticate(ctx(t), schema.Credentials{Username: cred[0], Password: cred[1]}); !errors.Is(err, schema.ErrAuthFailed) {
			t.Errorf("login %q: %v", cred[0], err)
		}
	}
	// A password change invalidates the cached old password at once.
	if err := c.SetPassword(ctx(t), "alice@example.test", "a new password"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Authenticate(ctx(t), schema.Credentials{Username: "alice@example.test", Password: pw}); !errors.Is(err, schema.ErrAuthFailed) {
		t.Fatalf("old password after change: %v", err)
	}
	if _, err := c.Authenticate(ctx(t), schema.Credentials{Username: "alice@example.test", Password: "a new password"}); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := c.DeleteUser(ctx(t), "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Authenticate(ctx(t), schema.Credentials{Username: "alice@example.test", Password: "a new password"}); !errors.Is(err, schema.ErrAuthFailed) {
		t.Fatalf("login after delete: %v", err)
	}
	if err := c.LookupRecipient(ctx(t), "alice@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Fatalf("recipient after delete: %v", err)
	}
	if err := c.LookupRecipient(ctx(t), "someone@elsewhere.test"); !errors.Is(err, schema.ErrNotLocal) {
		t.Fatalf("remote recipient: %v", err)
	}
	if err := c.LookupRecipient(ctx(t), "bob+lists@example.test"); err != nil {
		t.Fatalf("subaddress: %v", err)
	}
}

func login(t *testing.T, env *env, addr string) protocols.Account {
	t.Helper()
	env.AddUser(t, addr, pw)
	return env.Login(t, addr, pw)
}

func mailbox(t *testing.T, a protocols.Account, name string) schema.MailboxInfo {
	t.Helper()
	mb, err := a.Mailbox(ctx(t), name)
	if err != nil {
		t.Fatalf("mailbox %s: %v", name, err)
	}
	return mb
}

func TestMailboxes(t *testing.T) {
	env := newEnv(t)
	a := login(t, env, "carol@example.test")
	boxes, err := a.Mailboxes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range boxes {
		got[b.Name] = b.SpecialUse
		if !b.Subscribed || b.UIDValidity == 0 || b.UIDNext != 1 {
			t.Errorf("default mailbox %+v", b)
		}
	}
	for _, d := range schema.DefaultMailboxes {
		if su, ok := got[d.Name]; !ok || su != d.SpecialUse {
			t.Errorf("default mailbox %s missing or wrong special use %q", d.Name, su)
		}
	}
	if mailbox(t, a, "inbox").Name != "INBOX" {
		t.Error("INBOX is not case-insensitive")
	}
	if err := a.CreateMailbox(ctx(t), "Projects/2026/Q4", ""); err != nil {
		t.Fatal(err)
	}
	mailbox(t, a, "Projects")
	mailbox(t, a, "Projects/2026")
	if err := a.CreateMailbox(ctx(t), "Projects", ""); !errors.Is(err, schema.ErrMailboxExists) {
		t.Fatalf("create existing: %v", err)
	}
	for _, bad := range []string{"", "a//b", "/lead", "trail/", "wild*", "pct%"} {
		if err := a.CreateMailbox(ctx(t), bad, ""); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("create %q: %v", bad, err)
		}
	}
	q4 := mailbox(t, a, "Projects/2026/Q4")
	if err := a.RenameMailbox(ctx(t), "Projects", "Work/Old"); err != nil {
		t.Fatal(err)
	}
	if moved := mailbox(t, a, "Work/Old/2026/Q4"); moved.ID != q4.ID || moved.UIDValidity != q4.UIDValidity {
		t.Fatalf("child not renamed with its parent: %+v", moved)
	}
	if _, err := a.Mailbox(ctx(t), "Projects/2026"); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Fatalf("old name still resolves: %v", err)
	}
	mailbox(t, a, "Work")
	if err := a.RenameMailbox(ctx(t), "Work", "Work/Inside"); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("rename into own child: %v", err)
	}
	if err := a.RenameMailbox(ctx(t), "Sent", "Archive"); !errors.Is(err, schema.ErrMailboxExists) {
		t.Fatalf("rename onto existing: %v", err)
	}
	if err := a.SetSubscribed(ctx(t), "Work", false); err != nil || mailbox(t, a, "Work").Subscribed {
		t.Fatalf("unsubscribe: %v", err)
	}
	if err := a.DeleteMailbox(ctx(t), "INBOX"); !errors.Is(err, schema.ErrCannotDelete) {
		t.Fatalf("delete inbox: %v", err)
	}
	if err := a.DeleteMailbox(ctx(t), "Work/Old"); err != nil {
		t.Fatal(err)
	}
	mailbox(t, a, "Work/Old/2026") // children survive their parent's deletion

	// Renaming INBOX moves its mail and leaves it empty.
	inbox := mailbox(t, a, "INBOX")
	if _, err := a.Append(ctx(t), inbox.ID, []byte("Subject: x\r\n\r\nbody\r\n"), nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := a.RenameMailbox(ctx(t), "INBOX", "Old Inbox"); err != nil {
		t.Fatal(err)
	}
	if n := mailbox(t, a, "INBOX").Messages; n != 0 {
		t.Fatalf("INBOX keeps %d messages after rename", n)
	}
	if n := mailbox(t, a, "Old Inbox").Messages; n != 1 {
		t.Fatalf("renamed inbox has %d messages", n)
	}
}

func TestMessages(t *testing.T) {
	env := newEnv(t)
	a := login(t, env, "dave@example.test")
	inbox := mailbox(t, a, "INBOX")
	trash := mailbox(t, a, "Trash")

	small := []byte("Subject: hello\nFrom: x@y.test\n\nbare LF body\n")
	date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r1, err := a.Append(ctx(t), inbox.ID, small, []string{`\Seen`, "$Label1", `\seen`}, date)
	if err != nil {
		t.Fatal(err)
	}
	if r1.UID != 1 || r1.UIDValidity != inbox.UIDValidity {
		t.Fatalf("append result %+v", r1)
	}
	// A message bigger than one Raft entry is staged in chunks.
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n"), 3<<20/76)
	big = append([]byte("Subject: big\r\n\r\n"), big...)
	r2, err := a.Append(ctx(t), inbox.ID, big, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Append(ctx(t), inbox.ID, small, []string{"bad flag("}, time.Time{}); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("bad flag: %v", err)
	}

	snap, err := a.Snapshot(ctx(t), inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Messages) != 2 || snap.Mailbox.Messages != 2 || snap.Index == 0 {
		t.Fatalf("snapshot %+v", snap.Mailbox)
	}
	m1 := snap.Messages[0]
	want := bytes.ReplaceAll(small, []byte("\n"), []byte("\r\n"))
	if m1.Size != uint64(len(want)) || !m1.InternalDate.Equal(date) || !slices.Equal(m1.Flags, []string{`\Seen`, "$Label1"}) {
		t.Fatalf("message 1 %+v", m1)
	}
	body, err := a.Body(ctx(t), m1.Blob)
	if err != nil || !bytes.Equal(body, want) {
		t.Fatalf("body %q, %v", body, err)
	}
	hdr, err := a.Header(ctx(t), m1.Blob)
	if err != nil || string(hdr) != "Subject: hello\r\nFrom: x@y.test\r\n\r\n" {
		t.Fatalf("header %q, %v", hdr, err)
	}
	bigBody, err := a.Body(ctx(t), snap.Messages[1].Blob)
	if err != nil || !bytes.Equal(bigBody, big) || snap.Messages[1].UID != r2.UID {
		t.Fatalf("big body: %d bytes, want %d, %v", len(bigBody), len(big), err)
	}

	// Watch sees this session's own writes as soon as they return.
	changes, stop := a.Watch(inbox.ID)
	defer stop()
	infos, err := a.StoreFlags(ctx(t), inbox.ID, []schema.UID{1, 2, 99}, schema.FlagsAdd, []string{`\Flagged`})
	if err != nil || len(infos) != 2 {
		t.Fatalf("store: %v %v", infos, err)
	}
	if !infos[0].HasFlag(`\Flagged`) || !infos[0].HasFlag(`\Seen`) || infos[0].ModSeq <= m1.ModSeq {
		t.Fatalf("after +FLAGS %+v", infos[0])
	}
	for i := 0; i < 2; i++ {
		select {
		case c := <-changes:
			if c.Kind != schema.ChangeFlags || c.Message == nil || !c.Message.HasFlag(`\Flagged`) {
				t.Fatalf("change %+v", c)
			}
		default:
			t.Fatal("flag change not queued when StoreFlags returned")
		}
	}
	infos, _ = a.StoreFlags(ctx(t), inbox.ID, []schema.UID{1}, schema.FlagsRemove, []string{`\SEEN`})
	if infos[0].HasFlag(`\Seen`) || !infos[0].HasFlag(`\Flagged`) {
		t.Fatalf("after -FLAGS %+v", infos[0])
	}
	infos, _ = a.StoreFlags(ctx(t), inbox.ID, []schema.UID{1}, schema.FlagsSet, []string{`\Deleted`})
	if !slices.Equal(infos[0].Flags, []string{`\Deleted`}) {
		t.Fatalf("after FLAGS %+v", infos[0])
	}

	cr, err := a.Copy(ctx(t), inbox.ID, []schema.UID{1, 2, 77}, trash.ID)
	if err != nil || !slices.Equal(cr.Source, []schema.UID{1, 2}) || !slices.Equal(cr.Dest, []schema.UID{1, 2}) || cr.UIDValidity != trash.UIDValidity {
		t.Fatalf("copy %+v, %v", cr, err)
	}
	mr, err := a.Move(ctx(t), trash.ID, []schema.UID{2}, inbox.ID)
	if err != nil || !slices.Equal(mr.Dest, []schema.UID{3}) {
		t.Fatalf("move %+v, %v", mr, err)
	}
	// Flags travel with the copy.
	tsnap, _ := a.Snapshot(ctx(t), trash.ID)
	if len(tsnap.Messages) != 1 || !tsnap.Messages[0].HasFlag(`\Deleted`) {
		t.Fatalf("trash after move %+v", tsnap.Messages)
	}
	// Expunge with a stale modseq keeps the message.
	cur, _ := a.Snapshot(ctx(t), inbox.ID)
	exp, err := a.Expunge(ctx(t), inbox.ID, []schema.ExpungeTarget{{UID: cur.Messages[0].UID, ModSeq: cur.Messages[0].ModSeq + 1}})
	if err != nil || len(exp) != 0 {
		t.Fatalf("stale expunge %v %v", exp, err)
	}
	exp, err = a.Expunge(ctx(t), inbox.ID, []schema.ExpungeTarget{{UID: cur.Messages[0].UID, ModSeq: cur.Messages[0].ModSeq}})
	if err != nil || !slices.Equal(exp, []schema.UID{1}) {
		t.Fatalf("expunge %v %v", exp, err)
	}
	// Drain: copy/move/expunge events arrive in order, ending with the expunge.
	var last schema.Change
	for done := false; !done; {
		select {
		case last = <-changes:
		default:
			done = true
		}
	}
	if last.Kind != schema.ChangeExpunged || last.UID != 1 {
		t.Fatalf("last change %+v", last)
	}
	// The copy in Trash still reads: blobs are shared, not freed.
	if _, err := a.Body(ctx(t), tsnap.Messages[0].Blob); err != nil {
		t.Fatalf("copy lost its body: %v", err)
	}
}

func TestDeliver(t *testing.T) {
	env := newEnv(t)
	env.AddUser(t, "erin@example.test", pw)
	env.AddUser(t, "frank@example.test", pw)
	msg := []byte("From: someone@remote.test\r\nSubject: hi\r\n\r\nhello\r\n")
	err := env.Store.Deliver(ctx(t), schema.Delivery{From: "someone@remote.test",
		Recipients: []string{"erin@example.test", "Frank+news@example.test", "erin@EXAMPLE.test"}, Message: msg})
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"erin@example.test", "frank@example.test"} {
		a := env.Login(t, who, pw)
		snap, err := a.Snapshot(ctx(t), mailbox(t, a, "INBOX").ID)
		if err != nil || len(snap.Messages) != 1 {
			t.Fatalf("%s inbox: %d messages, %v", who, len(snap.Messages), err)
		}
		body, _ := a.Body(ctx(t), snap.Messages[0].Blob)
		if !bytes.Equal(body, msg) {
			t.Fatalf("%s got %q", who, body)
		}
	}
	err = env.Store.Deliver(ctx(t), schema.Delivery{Recipients: []string{"nobody@example.test"}, Message: msg})
	if !errors.Is(err, schema.ErrNoSuchUser) {
		t.Fatalf("unknown recipient: %v", err)
	}
}

func TestKeyModesAndNoPlaintextAtRest(t *testing.T) {
	env := newEnv(t)
	c := env.dir()
	canary := "CANARY-7f3a9c-" + schema.NewID().String()
	for i, mode := range []directory.KeyMode{directory.KeyModeShared, directory.KeyModeDomain, directory.KeyModeUser} {
		dom := fmt.Sprintf("mode%d.test", i)
		if err := c.AddDomain(ctx(t), dom, mode, ""); err != nil {
			t.Fatal(err)
		}
		addr := "user@" + dom
		if err := c.AddUser(ctx(t), addr, pw); err != nil {
			t.Fatal(err)
		}
		msg := "From: " + canary + "@remote.test\r\nSubject: " + canary + "\r\n\r\n" + canary + "\r\n"
		if err := env.Store.Deliver(ctx(t), schema.Delivery{Recipients: []string{addr}, Message: []byte(msg)}); err != nil {
			t.Fatal(err)
		}
		a := env.Login(t, addr, pw)
		if err := a.CreateMailbox(ctx(t), "Folder "+canary, ""); err != nil {
			t.Fatal(err)
		}
		inbox := mailbox(t, a, "INBOX")
		snap, _ := a.Snapshot(ctx(t), inbox.ID)
		if _, err := a.StoreFlags(ctx(t), inbox.ID, []schema.UID{snap.Messages[0].UID}, schema.FlagsAdd, []string{"$" + canary}); err != nil {
			t.Fatal(err)
		}
		body, _ := a.Body(ctx(t), snap.Messages[0].Blob)
		if string(body) != msg {
			t.Fatalf("mode %s: body %q", mode, body)
		}
	}
	if err := env.n.Cluster().Compact(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// Nothing under the data directory holds the canary (as written, or
	// lower-cased as search records keep words) or the users' addresses
	// or domain names.
	needles := [][]byte{[]byte(canary), []byte(strings.ToLower(canary)), []byte("mode0.test"), []byte("user@mode")}
	err := filepath.WalkDir(env.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("%s contains %q in the clear", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRestartAndWrongMasterKey(t *testing.T) {
	env := newEnv(t)
	env.AddUser(t, "gina@example.test", pw)
	if err := env.Store.Deliver(ctx(t), schema.Delivery{Recipients: []string{"gina@example.test"}, Message: []byte("Subject: persist\r\n\r\nx\r\n")}); err != nil {
		t.Fatal(err)
	}
	env.n.Stop()
	if err := env.n.Start(); err != nil {
		t.Fatal(err)
	}
	if n := len(env.n.Cluster().Shards()); n != 3 {
		t.Fatalf("%d shards after reopen, want meta + 2", n)
	}
	a := env.n.Login("gina@example.test", pw)
	mb, err := a.Mailbox(ctx(t), "INBOX")
	if err != nil || mb.Messages != 1 {
		t.Fatalf("after restart %+v %v", mb, err)
	}
	env.n.Stop()

	env.n.MasterKey = seal.NewKey(0).Secret
	if err := env.n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := env.n.Directory().Init(ctx(t)); err == nil {
		t.Fatal("the directory opened with the wrong master key")
	} else if !strings.Contains(err.Error(), "master key") {
		t.Fatalf("wrong master key error does not say so: %v", err)
	}
}

// TestDeliverJunk: mail judged spam goes to each recipient's Junk
// mailbox: the one with the \Junk special use, else a new "Junk", for
// one recipient and for recipients on several shards (the spool path).
// (Every user starts with a Junk mailbox; the test removes some.)
func TestDeliverJunk(t *testing.T) {
	env := newEnv(t)
	users := []string{"gus@example.test", "hal@example.test", "ivy@example.test"}
	for _, u := range users {
		env.AddUser(t, u, pw)
	}
	// gus has no Junk mailbox left (delivery makes one); ivy keeps spam
	// in "Spam"; hal has the default Junk.
	gus := env.Login(t, "gus@example.test", pw)
	if err := gus.DeleteMailbox(ctx(t), "Junk"); err != nil {
		t.Fatal(err)
	}
	ivy := env.Login(t, "ivy@example.test", pw)
	if err := ivy.DeleteMailbox(ctx(t), "Junk"); err != nil {
		t.Fatal(err)
	}
	if err := ivy.CreateMailbox(ctx(t), "Spam", schema.SpecialJunk); err != nil {
		t.Fatal(err)
	}
	shards := map[uint32]bool{}
	for _, u := range users {
		rec, err := env.dir().ResolveRecipient(ctx(t), u)
		if err != nil {
			t.Fatal(err)
		}
		shards[rec.Shard] = true
	}
	if len(shards) < 2 {
		t.Fatalf("every user on one shard: the spool path is not exercised")
	}
	msg := []byte("From: spammer@remote.test\r\nSubject: offer\r\n\r\nbuy\r\n")
	if err := env.Store.Deliver(ctx(t), schema.Delivery{From: "spammer@remote.test", Recipients: users, Message: msg, Junk: true}); err != nil {
		t.Fatal(err)
	}
	if err := env.Store.Deliver(ctx(t), schema.Delivery{Recipients: users[:1], Message: msg, Junk: true}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"gus@example.test": 2, "hal@example.test": 1, "ivy@example.test": 1}
	for _, u := range users {
		a := env.Login(t, u, pw)
		junk := "Junk"
		if u == "ivy@example.test" {
			junk = "Spam"
		}
		box := mailbox(t, a, junk)
		if box.SpecialUse != schema.SpecialJunk {
			t.Errorf("%s: %s has special use %q", u, junk, box.SpecialUse)
		}
		snap, err := a.Snapshot(ctx(t), box.ID)
		if err != nil || len(snap.Messages) != want[u] {
			t.Errorf("%s %s: %d messages (%v), want %d", u, junk, len(snap.Messages), err, want[u])
		}
		inbox, err := a.Snapshot(ctx(t), mailbox(t, a, "INBOX").ID)
		if err != nil || len(inbox.Messages) != 0 {
			t.Errorf("%s INBOX: %d messages (%v), want none", u, len(inbox.Messages), err)
		}
	}
}
