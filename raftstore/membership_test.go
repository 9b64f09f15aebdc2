package raftstore

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestStoredServers reads a closed replica's members from its log, then,
// with the log gone, from its snapshot, and refuses a directory without
// Raft state.
func TestStoredServers(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.AddNonvoter(ctx, "n2", "127.0.0.9:7000"); err != nil {
		t.Fatal(err)
	}
	want := []Server{{ID: "n1", Address: "n1", Voter: true}, {ID: "n2", Address: "127.0.0.9:7000"}}
	check := func(what string) {
		t.Helper()
		got, err := StoredServers(dir)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: %+v, want %+v", what, got, want)
		}
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// A change after the snapshot: the log's entry is the newer one.
	if err := s.AddVoter(ctx, "n2", "127.0.0.9:7001"); err != nil {
		t.Fatal(err)
	}
	want[1] = Server{ID: "n2", Address: "127.0.0.9:7001", Voter: true}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("from the log")

	// Without the log, the snapshot's configuration (before the change).
	if err := os.RemoveAll(filepath.Join(dir, walDir)); err != nil {
		t.Fatal(err)
	}
	want[1] = Server{ID: "n2", Address: "127.0.0.9:7000"}
	check("from the snapshot")
	if _, err := os.Stat(filepath.Join(dir, walDir)); !os.IsNotExist(err) {
		t.Errorf("reading the configuration made a log for the replica that lost its own (%v)", err)
	}

	if _, err := StoredServers(t.TempDir()); err == nil {
		t.Error("a directory without Raft state gave a configuration")
	}
}
