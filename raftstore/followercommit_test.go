package raftstore

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// followerFSM opens a state machine at path that believes it follows
// (or leads) its group.
func followerFSM(t testing.TB, path string, leads bool) *fsm {
	t.Helper()
	f, err := openFSM(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fn := func() bool { return leads }
	f.isLeader.Store(&fn)
	t.Cleanup(func() { f.close() })
	return f
}

// leaderFSM opens a state machine that leads its group, with
// groupOnLeader set or not.
func leaderFSM(t testing.TB, group bool) *fsm {
	t.Helper()
	f := followerFSM(t, filepath.Join(t.TempDir(), "state.db"), true)
	f.groupOnLeader = group
	return f
}

// entries encodes payloads as consecutive log entries from index first.
func entries(first uint64, ps ...schema.Payload) []*raft.Log {
	out := make([]*raft.Log, len(ps))
	for i, p := range ps {
		cmd := schema.Command{ReqID: schema.NewID(), Time: time.Now().UnixNano(), Payload: p}
		out[i] = &raft.Log{Index: first + uint64(i), Term: 1, Type: raft.LogCommand, Data: schema.EncodeCommand(cmd)}
	}
	return out
}

// committedIndex is the applied index a fresh reader of the state file
// sees: what is committed (a view would commit a pending group first).
func committedIndex(t *testing.T, f *fsm) uint64 {
	t.Helper()
	var idx uint64
	if err := f.db.View(func(tx *bbolt.Tx) error { idx = (&Reader{tx: tx}).AppliedIndex(); return nil }); err != nil {
		t.Fatal(err)
	}
	return idx
}

// messageCount reads the number of messages in a mailbox through a
// query's read, which sees a pending group without committing it.
func messageCount(t *testing.T, f *fsm, user, mbox schema.ID) int {
	t.Helper()
	var n int
	if err := f.read(func(r *Reader) error {
		ms, err := r.Messages(user, mbox)
		n = len(ms)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// awaitCommitted waits until the state file holds index, which a pending
// group reaches on its own within followerCommitDelay.
func awaitCommitted(t *testing.T, f *fsm, index uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for committedIndex(t, f) < index {
		if time.Now().After(deadline) {
			t.Fatalf("group never committed on its own: state file through %d, want %d", committedIndex(t, f), index)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newUser() (schema.ID, schema.ID, schema.Payload) {
	user, inbox := schema.NewID(), schema.NewID()
	return user, inbox, &schema.InitUser{User: user, Mailboxes: []schema.NewMailbox{
		{ID: inbox, NameKey: nameKey("INBOX"), Sealed: []byte("sealed-inbox"), Inbox: true}}}
}

func appendPayload(user, inbox schema.ID, body string) schema.Payload {
	return &schema.Append{User: user, Mailbox: inbox, Message: schema.NewID(), Blob: schema.NewID(),
		Size: uint64(len(body)), Sealed: []byte("attrs"), Chunks: [][]byte{[]byte(body)}}
}

func TestFollowerCommitsAppliedEntriesInGroups(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := followerFSM(t, path, false)
	user, inbox, init := newUser()

	for _, r := range f.ApplyBatch(entries(1, init, appendPayload(user, inbox, "one"))) {
		if res, ok := r.(*schema.Result); !ok || res.Code != schema.CodeOK {
			t.Fatalf("apply: %v", r)
		}
	}
	f.ApplyBatch(entries(3, appendPayload(user, inbox, "two")))
	if got := committedIndex(t, f); got != 0 {
		t.Fatalf("a follower committed through %d at once", got)
	}
	// Applied entries are out and readable before they are committed.
	if got := f.events.publishedIndex(); got != 3 {
		t.Fatalf("events out through %d, want 3", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.events.wait(ctx, 3, nil); err != nil {
		t.Fatalf("a waiter for an applied entry: %v", err)
	}
	if n := messageCount(t, f, user, inbox); n != 2 {
		t.Fatalf("a read of the pending group found %d messages, want 2", n)
	}
	if got := committedIndex(t, f); got != 0 {
		t.Fatalf("a read committed the group through %d", got)
	}

	// Unwaited for, a group commits within followerCommitDelay.
	awaitCommitted(t, f, 3)
	f.ApplyBatch(entries(4, appendPayload(user, inbox, "three")))
	f.ApplyBatch(entries(5, appendPayload(user, inbox, "four")))
	awaitCommitted(t, f, 5)
	if n := messageCount(t, f, user, inbox); n != 4 {
		t.Fatalf("after a commit: %d messages, want 4", n)
	}

	// A view (copies of the whole state) commits first.
	f.ApplyBatch(entries(6, appendPayload(user, inbox, "five")))
	if err := f.view(func(r *Reader) error {
		if got := r.AppliedIndex(); got != 6 {
			t.Errorf("a view saw applied index %d, want 6", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := committedIndex(t, f); got != 6 {
		t.Fatalf("after a view: committed through %d, want 6", got)
	}

	// A snapshot stands for the committed state file: it commits first.
	f.ApplyBatch(entries(7, appendPayload(user, inbox, "six")))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if got := committedIndex(t, f); got != 7 {
		t.Fatalf("snapshot taken over an uncommitted group: committed through %d, want 7", got)
	}

	// A clean stop commits too; a crash loses the group, which the log
	// (kept up to the last snapshot) brings back, applied once.
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	f = followerFSM(t, path, false)
	if got := committedIndex(t, f); got != 7 {
		t.Fatalf("after a clean stop: committed through %d, want 7", got)
	}
	f.ApplyBatch(entries(8, appendPayload(user, inbox, "seven")))
	f.wmu.Lock()
	f.discardLocked() // what a crash leaves: nothing of the group
	f.wmu.Unlock()
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	f = followerFSM(t, path, false)
	replay := append(entries(7, appendPayload(user, inbox, "six")), entries(8, appendPayload(user, inbox, "seven"))...)
	f.ApplyBatch(replay)
	n := messageCount(t, f, user, inbox)
	if n != 7 {
		t.Fatalf("%d messages after the replay, want 7", n)
	}
}

// TestLeaderCommitsEveryBatch: a leader without groupOnLeader (the meta
// shard's) commits each batch before it answers.
func TestLeaderCommitsEveryBatch(t *testing.T) {
	f := leaderFSM(t, false)
	_, _, init := newUser()
	f.ApplyBatch(entries(1, init))
	if got := committedIndex(t, f); got != 1 {
		t.Fatalf("leader committed through %d, want 1", got)
	}
	if got := f.events.publishedIndex(); got != 1 {
		t.Fatalf("leader's events out through %d, want 1", got)
	}
}

// TestLeaderGroupsCommits: a leader with groupOnLeader answers a batch
// before its state commit, and a read or a waiter sees
// every answered write at once, without committing the group.
func TestLeaderGroupsCommits(t *testing.T) {
	f := leaderFSM(t, true)
	user, inbox, init := newUser()
	for _, r := range f.ApplyBatch(entries(1, init, appendPayload(user, inbox, "one"))) {
		if res, ok := r.(*schema.Result); !ok || res.Code != schema.CodeOK {
			t.Fatalf("apply: %v", r)
		}
	}
	if got := committedIndex(t, f); got != 0 {
		t.Fatalf("a grouping leader committed through %d at once", got)
	}
	if n := messageCount(t, f, user, inbox); n != 1 {
		t.Fatalf("a read after the answer found %d messages, want 1", n)
	}
	if got := f.events.publishedIndex(); got != 2 {
		t.Fatalf("events out through %d, want 2", got)
	}
	if got := committedIndex(t, f); got != 0 {
		t.Fatalf("a read committed the group through %d", got)
	}
	awaitCommitted(t, f, 2)
}

// TestFailedCommitStopsApplying: once a commit lost applied entries, the
// replica applies nothing on top of the gap; a restart replays them.
func TestFailedCommitStopsApplying(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := followerFSM(t, path, false)
	user, inbox, init := newUser()
	f.ApplyBatch(entries(1, init, appendPayload(user, inbox, "one")))
	// The state file's commit fails (as on an I/O error): the write
	// transaction is gone under the group.
	f.wmu.Lock()
	if err := f.pend.tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	err := f.commitLocked()
	f.wmu.Unlock()
	if err == nil {
		t.Fatal("commit of a closed transaction succeeded")
	}
	for _, r := range f.ApplyBatch(entries(3, appendPayload(user, inbox, "two"))) {
		if _, failed := r.(error); !failed {
			t.Fatalf("applied after a lost group: %v", r)
		}
	}
	if got := committedIndex(t, f); got != 0 {
		t.Fatalf("committed through %d over the gap", got)
	}
	if err := f.read(func(*Reader) error { return nil }); err == nil {
		t.Fatal("a replica that lost applied entries served a read")
	}
	if err := f.close(); err == nil {
		t.Fatal("close of a broken state machine reported no failure")
	}
	f = followerFSM(t, path, false)
	f.ApplyBatch(entries(1, init, appendPayload(user, inbox, "one")))
	f.ApplyBatch(entries(3, appendPayload(user, inbox, "two")))
	if err := f.flush(); err != nil {
		t.Fatal(err)
	}
	if got := committedIndex(t, f); got != 3 {
		t.Fatalf("after the replay: committed through %d, want 3", got)
	}
}

// TestPendingUntilCommitted: a reader that finds no group pending reads
// the state file, so the flag stays set until the group's commit is
// done; a reader during the commit waits for it instead of reading the
// state without the group.
func TestPendingUntilCommitted(t *testing.T) {
	f := leaderFSM(t, true)
	user, inbox, init := newUser()
	f.ApplyBatch(entries(1, init, appendPayload(user, inbox, "one")))
	committing := false
	f.beforeCommit = func() {
		committing = true
		if !f.pending.Load() {
			t.Error("a commit in progress shows no pending group: a reader would miss it")
		}
	}
	if err := f.flush(); err != nil {
		t.Fatal(err)
	}
	if !committing {
		t.Fatal("the commit hook did not run")
	}
	if f.pending.Load() {
		t.Error("the pending flag is still set after the commit")
	}
	if n := messageCount(t, f, user, inbox); n != 1 {
		t.Fatalf("after the commit: %d messages, want 1", n)
	}
}

// TestChunksOutliveTheirLogEntry applies an Append whose chunks the
// decoder hands over as views of the log entry (schema.DecodeCommand),
// lets the group commit, then overwrites the entry: the state file holds
// its own copy of every chunk, small and large.
func TestChunksOutliveTheirLogEntry(t *testing.T) {
	f := followerFSM(t, filepath.Join(t.TempDir(), "state.db"), false)
	user, inbox, init := newUser()
	small, large := []byte("a small chunk"), bytes.Repeat([]byte("large chunk "), largeChunk)
	app := &schema.Append{User: user, Mailbox: inbox, Message: schema.NewID(), Blob: schema.NewID(),
		Size: uint64(len(small) + len(large)), Sealed: []byte("attrs"), Chunks: [][]byte{small, large}}
	logs := entries(1, init, app)
	for _, r := range f.ApplyBatch(logs) {
		if res, ok := r.(*schema.Result); !ok || res.Code != schema.CodeOK {
			t.Fatalf("apply: %v", r)
		}
	}
	awaitCommitted(t, f, 2)
	for _, l := range logs {
		for i := range l.Data {
			l.Data[i] = 0xff
		}
	}
	for i, want := range [][]byte{small, large} {
		var got []byte
		if err := f.read(func(r *Reader) error {
			c, err := r.Chunk(user, app.Blob, uint32(i))
			got = bytes.Clone(c)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("chunk %d changed with its log entry: %.20q", i, got)
		}
	}
}

// TestUndecodableEntriesAreCounted: an entry no decoder of this software
// reads (a newer form, see schema.Level) is skipped with a refusal, the
// entries after it apply, and the state file counts it, so a replica
// that may lack what it wrote shows in its status.
func TestUndecodableEntriesAreCounted(t *testing.T) {
	f := followerFSM(t, filepath.Join(t.TempDir(), "state.db"), true)
	user, inbox, init := newUser()
	f.ApplyBatch(entries(1, init))
	newer := entries(2, appendPayload(user, inbox, "newer"))[0]
	newer.Data = append(newer.Data, 0xff) // a field this software does not know
	batch := append([]*raft.Log{newer}, entries(3, appendPayload(user, inbox, "after"))...)
	results := f.ApplyBatch(batch)
	if res, ok := results[0].(*schema.Result); !ok || res.Code != schema.CodeInvalid {
		t.Fatalf("undecodable entry: %v", results[0])
	}
	if res, ok := results[1].(*schema.Result); !ok || res.Code != schema.CodeOK {
		t.Fatalf("entry after it: %v", results[1])
	}
	var skipped, applied uint64
	if err := f.view(func(r *Reader) error { skipped, applied = r.SkippedEntries(), r.AppliedIndex(); return nil }); err != nil {
		t.Fatal(err)
	}
	if skipped != 1 || applied != 3 {
		t.Fatalf("skipped %d, applied through %d; want 1 and 3", skipped, applied)
	}
}

// TestShardReadLeavesTheGroupPending: Shard.Read sees what a grouping
// replica applied and leaves its group to commit on its own, where
// Shard.View commits it first. The directory's lookups read this way; as
// views they committed a follower's meta group at every login and
// recipient check (3,211 such commits in a short cluster3 run).
func TestShardReadLeavesTheGroupPending(t *testing.T) {
	s := openShardConfig(t, Config{Dir: t.TempDir(), GroupLeaderCommits: true})
	f := newFixture(t, s)
	// An append whose group is caught before its timer fires, and the
	// timer stopped, so that only a read could commit the group now.
	held, want := false, 0
	for i := 0; i < 20 && !held; i++ {
		appendMsg(t, s, f, f.inbox, "grouped")
		want++
		s.fsm.wmu.Lock()
		if p := s.fsm.pend; p != nil && p.timer != nil && p.timer.Stop() {
			held = true
		}
		s.fsm.wmu.Unlock()
	}
	if !held {
		t.Fatal("every group committed before its timer could be stopped")
	}
	before := committedIndex(t, s.fsm)

	var n int
	if err := s.Read(func(r *Reader) error {
		ms, err := r.Messages(f.user, f.inbox)
		n = len(ms)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n != want || committedIndex(t, s.fsm) >= s.raft.AppliedIndex() {
		t.Fatalf("Read found %d messages, want the %d applied, of which the state file does not hold the last", n, want)
	}
	if got := committedIndex(t, s.fsm); got != before {
		t.Fatalf("Read committed the pending group: state file through %d, was %d", got, before)
	}
	if !s.fsm.pending.Load() {
		t.Fatal("no group pending after the append: the test shows nothing")
	}
	if got := len(messages(t, s, f.user, f.inbox)); got != want {
		t.Fatalf("View found %d messages, want %d", got, want)
	}
	if got := committedIndex(t, s.fsm); got <= before {
		t.Fatalf("View left the group pending: state file through %d", got)
	}
}
