package raftstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestAppendAllocatesUIDsAndCounts(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	u1, _ := appendMsg(t, s, f, f.inbox, "first")
	u2, _ := appendMsg(t, s, f, schema.ID{}, "second, to the inbox by default")
	if u1 != 1 || u2 != 2 {
		t.Fatalf("uids %d %d, want 1 2", u1, u2)
	}
	mb := mailbox(t, s, f.user, f.inbox)
	if mb.Messages != 2 || mb.UIDNext != 3 || mb.Size != uint64(len("first")+len("second, to the inbox by default")) {
		t.Fatalf("mailbox counters %+v", mb)
	}
	if mb.UIDValidity == 0 {
		t.Fatal("no UIDVALIDITY")
	}
}

func TestMailboxLifecycle(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	work := schema.NewID()
	r := apply(t, s, &schema.CreateMailbox{User: f.user, Mailbox: schema.NewMailbox{ID: work, NameKey: nameKey("Work"), Sealed: []byte("w")}})
	if r.UIDValidity == 0 {
		t.Fatal("create returned no UIDVALIDITY")
	}
	if _, err := applyErr(s, schema.NewID(), &schema.CreateMailbox{User: f.user, Mailbox: schema.NewMailbox{ID: schema.NewID(), NameKey: nameKey("Work")}}); !errors.Is(err, schema.ErrMailboxExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	// Swap two names in one rename: allowed because both are renamed.
	apply(t, s, &schema.RenameMailbox{User: f.user, Renames: []schema.MailboxRename{
		{Mailbox: work, NameKey: nameKey("Archive"), Sealed: []byte("w2")},
		{Mailbox: f.other, NameKey: nameKey("Work"), Sealed: []byte("a2")},
	}})
	var got schema.MailboxRecord
	if err := s.View(func(r *Reader) (err error) { got, err = r.MailboxByName(f.user, nameKey("Archive")); return }); err != nil || got.ID != work {
		t.Fatalf("after swap Archive -> %v, %v", got.ID, err)
	}
	if _, err := applyErr(s, schema.NewID(), &schema.RenameMailbox{User: f.user, Renames: []schema.MailboxRename{{Mailbox: work, NameKey: nameKey("INBOX")}}}); !errors.Is(err, schema.ErrMailboxExists) {
		t.Fatalf("rename onto INBOX: %v", err)
	}
	if _, err := applyErr(s, schema.NewID(), &schema.DeleteMailbox{User: f.user, Mailbox: f.inbox}); !errors.Is(err, schema.ErrCannotDelete) {
		t.Fatalf("delete inbox: %v", err)
	}
	_, blob := appendMsg(t, s, f, work, "in work")
	apply(t, s, &schema.DeleteMailbox{User: f.user, Mailbox: work})
	err := s.View(func(r *Reader) error {
		if _, err := r.Mailbox(f.user, work); !errors.Is(err, schema.ErrNoSuchMailbox) {
			t.Errorf("deleted mailbox still there: %v", err)
		}
		if _, err := r.Blob(f.user, blob); !errors.Is(err, schema.ErrNoSuchMessage) {
			t.Errorf("blob of deleted mailbox kept: %v", err)
		}
		if _, err := r.Chunk(f.user, blob, 0); !errors.Is(err, schema.ErrNoSuchMessage) {
			t.Errorf("chunk of deleted mailbox kept: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCopyMoveExpungeShareBlobs(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	uid, blob := appendMsg(t, s, f, f.inbox, "shared body")
	cr := apply(t, s, &schema.Copy{User: f.user, Source: f.inbox, Dest: f.other,
		Items: []schema.CopyItem{{UID: uid, Message: schema.NewID(), Sealed: []byte("a")}, {UID: 99, Message: schema.NewID()}}})
	if cr.UIDs[0] != 1 || cr.UIDs[1] != 0 {
		t.Fatalf("copy uids %v, want [1 0]", cr.UIDs)
	}
	if cr.UIDValidity != mailbox(t, s, f.user, f.other).UIDValidity {
		t.Fatal("copy reported the wrong UIDVALIDITY")
	}
	refs := func() uint32 {
		var b schema.BlobRecord
		if err := s.View(func(r *Reader) (err error) { b, err = r.Blob(f.user, blob); return }); err != nil {
			return 0
		}
		return b.Refs
	}
	if refs() != 2 {
		t.Fatalf("refs after copy %d, want 2", refs())
	}
	// Move the copy back into the inbox: refs stay, archive empties.
	mr := apply(t, s, &schema.Copy{User: f.user, Source: f.other, Dest: f.inbox, Move: true,
		Items: []schema.CopyItem{{UID: 1, Message: schema.NewID()}}})
	if mr.UIDs[0] != 2 || refs() != 2 || len(messages(t, s, f.user, f.other)) != 0 {
		t.Fatalf("move: uids %v refs %d", mr.UIDs, refs())
	}
	// Expunge with a stale modseq leaves the message alone.
	ms := messages(t, s, f.user, f.inbox)
	er := apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: []schema.ExpungeTarget{{UID: ms[0].UID, ModSeq: ms[0].ModSeq + 100}}})
	if len(er.UIDs) != 0 {
		t.Fatalf("expunged despite modseq mismatch: %v", er.UIDs)
	}
	er = apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: []schema.ExpungeTarget{{UID: ms[0].UID, ModSeq: ms[0].ModSeq}, {UID: ms[1].UID}}})
	if !slices.Equal(er.UIDs, []schema.UID{1, 2}) {
		t.Fatalf("expunged %v", er.UIDs)
	}
	if refs() != 0 {
		t.Fatal("blob survived the expunge of its last message")
	}
	if mb := mailbox(t, s, f.user, f.inbox); mb.Messages != 0 || mb.Size != 0 || mb.UIDNext != 3 {
		t.Fatalf("inbox counters after expunge %+v", mb)
	}
}

func TestSetAttrsConditional(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	uid, _ := appendMsg(t, s, f, f.inbox, "x")
	m := messages(t, s, f.user, f.inbox)[0]
	r := apply(t, s, &schema.SetAttrs{User: f.user, Mailbox: f.inbox, Updates: []schema.AttrUpdate{
		{UID: uid, ExpectModSeq: m.ModSeq, Sealed: []byte("seen")},
		{UID: 42, Sealed: []byte("missing")},
	}})
	if r.ModSeqs[0] <= m.ModSeq || r.ModSeqs[1] != 0 {
		t.Fatalf("modseqs %v", r.ModSeqs)
	}
	// The same expectation again is now stale.
	r = apply(t, s, &schema.SetAttrs{User: f.user, Mailbox: f.inbox, Updates: []schema.AttrUpdate{{UID: uid, ExpectModSeq: m.ModSeq, Sealed: []byte("lost")}}})
	if r.ModSeqs[0] != 0 {
		t.Fatal("stale update applied")
	}
	if got := messages(t, s, f.user, f.inbox)[0].Sealed; string(got) != "seen" {
		t.Fatalf("attrs %q", got)
	}
}

func TestRequestIDAppliedOnce(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	req := schema.NewID()
	p := &schema.Append{User: f.user, Message: schema.NewID(), Blob: schema.NewID(), Size: 1, Chunks: [][]byte{{'x'}}}
	r1, err := applyErr(s, req, p)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := applyErr(s, req, p)
	if err != nil {
		t.Fatal(err)
	}
	if r1.UIDs[0] != r2.UIDs[0] || len(messages(t, s, f.user, f.inbox)) != 1 {
		t.Fatalf("retry applied twice: %v %v", r1.UIDs, r2.UIDs)
	}
}

func TestStagedChunksAndExpiry(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	blob := schema.NewID()
	apply(t, s, &schema.StageChunk{User: f.user, Blob: blob, Index: 0, Sealed: []byte("head")})
	// A large one: a bucket of its own while staged and once committed.
	part1 := strings.Repeat("part1", 2*largeChunk/5)
	apply(t, s, &schema.StageChunk{User: f.user, Blob: blob, Index: 1, Sealed: []byte(part1)})
	r := apply(t, s, &schema.Append{User: f.user, Message: schema.NewID(), Blob: blob, Size: 14, StagedChunks: 2, Chunks: [][]byte{[]byte("tail")}})
	if r.UIDs[0] != 1 {
		t.Fatal(r.UIDs)
	}
	var chunks []string
	_ = s.View(func(rd *Reader) error {
		for i := uint32(0); i < 3; i++ {
			c, err := rd.Chunk(f.user, blob, i)
			if err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, string(c))
		}
		if rd.Stats().StagedChunks != 0 {
			t.Error("staged chunks left after append")
		}
		return nil
	})
	if !slices.Equal(chunks, []string{"head", part1, "tail"}) {
		t.Fatalf("chunks of %v bytes", []int{len(chunks[0]), len(chunks[1]), len(chunks[2])})
	}
	// Staged chunks that are never committed expire, small or large.
	apply(t, s, &schema.StageChunk{User: f.user, Blob: schema.NewID(), Index: 0, Sealed: []byte("orphan")})
	apply(t, s, &schema.StageChunk{User: f.user, Blob: schema.NewID(), Index: 0, Sealed: []byte(part1)})
	_ = s.View(func(rd *Reader) error {
		if n := rd.Stats().StagedChunks; n != 2 {
			t.Errorf("%d staged chunks, want 2", n)
		}
		return nil
	})
	apply(t, s, &schema.ExpireStaged{Before: time.Now().Add(-time.Hour).UnixNano()})
	_ = s.View(func(rd *Reader) error {
		if n := rd.Stats().StagedChunks; n != 2 {
			t.Errorf("%d staged chunks left by an expiry before they were staged, want 2", n)
		}
		return nil
	})
	apply(t, s, &schema.ExpireStaged{Before: time.Now().Add(time.Hour).UnixNano()})
	_ = s.View(func(rd *Reader) error {
		if n := rd.Stats().StagedChunks; n != 0 {
			t.Errorf("%d staged chunks after expiry", n)
		}
		return nil
	})
	// Committing with a missing staged chunk fails cleanly.
	if _, err := applyErr(s, schema.NewID(), &schema.Append{User: f.user, Message: schema.NewID(), Blob: schema.NewID(), StagedChunks: 1, Chunks: [][]byte{{1}}}); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("append over missing staged chunk: %v", err)
	}
}

func TestEventsArriveBeforeApplyReturns(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	ch := make(chan Event, 16)
	cancel := s.Subscribe(f.user, s.PublishedIndex(), func(evs []Event) {
		for _, e := range evs {
			ch <- e
		}
	})
	defer cancel()
	uid, _ := appendMsg(t, s, f, f.inbox, "hello")
	select {
	case e := <-ch:
		if e.Kind != schema.ChangeAdded || e.UID != uid || e.Mailbox != f.inbox || e.Message == nil {
			t.Fatalf("event %+v", e)
		}
	default:
		t.Fatal("event not queued when Apply returned")
	}
	// Other users' events are not delivered.
	other := newFixture(t, s)
	appendMsg(t, s, other, other.inbox, "not yours")
	select {
	case e := <-ch:
		t.Fatalf("got another user's event %+v", e)
	default:
	}
}

// A watcher that subscribes from an earlier index (a stream that broke
// and reconnects) gets the events it missed, in order, and a resync when
// they are older than the replica remembers.
func TestSubscribeReplaysFromAnIndex(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	from := s.PublishedIndex()
	var want []schema.UID
	for i := 0; i < 3; i++ {
		uid, _ := appendMsg(t, s, f, f.inbox, "missed")
		want = append(want, uid)
	}
	var got []schema.UID
	cancel := s.Subscribe(f.user, from, func(evs []Event) {
		for _, e := range evs {
			if e.Kind == schema.ChangeAdded {
				got = append(got, e.UID)
			}
		}
	})
	uid, _ := appendMsg(t, s, f, f.inbox, "live")
	want = append(want, uid)
	cancel()
	if !slices.Equal(got, want) {
		t.Fatalf("replayed and live UIDs %v, want %v", got, want)
	}
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := s.WaitApplied(ctx, s.PublishedIndex()); err != nil {
		t.Fatal(err)
	}

	// Beyond the history: a resync, never a silent gap.
	s.fsm.events.mu.Lock()
	s.fsm.events.floor = s.fsm.events.published
	s.fsm.events.ring = nil
	s.fsm.events.mu.Unlock()
	var kinds []schema.ChangeKind
	cancel = s.Subscribe(f.user, from, func(evs []Event) {
		for _, e := range evs {
			kinds = append(kinds, e.Kind)
		}
	})
	cancel()
	if !slices.Equal(kinds, []schema.ChangeKind{schema.ChangeResync}) {
		t.Fatalf("subscribing before the history got %v, want one resync", kinds)
	}
}

func TestRestartKeepsStateAndSkipsReplay(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	for i := 0; i < 5; i++ {
		appendMsg(t, s, f, f.inbox, "durable")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openShard(t, dir)
	// Raft replays the committed log into the FSM on start; the stored
	// applied index must make that a no-op.
	if got := uids(messages(t, s2, f.user, f.inbox)); !slices.Equal(got, []schema.UID{1, 2, 3, 4, 5}) {
		t.Fatalf("after restart uids %v", got)
	}
	uid, _ := appendMsg(t, s2, f, f.inbox, "after restart")
	if uid != 6 {
		t.Fatalf("next uid %d, want 6", uid)
	}
}

// memSink collects a snapshot in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Close() error  { return nil }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	for i := 0; i < 3; i++ {
		appendMsg(t, s, f, f.inbox, "snap me")
	}
	snap, err := s.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	// Writes after the snapshot are not in it.
	appendMsg(t, s, f, f.inbox, "later")

	dir := t.TempDir()
	f2, err := openFSM(filepath.Join(dir, "state.db"), s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.close()
	resynced := make(chan struct{}, 1)
	f2.events.subscribe(f.user, f2.events.publishedIndex(), func(evs []Event) {
		if evs[0].Kind == schema.ChangeResync {
			resynced <- struct{}{}
		}
	})
	if err := f2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-resynced:
	default:
		t.Fatal("restore did not tell subscribers to resync")
	}
	err = f2.view(func(r *Reader) error {
		ms, err := r.Messages(f.user, f.inbox)
		if err != nil {
			return err
		}
		if !slices.Equal(uids(ms), []schema.UID{1, 2, 3}) {
			t.Errorf("restored uids %v", uids(ms))
		}
		// The quota usage travels with the state.
		if b, n, err := r.Usage(f.user); err != nil || b != uint64(3*len("snap me")) || n != 3 {
			t.Errorf("restored usage %d bytes, %d messages, %v", b, n, err)
		}
		if r.AppliedIndex() == 0 {
			t.Error("restored state has no applied index")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A corrupt snapshot is refused and the live state is untouched.
	bad := bytes.Clone(sink.Bytes())
	for i := 4096; i < len(bad) && i < 4096*3; i++ {
		bad[i] ^= 0x5a
	}
	if err := f2.Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
		t.Fatal("corrupt snapshot restored")
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db.restore")); !os.IsNotExist(err) {
		t.Fatalf("temporary restore file left behind: %v", err)
	}
	if err := f2.view(func(r *Reader) error { _, err := r.Messages(f.user, f.inbox); return err }); err != nil {
		t.Fatalf("state unusable after refused restore: %v", err)
	}
}

func TestMetaRecords(t *testing.T) {
	s := openShard(t, t.TempDir())
	dom := schema.DomainRecord{ID: schema.NewID(), NameKey: nameKey("example.test"), Sealed: []byte("d")}
	apply(t, s, &schema.PutDomain{Record: dom})
	if _, err := applyErr(s, schema.NewID(), &schema.PutDomain{Record: schema.DomainRecord{ID: schema.NewID(), NameKey: dom.NameKey}}); !errors.Is(err, schema.ErrDomainExists) {
		t.Fatalf("duplicate domain: %v", err)
	}
	u := schema.UserRecord{ID: schema.NewID(), NameKey: nameKey("alice"), Domain: dom.ID, Shard: 3, Sealed: []byte("u"), WrappedKey: []byte("k")}
	if _, err := applyErr(s, schema.NewID(), &schema.PutUser{Record: schema.UserRecord{ID: schema.NewID(), NameKey: nameKey("x"), Domain: schema.NewID()}, Create: true}); !errors.Is(err, schema.ErrNoSuchDomain) {
		t.Fatalf("user in unknown domain: %v", err)
	}
	apply(t, s, &schema.PutUser{Record: u, Create: true})
	if _, err := applyErr(s, schema.NewID(), &schema.PutUser{Record: u, Create: true}); !errors.Is(err, schema.ErrUserExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	if _, err := applyErr(s, schema.NewID(), &schema.DeleteDomain{Domain: dom.ID}); !errors.Is(err, schema.ErrCannotDelete) {
		t.Fatalf("delete domain with users: %v", err)
	}
	u.Sealed = []byte("new password")
	apply(t, s, &schema.PutUser{Record: u})
	var got schema.UserRecord
	_ = s.View(func(r *Reader) (err error) { got, err = r.UserByName(u.NameKey); return })
	if string(got.Sealed) != "new password" || got.Shard != 3 {
		t.Fatalf("user record %+v", got)
	}
	apply(t, s, &schema.DeleteUser{User: u.ID})
	apply(t, s, &schema.DeleteDomain{Domain: dom.ID})
	_ = s.View(func(r *Reader) error {
		if _, err := r.UserByName(u.NameKey); !errors.Is(err, schema.ErrNoSuchUser) {
			t.Errorf("user after delete: %v", err)
		}
		if ds, _ := r.Domains(); len(ds) != 0 {
			t.Errorf("domains after delete: %d", len(ds))
		}
		return nil
	})
	apply(t, s, &schema.PutSetting{Key: "backup.pubkey", Value: []byte("age1...")})
	_ = s.View(func(r *Reader) error {
		if string(r.Setting("backup.pubkey")) != "age1..." {
			t.Error("setting not stored")
		}
		return nil
	})
}

func TestDeleteUserData(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	appendMsg(t, s, f, f.inbox, "bye")
	apply(t, s, &schema.StageChunk{User: f.user, Blob: schema.NewID(), Sealed: []byte("x")})
	apply(t, s, &schema.StageChunk{User: f.user, Blob: schema.NewID(), Sealed: bytes.Repeat([]byte("x"), largeChunk)})
	apply(t, s, &schema.DeleteUserData{User: f.user})
	_ = s.View(func(r *Reader) error {
		if r.HasUser(f.user) || r.Stats().StagedChunks != 0 {
			t.Error("user data left behind")
		}
		return nil
	})
	// Init again after deletion works (re-created account).
	newFixture(t, s)
}
