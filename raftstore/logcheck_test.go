package raftstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"github.com/mailcluster/mailcluster/raftstore/logdamage"
)

// damageEntry flips a byte of entry idx's data in the log under dir/wal.
func damageEntry(t *testing.T, dir string, idx uint64) {
	t.Helper()
	if err := logdamage.Entry(filepath.Join(dir, walDir), idx); err != nil {
		t.Fatal(err)
	}
}

func openChecked(t *testing.T, dir string) *checkedLog {
	t.Helper()
	w, err := wal.Open(filepath.Join(dir, walDir), wal.WithLogger(quietLog))
	if err != nil {
		t.Fatal(err)
	}
	return &checkedLog{WAL: w, log: slog.New(slog.DiscardHandler)}
}

// TestCheckedLogFindsDamage: entries come back as stored, without their
// checksum; one damaged on disk reads as missing to raft and as damaged
// to the check made at open, which finds nothing wrong after it. Entries
// stored before the check read as they are.
func TestCheckedLogFindsDamage(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, walDir), 0o700); err != nil {
		t.Fatal(err)
	}
	entry := func(i uint64) *raft.Log {
		data := make([]byte, 100+int(i)*997)
		rng := rand.New(rand.NewPCG(i, 7))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		return &raft.Log{Index: i, Term: 3, Type: raft.LogCommand, Data: data}
	}
	check := func(c *checkedLog, i uint64) {
		t.Helper()
		var l raft.Log
		want := entry(i)
		if err := c.GetLog(i, &l); err != nil || l.Index != i || l.Term != want.Term || l.Type != want.Type || !bytes.Equal(l.Data, want.Data) {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	c := openChecked(t, dir)
	var batch []*raft.Log
	for i := uint64(1); i <= 20; i++ {
		batch = append(batch, entry(i))
	}
	batch[4].Extensions = []byte("raft's own")
	if err := c.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if string(batch[4].Extensions) != "raft's own" || batch[5].Extensions != nil {
		t.Fatal("storing changed the entries passed in")
	}
	// Stored before the check: no checksum.
	if err := c.WAL.StoreLogs([]*raft.Log{entry(21), entry(22)}); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 22; i++ {
		check(c, i)
	}
	var l raft.Log
	if err := c.GetLog(5, &l); err != nil || string(l.Extensions) != "raft's own" {
		t.Fatalf("entry 5's extensions %q, %v", l.Extensions, err)
	}
	if err := c.GetLog(6, &l); err != nil || l.Extensions != nil {
		t.Fatalf("entry 6's extensions %q, %v", l.Extensions, err)
	}
	c.Close()

	damageEntry(t, dir, 7)
	c = openChecked(t, dir)
	defer c.Close()
	if err := c.GetLog(7, &l); err != raft.ErrLogNotFound {
		t.Fatalf("raft reads the damaged entry with %v, want raft.ErrLogNotFound (a snapshot goes to a follower that needs it)", err)
	}
	if n := c.damagedReads.Load(); n != 1 {
		t.Fatalf("%d damaged reads counted, want 1", n)
	}
	if err := c.read(7, &l); !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("reading the damaged entry: %v", err)
	}
	if err := c.checkEntries(1); !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("check from entry 1: %v", err)
	}
	if err := c.checkEntries(8); err != nil {
		t.Fatalf("check after the damaged entry: %v", err)
	}
	for _, i := range []uint64{6, 8, 22} {
		check(c, i)
	}
}

// TestShardWithDamagedLogIsRefused: a replica whose log holds a damaged
// entry after its newest snapshot does not open, whether the damage is
// in an entry raft-wal hands over as it is or in its last batch, which
// raft-wal drops as a write cut short; set aside, its log no longer
// counts as Raft state, so its node rejoins it as a new member. A state
// file copied in from another replica ahead of the log is no damage.
func TestShardWithDamagedLogIsRefused(t *testing.T) {
	// written makes a replica of three appends and returns its data
	// directory and its command entries, oldest first.
	written := func(t *testing.T) (string, []uint64) {
		data := t.TempDir()
		s := openShard(t, ReplicaDir(data, 1))
		f := newFixture(t, s)
		for i := 0; i < 3; i++ {
			appendMsg(t, s, f, f.inbox, "kept in the log")
		}
		first, _ := s.logs.FirstIndex()
		last, _ := s.logs.LastIndex()
		var commands []uint64
		for i := first; i <= last; i++ {
			var l raft.Log
			if err := s.logs.GetLog(i, &l); err != nil {
				t.Fatal(err)
			}
			if l.Type == raft.LogCommand && len(l.Data) >= 32 {
				commands = append(commands, i)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if len(commands) < 3 || commands[len(commands)-1] != last {
			t.Fatalf("command entries %v of %d-%d", commands, first, last)
		}
		return data, commands
	}
	refused := func(t *testing.T, data string) {
		t.Helper()
		dir := ReplicaDir(data, 1)
		if _, err := Open(Config{Shard: 1, NodeID: "n1", Dir: dir}); !errors.Is(err, ErrLogDamaged) {
			t.Fatalf("opening a replica with a damaged log: %v", err)
		}
		if !HasRaftState(data, 1) {
			t.Fatal("the replica lost its Raft state before its log was set aside")
		}
		if err := SetAsideLog(data, 1); err != nil {
			t.Fatal(err)
		}
		if HasRaftState(data, 1) {
			t.Fatal("a replica whose log was set aside still has Raft state")
		}
		if _, err := os.Stat(filepath.Join(dir, damagedLogDir)); err != nil {
			t.Fatalf("the damaged log was not kept: %v", err)
		}
	}
	t.Run("entry", func(t *testing.T) {
		data, commands := written(t)
		damageEntry(t, ReplicaDir(data, 1), commands[0])
		refused(t, data)
	})
	t.Run("last batch", func(t *testing.T) {
		data, commands := written(t)
		damageEntry(t, ReplicaDir(data, 1), commands[len(commands)-1])
		refused(t, data)
	})
	t.Run("kept by a sole voter", func(t *testing.T) {
		// No one to refill it from: it opens and serves what it applied,
		// reading the damaged entry as it is (raft reads every entry
		// after the snapshot as it starts, and panics on a missing one).
		data, commands := written(t)
		damageEntry(t, ReplicaDir(data, 1), commands[0])
		s, err := Open(Config{Shard: 1, NodeID: "n1", Dir: ReplicaDir(data, 1), KeepDamagedLog: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var st Stats
		if err := s.View(func(r *Reader) error { st = r.Stats(); return nil }); err != nil {
			t.Fatal(err)
		}
		if st.Messages != 3 {
			t.Fatalf("%d messages after opening the damaged log, want 3", st.Messages)
		}
	})
	t.Run("state copied in ahead of the log", func(t *testing.T) {
		data, _ := written(t)
		dir := ReplicaDir(data, 1)
		behind := filepath.Join(t.TempDir(), "wal")
		if err := os.CopyFS(behind, os.DirFS(filepath.Join(dir, walDir))); err != nil {
			t.Fatal(err)
		}
		s := openShard(t, dir)
		f := newFixture(t, s)
		appendMsg(t, s, f, f.inbox, "only in the copy")
		var ahead bytes.Buffer
		info, err := s.WriteState(&ahead)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, walDir)); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(filepath.Join(dir, walDir), os.DirFS(behind)); err != nil {
			t.Fatal(err)
		}
		// The log now ends before the state file: what damage looks like.
		if _, err := Open(Config{Shard: 1, NodeID: "n1", Dir: dir}); !errors.Is(err, ErrLogDamaged) {
			t.Fatalf("opening a replica whose log ends before its state: %v", err)
		}
		_, err = RebuildState(context.Background(), dir, func(_ context.Context, w io.Writer) (StateInfo, error) {
			_, err := w.Write(ahead.Bytes())
			return info, err
		})
		if err != nil {
			t.Fatal(err)
		}
		r := openShard(t, dir)
		if got := len(messages(t, r, f.user, f.inbox)); got != 1 {
			t.Fatalf("%d messages after the rebuild, want the one only in the copy", got)
		}
	})
}

// TestDamageReadWhileRunning: an entry damaged on disk under a running
// replica reads as missing and is counted; damage after the newest
// snapshot is reported (LogDamaged), so that the node reopens the
// replica, whose open then refuses the log. Damage in an entry the
// snapshot covers is not: a follower that needs it gets the snapshot.
func TestDamageReadWhileRunning(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	// Past what the cache keeps, so that raft reads from the log's files.
	for i := 0; i < logCacheEntries+20; i++ {
		appendMsg(t, s, f, f.inbox, "past the cache")
	}
	damage := func(idx uint64) { t.Helper(); damageEntry(t, dir, idx) }
	first, _ := s.logs.FirstIndex()
	var l raft.Log
	for l.Type != raft.LogCommand {
		first++
		if err := s.cache.GetLog(first, &l); err != nil {
			t.Fatal(err)
		}
	}
	last, _ := s.logs.LastIndex()
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// Covered by the snapshot, still in the log (trailing entries).
	damage(first)
	if err := s.cache.GetLog(first, &l); err != raft.ErrLogNotFound {
		t.Fatalf("a damaged entry read with %v, want raft.ErrLogNotFound", err)
	}
	if err := s.LogDamaged(); err != nil {
		t.Fatalf("damage the snapshot covers reported: %v", err)
	}
	if st := s.Status(); st.DamagedReads != 1 {
		t.Fatalf("%d damaged reads in the status, want 1", st.DamagedReads)
	}
	// After the snapshot.
	appendMsg(t, s, f, f.inbox, "after the snapshot")
	for i := 0; i < logCacheEntries+20; i++ {
		appendMsg(t, s, f, f.inbox, "past the cache again")
	}
	after := last + 1
	for l.Index != after || l.Type != raft.LogCommand {
		after++
		if err := s.cache.GetLog(after, &l); err != nil {
			t.Fatal(err)
		}
	}
	damage(after)
	if err := s.cache.GetLog(after, &l); err != raft.ErrLogNotFound {
		t.Fatalf("a damaged entry read with %v, want raft.ErrLogNotFound", err)
	}
	if err := s.LogDamaged(); !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("damage after the snapshot reported as %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Shard: 1, NodeID: "n1", Dir: dir}); !errors.Is(err, ErrLogDamaged) {
		t.Fatalf("reopening after damage found while running: %v", err)
	}
}
