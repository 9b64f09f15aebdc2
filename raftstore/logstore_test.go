package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// The writers below are how replicas kept their Raft log in raft.db
// before it moved to its own files (openRaftLog): the tests write legacy
// logs with them, in the form replicas in the field hold.

// StoreLog appends one entry.
func (s *logStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs appends entries in one transaction (one commit, synced).
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	// raft-boltdb's default encoding (time as msgpack's extension-free
	// form), so that both read each other's small entries.
	h := &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}}
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			var buf bytes.Buffer
			buf.Grow(len(l.Data) + len(l.Extensions) + 64)
			if err := codec.NewEncoder(&buf, h).Encode(l); err != nil {
				return fmt.Errorf("encode log %d: %w", l.Index, err)
			}
			k := u64Key(l.Index)
			if err := deleteEntry(b, k); err != nil {
				return err
			}
			if buf.Len() < largeEntry {
				if err := b.Put(k, buf.Bytes()); err != nil {
					return err
				}
				continue
			}
			nb, err := b.CreateBucket(k)
			if err != nil {
				return err
			}
			if err := nb.Put(keyEntry, buf.Bytes()); err != nil {
				return err
			}
		}
		return nil
	})
}

// deleteEntry removes the entry under k, in either form; a missing one is
// no error (an append may overwrite a conflicting suffix).
func deleteEntry(b *bbolt.Bucket, k []byte) error {
	if b.Bucket(k) != nil {
		return b.DeleteBucket(k)
	}
	return b.Delete(k)
}

// DeleteRange deletes the entries from min to max, inclusive.
func (s *logStore) DeleteRange(min, max uint64) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(u64Key(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := deleteEntry(b, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// testEntry returns entry idx with a payload of n bytes that tells its
// index.
func testEntry(idx uint64, n int) *raft.Log {
	data := bytes.Repeat([]byte{byte(idx), byte(idx >> 8), 0x5a}, n/3+1)[:n]
	return &raft.Log{Index: idx, Term: 3, Type: raft.LogCommand, Data: data, AppendedAt: time.Unix(1700000000, 0).UTC()}
}

func checkEntries(t *testing.T, s raft.LogStore, first, last uint64, size func(uint64) int) {
	t.Helper()
	if got, err := s.FirstIndex(); err != nil || got != first {
		t.Fatalf("first index %d, %v; want %d", got, err, first)
	}
	if got, err := s.LastIndex(); err != nil || got != last {
		t.Fatalf("last index %d, %v; want %d", got, err, last)
	}
	for i := first; i <= last && last > 0; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		want := testEntry(i, size(i))
		if l.Index != i || l.Term != want.Term || l.Type != want.Type || !bytes.Equal(l.Data, want.Data) || !l.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("entry %d read back as index %d term %d, %d bytes, appended %v", i, l.Index, l.Term, len(l.Data), l.AppendedAt)
		}
	}
}

// sizes alternates small entries and large ones (a bucket each).
func sizes(i uint64) int {
	if i%3 == 0 {
		return 100
	}
	return 20<<10 + int(i)
}

func TestLogStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := openLogStore(path, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, s, 0, 0, sizes)
	var batch []*raft.Log
	for i := uint64(1); i <= 30; i++ {
		batch = append(batch, testEntry(i, sizes(i)))
	}
	if err := s.StoreLogs(batch[:10]); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(batch[10:]); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, s, 1, 30, sizes)
	var missing raft.Log
	if err := s.GetLog(31, &missing); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("missing entry: %v", err)
	}
	// A follower truncates a conflicting suffix, then appends over it,
	// and the leader's log is truncated from the front after snapshots.
	if err := s.DeleteRange(25, 30); err != nil {
		t.Fatal(err)
	}
	flipped := func(i uint64) int {
		if i >= 25 {
			return sizes(i+1) + 1
		}
		return sizes(i)
	}
	for i := uint64(25); i <= 28; i++ {
		if err := s.StoreLog(testEntry(i, flipped(i))); err != nil {
			t.Fatal(err)
		}
	}
	// An append over an entry still present (either form) replaces it.
	if err := s.StoreLogs([]*raft.Log{testEntry(27, flipped(27)), testEntry(28, flipped(28))}); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, s, 1, 28, flipped)
	if err := s.DeleteRange(1, 20); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, s, 21, 28, flipped)

	// The stable store, as hashicorp/raft uses it.
	if _, err := s.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("unset key: %v (hashicorp/raft expects \"not found\")", err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = openLogStore(path, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkEntries(t, s, 21, 28, flipped)
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("term after reopening: %d, %v", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("vote after reopening: %q, %v", v, err)
	}
}

// TestLogStoreReadsRaftBoltDB opens a raft.db written by raft-boltdb (what
// every replica before this store has) and goes on with it.
func TestLogStoreReadsRaftBoltDB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	old, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 12; i++ {
		if err := old.StoreLog(testEntry(i, sizes(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := openLogStore(path, &bbolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkEntries(t, s, 1, 12, sizes)
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 3 {
		t.Fatalf("term written by raft-boltdb: %d, %v", v, err)
	}
	for i := uint64(13); i <= 20; i++ {
		if err := s.StoreLog(testEntry(i, sizes(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(1, 15); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, s, 16, 20, sizes)
}

// TestChunkForms stores chunks in both forms, over chunks stored before
// large ones got buckets of their own (plain values), and reads and
// deletes each.
func TestChunkForms(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	small, large := bytes.Repeat([]byte{1}, 100), bytes.Repeat([]byte{2}, 3*largeChunk)
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("chunks"))
		if err != nil {
			return err
		}
		must(b.Put([]byte("old-large"), large)) // as stored before
		putChunk(b, []byte("small"), small)
		putChunk(b, []byte("large"), large)
		putChunk(b, []byte("old-large"), small) // replaced, changing form
		putChunk(b, []byte("small"), large)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("chunks"))
		for k, want := range map[string][]byte{"small": large, "large": large, "old-large": small} {
			if got := getChunk(b, []byte(k)); !bytes.Equal(got, want) {
				t.Errorf("chunk %s: %d bytes, want %d", k, len(got), len(want))
			}
			deleteChunk(b, []byte(k))
			if got := getChunk(b, []byte(k)); got != nil {
				t.Errorf("chunk %s still there after delete", k)
			}
		}
		deleteChunk(b, []byte("never")) // no error for a missing key
		if k, _ := b.Cursor().First(); k != nil {
			t.Errorf("key %q left behind", k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
