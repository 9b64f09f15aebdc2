package raftstore

import (
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
func followerFSM(t *testing.T, path string, leads bool) *fsm {
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

// groupingLeaderFSM opens a state machine that leads its group with
// groupOnLeader set, as its only voter or not.
func groupingLeaderFSM(t *testing.T, alone bool) *fsm {
	t.Helper()
	f := followerFSM(t, filepath.Join(t.TempDir(), "state.db"), true)
	f.groupOnLeader = true
	sole := func() bool { return alone }
	f.soleVoter.Store(&sole)
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

// messageCount reads the number of messages in a mailbox through a view
// (which commits a pending group first).
func messageCount(t *testing.T, f *fsm, user, mbox schema.ID) int {
	t.Helper()
	var n int
	if err := f.view(func(r *Reader) error {
		ms, err := r.Messages(user, mbox)
		n = len(ms)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
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
	if got := f.events.publishedIndex(); got != 0 {
		t.Fatalf("events of uncommitted entries handed out through %d", got)
	}

	// A waiter gets the group committed now, both batches in it.
	f.awaiting(2)
	if got := committedIndex(t, f); got != 3 {
		t.Fatalf("after a waiter: committed through %d, want 3", got)
	}
	if got := f.events.publishedIndex(); got != 3 {
		t.Fatalf("after a waiter: events out through %d, want 3", got)
	}

	// A waiter for an index not applied yet: the batch that brings it
	// commits at once.
	f.awaiting(4)
	f.ApplyBatch(entries(4, appendPayload(user, inbox, "three")))
	if got := committedIndex(t, f); got != 4 {
		t.Fatalf("a batch that a waiter waited for: committed through %d, want 4", got)
	}

	// Unwaited for, a group commits within followerCommitDelay.
	f.ApplyBatch(entries(5, appendPayload(user, inbox, "four")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.events.wait(ctx, 5, nil); err != nil {
		t.Fatalf("group never committed on its own: %v", err)
	}
	if got := committedIndex(t, f); got != 5 {
		t.Fatalf("committed through %d, want 5", got)
	}

	// A snapshot stands for the committed state file: it commits first.
	f.ApplyBatch(entries(6, appendPayload(user, inbox, "five")))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if got := committedIndex(t, f); got != 6 {
		t.Fatalf("snapshot taken over an uncommitted group: committed through %d, want 6", got)
	}

	// A clean stop commits too; a crash loses the group, which the log
	// (kept up to the last snapshot) brings back, applied once.
	f.ApplyBatch(entries(7, appendPayload(user, inbox, "six")))
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
	f.awaiting(8)
	n := messageCount(t, f, user, inbox)
	if n != 7 {
		t.Fatalf("%d messages after the replay, want 7", n)
	}
}

// TestLeaderCommitsEveryBatch: a leader with followers commits each
// batch before it answers, even with groupOnLeader set.
func TestLeaderCommitsEveryBatch(t *testing.T) {
	f := groupingLeaderFSM(t, false)
	_, _, init := newUser()
	f.ApplyBatch(entries(1, init))
	if got := committedIndex(t, f); got != 1 {
		t.Fatalf("leader committed through %d, want 1", got)
	}
	if got := f.events.publishedIndex(); got != 1 {
		t.Fatalf("leader's events out through %d, want 1", got)
	}
}

// TestLeaderGroupsCommitsWhenAsked: a sole voter leading with
// groupOnLeader answers a batch before its state commit, and any read
// commits the group first, so it sees every answered write.
func TestLeaderGroupsCommitsWhenAsked(t *testing.T) {
	f := groupingLeaderFSM(t, true)
	user, inbox, init := newUser()
	for _, r := range f.ApplyBatch(entries(1, init, appendPayload(user, inbox, "one"))) {
		if res, ok := r.(*schema.Result); !ok || res.Code != schema.CodeOK {
			t.Fatalf("apply: %v", r)
		}
	}
	if got := committedIndex(t, f); got != 0 {
		t.Fatalf("a grouping leader committed through %d at once", got)
	}
	n := messageCount(t, f, user, inbox)
	if n != 1 {
		t.Fatalf("a read after the answer found %d messages, want 1", n)
	}
	if got := committedIndex(t, f); got != 2 {
		t.Fatalf("after a read: committed through %d, want 2", got)
	}
	if got := f.events.publishedIndex(); got != 2 {
		t.Fatalf("after a read: events out through %d, want 2", got)
	}
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
