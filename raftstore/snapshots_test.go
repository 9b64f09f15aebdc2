package raftstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// snapshotFiles lists the files in a replica's snapshot directory.
func snapshotFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestLocalSnapshotKeepsNoCopyOfTheState(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	for i := 0; i < 20; i++ {
		appendMsg(t, s, f, f.inbox, strings.Repeat("body ", 20000))
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, s, f, f.inbox, "after the first snapshot")
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	files := snapshotFiles(t, dir)
	if len(files) != 1 || !strings.HasSuffix(files[0], snapMetaSuffix) {
		t.Fatalf("snapshot directory holds %v, want one metadata file", files)
	}
	st, _ := os.Stat(filepath.Join(dir, "snapshots", files[0]))
	if st.Size() > 4096 {
		t.Fatalf("snapshot metadata is %d bytes", st.Size())
	}
	// Opening the snapshot streams the live state, which a restore turns
	// back into the same mailbox.
	metas, err := s.snaps.List()
	if err != nil || len(metas) != 1 {
		t.Fatalf("list: %v %v", metas, err)
	}
	meta, rc, err := s.snaps.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(rc)
	rc.Close()
	if err != nil || n != meta.Size || n == 0 {
		t.Fatalf("read %d bytes of a %d-byte snapshot: %v", n, meta.Size, err)
	}
	other, err := openFSM(filepath.Join(t.TempDir(), "state.db"), s.log)
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	if err := other.Restore(readCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	var got []schema.MessageRecord
	_ = other.view(func(r *Reader) (err error) { got, err = r.Messages(f.user, f.inbox); return })
	if len(got) != 21 {
		t.Fatalf("snapshot copy holds %d messages, want 21", len(got))
	}
	// The replica restarts from its state and the snapshot metadata.
	s.Close()
	s2 := openShard(t, dir)
	if n := len(messages(t, s2, f.user, f.inbox)); n != 21 {
		t.Fatalf("after restart %d messages", n)
	}
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

func readCloser(b *bytes.Buffer) nopCloser { return nopCloser{b} }

func TestNewFollowerCatchesUpFromTheLiveState(t *testing.T) {
	// Timeouts that hold on a loaded machine: the leader must not lose its
	// lease while it streams the state to the new member.
	timing := Timing{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, TrailingLogs: 1}
	addrA, transA := raft.NewInmemTransport("")
	addrB, transB := raft.NewInmemTransport("")
	transA.Connect(addrB, transB)
	transB.Connect(addrA, transA)

	a, err := Open(Config{Shard: 1, Dir: t.TempDir(), NodeID: "a", Address: string(addrA), Transport: transA, Bootstrap: true, Timing: timing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, a)
	for i := 0; i < 10; i++ {
		appendMsg(t, a, f, f.inbox, "before the follower exists")
	}
	// Snapshot and truncate: the new follower cannot get these entries
	// from the log and must be sent the state.
	if err := a.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first, _ := a.logs.FirstIndex(); first <= 2 {
		t.Fatalf("log not truncated (first index %d)", first)
	}

	dirB := t.TempDir()
	b, err := Open(Config{Shard: 1, Dir: dirB, NodeID: "b", Address: string(addrB), Transport: transB, Timing: timing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	// A non-voter: catching up from the state cannot cost the group its
	// quorum, so the leader keeps leading while it does.
	if err := a.AddNonvoter(ctx, "b", string(addrB)); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, a, f, f.inbox, "after the follower joined")

	want := uids(messages(t, a, f.user, f.inbox))
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got []schema.UID
		_ = b.View(func(r *Reader) error {
			ms, err := r.Messages(f.user, f.inbox)
			got = uids(ms)
			return err
		})
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower has %v, leader %v", got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	// The received state was restored, so its copy is gone.
	for _, name := range snapshotFiles(t, dirB) {
		if strings.HasSuffix(name, snapDataSuffix) {
			t.Fatalf("restored snapshot data %s kept", name)
		}
	}
	// Bodies arrived too.
	var chunk []byte
	_ = b.View(func(r *Reader) (err error) {
		ms, _ := r.Messages(f.user, f.inbox)
		chunk, err = r.Chunk(f.user, ms[0].Blob, 0)
		return
	})
	if string(chunk) != "before the follower exists" {
		t.Fatalf("follower chunk %q", chunk)
	}
}

func TestReceivedSnapshotRecoveredAfterACrash(t *testing.T) {
	// A leader's state, as a follower would receive it.
	src := openShard(t, t.TempDir())
	f := newFixture(t, src)
	for i := 0; i < 3; i++ {
		appendMsg(t, src, f, f.inbox, "received")
	}
	var state bytes.Buffer
	info, err := src.WriteState(&state)
	if err != nil {
		t.Fatal(err)
	}

	// The follower stored the snapshot, then crashed before restoring it.
	dir := t.TempDir()
	fsm, err := openFSM(filepath.Join(dir, "state.db"), src.log)
	if err != nil {
		t.Fatal(err)
	}
	store, err := newStateSnapshots(filepath.Join(dir, "snapshots"), fsm)
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "n1"}}}
	sink, err := store.Create(raft.SnapshotVersionMax, info.Index, info.Term, conf, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(state.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	fsm.close()

	// On start the shard restores it before Raft trusts its index.
	s := openShard(t, dir)
	if got := uids(messages(t, s, f.user, f.inbox)); !slices.Equal(got, []schema.UID{1, 2, 3}) {
		t.Fatalf("after recovery %v", got)
	}
	for _, name := range snapshotFiles(t, dir) {
		if strings.HasSuffix(name, snapDataSuffix) {
			t.Fatalf("recovered snapshot data %s kept", name)
		}
	}
	if uid, _ := appendMsg(t, s, f, f.inbox, "next"); uid != 4 {
		t.Fatalf("next uid %d", uid)
	}
}
