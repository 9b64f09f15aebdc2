package raftstore

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"go.etcd.io/bbolt"
)

var quietLog = hclog.NewNullLogger()

// legacyReplica writes entries first..last (sizes as sizes gives them)
// into dir/raft.db's log, as replicas kept it before the log had files of
// its own, and returns the store still open.
func legacyReplica(t *testing.T, dir string, first, last uint64) *logStore {
	t.Helper()
	s, err := openLogStore(filepath.Join(dir, "raft.db"), &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for i := first; i <= last; i++ {
		if err := s.StoreLog(testEntry(i, sizes(i))); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// storeWAL appends entries first..last to the log under dir/wal, made
// with size, as an interrupted move (or a foreign log) would have left it.
func storeWAL(t *testing.T, dir string, first, last uint64, size func(uint64) int) {
	t.Helper()
	path := filepath.Join(dir, walDir)
	if err := os.MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
	w, err := wal.Open(path, wal.WithLogger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i <= last; i++ {
		if err := w.StoreLog(testEntry(i, size(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRaftLogMovesLegacyEntries(t *testing.T) {
	dir := t.TempDir()
	legacy := legacyReplica(t, dir, 5, 150)
	if err := legacy.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	w, err := openRaftLog(dir, legacy, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, w, 5, 150, sizes)
	checkEntries(t, legacy, 0, 0, sizes)
	if v, err := legacy.GetUint64([]byte("CurrentTerm")); err != nil || v != 3 {
		t.Fatalf("stable store after the move: %d, %v", v, err)
	}
	// The moved log goes on as Raft uses it: appends, a conflicting
	// suffix replaced, the head truncated after a snapshot.
	for i := uint64(151); i <= 160; i++ {
		if err := w.StoreLog(testEntry(i, sizes(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.DeleteRange(156, 160); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(5, 100); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, w, 101, 155, sizes)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = openRaftLog(dir, legacy, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	checkEntries(t, w, 101, 155, sizes)
}

func TestRaftLogFinishesInterruptedMove(t *testing.T) {
	for _, moved := range []uint64{1, 17, 40} {
		dir := t.TempDir()
		legacy := legacyReplica(t, dir, 1, 40)
		storeWAL(t, dir, 1, moved, sizes)
		w, err := openRaftLog(dir, legacy, quietLog)
		if err != nil {
			t.Fatalf("%d of 40 moved: %v", moved, err)
		}
		checkEntries(t, w, 1, 40, sizes)
		checkEntries(t, legacy, 0, 0, sizes)
		w.Close()
	}
}

func TestRaftLogRefusesUnrelatedLogs(t *testing.T) {
	other := func(i uint64) int { return sizes(i) + 1 }
	for name, c := range map[string]struct {
		first, last uint64
		size        func(uint64) int
	}{
		"later start":   {3, 10, sizes},
		"longer":        {1, 41, sizes},
		"other entries": {1, 10, other},
	} {
		dir := t.TempDir()
		legacy := legacyReplica(t, dir, 1, 40)
		storeWAL(t, dir, c.first, c.last, c.size)
		w, err := openRaftLog(dir, legacy, quietLog)
		if err == nil {
			w.Close()
			t.Errorf("%s: opened a log that no move explains", name)
			continue
		}
		if !strings.Contains(err.Error(), "not a move in progress") {
			t.Errorf("%s: %v", name, err)
		}
		// Nothing was dropped from raft.db.
		checkEntries(t, legacy, 1, 40, sizes)
	}
}

// TestRaftLogReopensAfterTruncations reopens a log after each kind of
// truncation Raft makes, across segment files (raft-wal before v0.4.1
// failed to reopen a log whose tail was truncated in a sealed segment).
func TestRaftLogReopensAfterTruncations(t *testing.T) {
	dir := t.TempDir()
	legacy := legacyReplica(t, dir, 1, 0) // none
	open := func() *wal.WAL {
		t.Helper()
		w, err := openRaftLog(dir, legacy, quietLog)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := open()
	// About 1.3 segments of entries of ~20 KiB.
	last := uint64(logSegmentSize/(20<<10)) * 4 / 3
	for i := uint64(1); i <= last; i++ {
		if err := w.StoreLog(testEntry(i, sizes(i))); err != nil {
			t.Fatal(err)
		}
	}
	// A follower drops a conflicting suffix reaching into the first,
	// sealed segment.
	cut := last / 2
	if err := w.DeleteRange(cut+1, last); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w = open()
	checkEntries(t, w, 1, cut, sizes)
	for i := cut + 1; i <= last+10; i++ {
		if err := w.StoreLog(testEntry(i, sizes(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.DeleteRange(1, last-5); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w = open()
	defer w.Close()
	checkEntries(t, w, last-4, last+10, sizes)
}

// TestShardOpensLegacyReplica turns a replica's log back into the legacy
// form, with a state file from before its last entries, and opens it: the
// moved entries are applied and the shard goes on.
func TestShardOpensLegacyReplica(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	appendMsg(t, s, f, f.inbox, "first")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	early := filepath.Join(t.TempDir(), "state.db")
	copyFile(t, filepath.Join(dir, "state.db"), early)

	s = openShard(t, dir)
	appendMsg(t, s, f, f.inbox, "second")
	appendMsg(t, s, f, f.inbox, "third")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Back to the legacy layout: entries in raft.db, no wal/.
	w, err := wal.Open(filepath.Join(dir, walDir), wal.WithLogger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := w.FirstIndex()
	last, _ := w.LastIndex()
	var entries []*raft.Log
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := w.GetLog(i, l); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, l)
	}
	w.Close()
	if err := os.RemoveAll(filepath.Join(dir, walDir)); err != nil {
		t.Fatal(err)
	}
	legacy, err := openLogStore(filepath.Join(dir, "raft.db"), &bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := legacy.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	legacy.Close()
	copyFile(t, early, filepath.Join(dir, "state.db"))

	s = openShard(t, dir)
	if got := len(messages(t, s, f.user, f.inbox)); got != 3 {
		t.Fatalf("%d messages after opening the legacy replica, want 3 (entries %d-%d)", got, first, last)
	}
	appendMsg(t, s, f, f.inbox, "fourth")
	if got := len(messages(t, s, f.user, f.inbox)); got != 4 {
		t.Fatalf("%d messages after one more append, want 4", got)
	}
	if got, _ := s.stable.LastIndex(); got != 0 {
		t.Fatalf("raft.db still holds entries up to %d", got)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRaftStateNeedsTheLog: a replica counts as holding its Raft state
// only with its term and vote and its log, in wal/ or, from before wal/,
// in raft.db. Without its log it would vote as if it had acknowledged
// nothing, so the node must treat it as a new member.
func TestRaftStateNeedsTheLog(t *testing.T) {
	data := t.TempDir()
	dir := ReplicaDir(data, 3)
	if HasRaftState(data, 3) {
		t.Fatal("a missing replica has Raft state")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := openShard(t, dir)
	f := newFixture(t, s)
	appendMsg(t, s, f, f.inbox, "first")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !HasRaftState(data, 3) {
		t.Fatal("a whole replica has no Raft state")
	}
	if err := os.RemoveAll(filepath.Join(dir, walDir)); err != nil {
		t.Fatal(err)
	}
	if HasRaftState(data, 3) {
		t.Fatal("a replica whose wal/ was deleted has Raft state")
	}

	// From before wal/: the log in raft.db.
	legacyData := t.TempDir()
	legacyDir := ReplicaDir(legacyData, 1)
	if err := os.MkdirAll(legacyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := legacyReplica(t, legacyDir, 1, 20).Close(); err != nil {
		t.Fatal(err)
	}
	if !HasRaftState(legacyData, 1) {
		t.Fatal("a replica with its log in raft.db has no Raft state")
	}
	cleared, err := openLogStore(filepath.Join(legacyDir, "raft.db"), &bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cleared.clearLog(); err != nil {
		t.Fatal(err)
	}
	cleared.Close()
	if HasRaftState(legacyData, 1) {
		t.Fatal("a raft.db without log entries and no wal/ has Raft state")
	}
}
