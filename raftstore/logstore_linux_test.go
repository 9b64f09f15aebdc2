package raftstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.etcd.io/bbolt"
)

// smallDisk mounts a tmpfs of a few MiB and returns its path and a
// function that fills it to the last byte. It needs root for the mount;
// the test is skipped where it cannot.
func smallDisk(t *testing.T) (dir string, fill func()) {
	t.Helper()
	dir = t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("a full disk is simulated with a tmpfs mount, which needs root: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	fill = func() {
		f, err := os.Create(filepath.Join(dir, "ballast"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := make([]byte, 4096)
		for i := 0; ; i++ {
			if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
				return
			} else if err != nil {
				t.Fatal(err)
			} else if i > 1<<20 {
				t.Fatal("the small disk never filled")
			}
		}
	}
	return dir, fill
}

// TestStableStoreWritesOnAFullDisk: hashicorp/raft panics when it cannot
// save a new term, so raft.db must take terms and votes while the disk is
// full, and open again on it. It does because bbolt rewrites the few pages
// these keys take in place of the ones the previous commit freed (the map
// freelist), so the file needs no new blocks; this holds that in place.
func TestStableStoreWritesOnAFullDisk(t *testing.T) {
	dir, fill := smallDisk(t)
	path := filepath.Join(dir, "raft.db")
	opts := &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}
	s, err := openLogStore(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	fill()
	const elections = 2000
	for i := uint64(1); i <= elections; i++ {
		if err := s.SetUint64([]byte("CurrentTerm"), i); err != nil {
			t.Fatalf("save term %d on a full disk: %v", i, err)
		}
		if err := s.Set([]byte("LastVoteCand"), fmt.Appendf(nil, "node-%d", i%3)); err != nil {
			t.Fatalf("save vote %d on a full disk: %v", i, err)
		}
		if err := s.SetUint64([]byte("LastVoteTerm"), i); err != nil {
			t.Fatalf("save vote term %d on a full disk: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = openLogStore(path, opts)
	if err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	defer s.Close()
	if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term != elections {
		t.Fatalf("term after reopening: %d, %v; want %d", term, err, elections)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), elections+1); err != nil {
		t.Fatalf("save a term after reopening on a full disk: %v", err)
	}
}

// TestStableStoreOpensOnAFullDisk: a replica's raft.db opens, keeps its
// term and takes a new one on a disk already full when the node starts.
func TestStableStoreOpensOnAFullDisk(t *testing.T) {
	dir, fill := smallDisk(t)
	path := filepath.Join(dir, "raft.db")
	opts := &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}
	db, err := openBolt(path, opts, [][]byte{bucketLogs, bucketConf})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketConf).Put([]byte("CurrentTerm"), u64Key(7)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fill()
	s, err := openLogStore(path, opts)
	if err != nil {
		t.Fatalf("open on a full disk: %v", err)
	}
	defer s.Close()
	if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
		t.Fatalf("term: %d, %v; want 7", term, err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 8); err != nil {
		t.Fatalf("save a term on a full disk: %v", err)
	}
}
