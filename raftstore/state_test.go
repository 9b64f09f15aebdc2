package raftstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestWriteStateInstallStateRoundTrip(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	for i := 0; i < 3; i++ {
		appendMsg(t, s, f, f.inbox, "to be restored")
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.WriteState(out)
	out.Close()
	if err != nil {
		t.Fatal(err)
	}
	if info.Index == 0 || info.Term == 0 || info.Stats.Messages != 3 || info.Stats.MailUsers != 1 {
		t.Fatalf("state info %+v", info)
	}
	got, err := InspectStateFile(path)
	if err != nil || got.Index != info.Index || got.Stats != info.Stats {
		t.Fatalf("inspect %+v, %v", got, err)
	}

	data := t.TempDir()
	dir := ReplicaDir(data, 1)
	if _, err := InstallState(dir, path, "n1"); err != nil {
		t.Fatal(err)
	}
	if !HasRaftState(data, 1) {
		t.Fatal("an installed replica counts as without Raft state, so a node would withhold it")
	}
	if _, err := InstallState(dir, path, "n1"); err == nil {
		t.Fatal("installed over an existing replica")
	}
	s.Close()
	r := openShard(t, dir)
	if got := uids(messages(t, r, f.user, f.inbox)); !slices.Equal(got, []schema.UID{1, 2, 3}) {
		t.Fatalf("restored uids %v", got)
	}
	// New writes go after the restored index and are applied, not skipped
	// as replays.
	uid, _ := appendMsg(t, r, f, f.inbox, "after restore")
	if uid != 4 || len(messages(t, r, f.user, f.inbox)) != 4 {
		t.Fatalf("write after restore: uid %d", uid)
	}
	if r.raft.LastIndex() <= info.Index {
		t.Fatalf("log index %d does not continue after %d", r.raft.LastIndex(), info.Index)
	}
}

func TestInspectCorruptStateFile(t *testing.T) {
	s := openShard(t, t.TempDir())
	newFixture(t, s)
	path := filepath.Join(t.TempDir(), "copy.db")
	out, _ := os.Create(path)
	if _, err := s.WriteState(out); err != nil {
		t.Fatal(err)
	}
	out.Close()
	b, _ := os.ReadFile(path)
	for i := 2 * 4096; i < len(b); i += 97 {
		b[i] ^= 0xa5
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectStateFile(path); err == nil {
		t.Fatal("corrupt state file passed inspection")
	}
}

// damage overwrites every page of the state file at path after bbolt's
// two meta pages with random bytes.
func damage(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	rand.Read(b[2*page:])
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b[2*page:], int64(2*page)); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedStateFileBreaksTheReplica: bbolt panics on a page that is
// not what its parent says; the replica turns that into ErrCorrupt, serves
// and applies nothing more, and the process goes on.
func TestDamagedStateFileBreaksTheReplica(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	appendMsg(t, s, f, f.inbox, "before the damage")
	if err := s.fsm.flush(); err != nil {
		t.Fatal(err)
	}
	damage(t, filepath.Join(dir, "state.db"))
	err := s.Read(func(r *Reader) error { _, err := r.Messages(f.user, f.inbox); return err })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a read of the damaged file: %v, want ErrCorrupt", err)
	}
	if err := s.Broken(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Broken() = %v, want ErrCorrupt", err)
	}
	if _, err := applyErr(s, schema.NewID(), &schema.CreateMailbox{User: f.user, Mailbox: schema.NewMailbox{ID: schema.NewID(), NameKey: nameKey("Later"), Sealed: []byte("x")}}); err == nil {
		t.Fatal("a broken replica applied a write")
	}
	s.Close()
	// Opened again, the damage is found at once.
	if _, err := Open(Config{Dir: dir, Shard: 1, NodeID: "n1"}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open of the damaged replica: %v, want ErrCorrupt", err)
	}
	// A rebuilt file in its place opens, though bbolt's failed open may
	// still hold the damaged one.
	os.Rename(filepath.Join(dir, "state.db"), filepath.Join(dir, "state.db.corrupt"))
	db, err := bbolt.Open(filepath.Join(dir, "state.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("a new state file in the damaged one's place: %v", err)
	}
	db.Close()
}

// TestRebuildState: a closed replica's damaged state file is replaced by
// a sound copy at least as new as the replica's snapshot, and kept aside;
// a damaged copy or one older than the snapshot is refused and leaves
// the replica as it was.
func TestRebuildState(t *testing.T) {
	src := openShard(t, t.TempDir())
	f := newFixture(t, src)
	for i := 0; i < 3; i++ {
		appendMsg(t, src, f, f.inbox, "kept elsewhere")
	}
	var good bytes.Buffer
	info, err := src.WriteState(&good)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(b []byte, sent StateInfo) func(context.Context, io.Writer) (StateInfo, error) {
		return func(_ context.Context, w io.Writer) (StateInfo, error) {
			_, err := w.Write(b)
			return sent, err
		}
	}
	replica := func(snapIndex uint64) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "state.db"), []byte("damaged"), 0o600); err != nil {
			t.Fatal(err)
		}
		snaps, err := newStateSnapshots(filepath.Join(dir, "snapshots"), nil)
		if err != nil {
			t.Fatal(err)
		}
		sink, err := snaps.Create(raft.SnapshotVersionMax, snapIndex, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	unchanged := func(dir string) {
		t.Helper()
		if b, _ := os.ReadFile(filepath.Join(dir, "state.db")); string(b) != "damaged" {
			t.Error("a refused rebuild changed the state file")
		}
		if _, err := os.Stat(filepath.Join(dir, "state.db.rebuild")); !errors.Is(err, os.ErrNotExist) {
			t.Error("a refused rebuild left its copy behind")
		}
	}
	ctx := context.Background()

	dir := replica(info.Index + 1)
	if _, err := RebuildState(ctx, dir, fetch(good.Bytes(), info)); err == nil {
		t.Error("rebuilt from a copy older than the replica's snapshot")
	}
	unchanged(dir)

	bad := bytes.Clone(good.Bytes())
	page := os.Getpagesize()
	rand.Read(bad[2*page:])
	dir = replica(info.Index)
	if _, err := RebuildState(ctx, dir, fetch(bad, info)); err == nil {
		t.Error("rebuilt from a damaged copy")
	}
	unchanged(dir)

	got, err := RebuildState(ctx, dir, fetch(good.Bytes(), info))
	if err != nil {
		t.Fatal(err)
	}
	if got.Index != info.Index || got.Stats.Messages != 3 {
		t.Fatalf("rebuilt %+v, copied %+v", got, info)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "state.db.corrupt")); string(b) != "damaged" {
		t.Error("the damaged file was not kept aside")
	}
	if st, err := InspectStateFile(filepath.Join(dir, "state.db")); err != nil || st.Stats.Messages != 3 {
		t.Fatalf("the rebuilt file: %+v, %v", st, err)
	}
}
