package raftstore

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

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

	dir := t.TempDir()
	if _, err := InstallState(dir, path, "n1"); err != nil {
		t.Fatal(err)
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
