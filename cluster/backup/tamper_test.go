package backup

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// backedUp is a node with mail and one complete backup on file targets.
type backedUp struct {
	n       *node
	r       *Runner
	man     *Manifest
	targets []Target
}

func newBackedUp(t *testing.T, regions ...string) *backedUp {
	t.Helper()
	n := newNode(t)
	n.addUser(t, "carol@example.test")
	for i := 0; i < 3; i++ {
		n.deliver(t, "carol@example.test", "msg "+itoa(i), canary+" "+randomText(500))
	}
	targets := fileTargets(t, regions...)
	r := newRunner(t, Config{Targets: targets, Cluster: n.c})
	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return &backedUp{n: n, r: r, man: res.Manifest, targets: targets}
}

func (b *backedUp) objectPath(region, name string) string {
	for _, t := range b.targets {
		if t.Region() == region {
			return filepath.Join(t.(*fileTarget).root, b.man.ID, name)
		}
	}
	panic("no region " + region)
}

func flipByte(t *testing.T, path string, at func(size int) int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[at(len(data))] ^= 0x01
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTamperedObjectFailsVerify(t *testing.T) {
	tests := []struct {
		name string
		at   func(size int) int
	}{
		{"header", func(int) int { return 40 }},
		{"middle", func(n int) int { return n / 2 }},
		{"last byte", func(n int) int { return n - 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackedUp(t, "eu", "us")
			flipByte(t, b.objectPath("us", "shard-1.age"), tc.at)
			v, err := b.r.Verify(testCtx(t), "", b.n.identity)
			if err == nil || v.OK {
				t.Fatal("verify passed a tampered object")
			}
			msg := err.Error()
			for _, want := range []string{b.man.ID, "target us", "shard-1.age", "sha256 mismatch"} {
				if !strings.Contains(msg, want) {
					t.Errorf("verify error %q does not mention %q", msg, want)
				}
			}
			if strings.Contains(msg, "target eu") {
				t.Errorf("verify blamed the intact copy: %q", msg)
			}
			// The failure is recorded and listed.
			cat, err := b.r.List(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if rec := cat.Backups[0].Verification; rec == nil || rec.OK || !strings.Contains(rec.Error, "shard-1.age") {
				t.Fatalf("listed verification %+v", rec)
			}
			// A restore still succeeds from the intact region, and says
			// nothing was wrong with it.
			res, err := b.r.Restore(testCtx(t), RestoreOptions{Identity: b.n.identity, Dir: filepath.Join(t.TempDir(), "r")})
			if err != nil {
				t.Fatalf("restore with one intact copy: %v", err)
			}
			if res.Sources[1] != "eu" {
				t.Fatalf("shard 1 restored from %q, want eu", res.Sources[1])
			}
		})
	}
}

func TestAllCopiesTamperedFailsRestore(t *testing.T) {
	b := newBackedUp(t, "eu", "us")
	for _, region := range []string{"eu", "us"} {
		flipByte(t, b.objectPath(region, "shard-0.age"), func(n int) int { return n / 3 })
	}
	dir := filepath.Join(t.TempDir(), "r")
	_, err := b.r.Restore(testCtx(t), RestoreOptions{Identity: b.n.identity, Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "no good copy of shards [0]") || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("restore of a backup with no intact meta shard: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("failed restore left %s behind: %v", dir, err)
	}
	// Into an existing empty directory, a failed restore leaves it empty.
	empty := t.TempDir()
	if _, err := b.r.Restore(testCtx(t), RestoreOptions{Identity: b.n.identity, Dir: empty}); err == nil {
		t.Fatal("restore succeeded")
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("failed restore left %v in the empty directory", entries)
	}
}

func TestTamperedManifestFailsVerify(t *testing.T) {
	b := newBackedUp(t, "eu", "us")
	path := b.objectPath("us", manifestName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Claim a different message count on one target only.
	data = []byte(strings.Replace(string(data), `"messages": 3`, `"messages": 4`, 1))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = b.r.Verify(testCtx(t), b.man.ID, b.n.identity)
	if err == nil || !strings.Contains(err.Error(), "target us: manifest: "+errNotAuthentic.Error()) {
		t.Fatalf("verify with a tampered manifest on one target: %v", err)
	}
	// Re-signed with the real key (a bug, not an attack), the copies
	// still must agree.
	rewriteManifest(t, path, b.n.c.BackupManifestKey(), func(m *Manifest) { m.Shards[0].Counts.Messages++ })
	_, err = b.r.Verify(testCtx(t), b.man.ID, b.n.identity)
	if err == nil || !strings.Contains(err.Error(), "target us: manifest differs") {
		t.Fatalf("verify with differing manifests: %v", err)
	}
}

// rewriteManifest edits a manifest file and signs it again under key.
func rewriteManifest(t *testing.T, path string, key [32]byte, edit func(*Manifest)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	m.MAC = m.computeMAC(key)
	out, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestForgedManifestIsRefused(t *testing.T) {
	b := newBackedUp(t, "eu")
	if b.man.MAC == "" {
		t.Fatal("manifest written without a MAC")
	}
	path := b.objectPath("eu", manifestName)
	// Someone who can write to the target but has no master key moves the
	// backup's date forward, so it would look like the newest.
	rewriteManifest(t, path, seal.NewKey(0).Secret, func(m *Manifest) { m.Created = m.Created.Add(time.Hour) })
	cat, err := b.r.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Backups) != 1 || cat.Backups[0].Complete || !strings.Contains(cat.Backups[0].Problem, "not authentic") {
		t.Fatalf("forged manifest listed as %+v", cat.Backups)
	}
	if _, err := b.r.Verify(testCtx(t), b.man.ID, b.n.identity); err == nil {
		t.Fatal("verify accepted a forged manifest")
	}
	dir := filepath.Join(t.TempDir(), "r")
	if _, err := b.r.Restore(testCtx(t), RestoreOptions{ID: b.man.ID, Identity: b.n.identity, Dir: dir}); err == nil {
		t.Fatal("restore accepted a forged manifest")
	}
	// A runner without the key (restoring without --master-key) cannot
	// tell, and reads it as before.
	open := newRunner(t, Config{Targets: b.targets})
	if _, err := open.Verify(testCtx(t), b.man.ID, b.n.identity); err != nil {
		t.Fatalf("verify without a manifest key: %v", err)
	}
	// With the right key from the master key, as on a new machine, the
	// original manifest verifies again once restored.
	rewriteManifest(t, path, b.n.c.BackupManifestKey(), func(m *Manifest) { m.Created = m.Created.Add(-time.Hour) })
	key := directory.BackupManifestKey(b.n.master)
	keyed := newRunner(t, Config{Targets: b.targets, ManifestKey: &key})
	if _, err := keyed.Verify(testCtx(t), b.man.ID, b.n.identity); err != nil {
		t.Fatalf("verify with the master-derived key: %v", err)
	}
}

func TestCountsMismatchFailsVerify(t *testing.T) {
	b := newBackedUp(t, "eu")
	path := b.objectPath("eu", manifestName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"messages": 3`) {
		t.Fatalf("manifest does not record 3 messages:\n%s", data)
	}
	// Signed with the real key: the counts check after decryption is what
	// must catch it.
	rewriteManifest(t, path, b.n.c.BackupManifestKey(), func(m *Manifest) {
		for i := range m.Shards {
			if m.Shards[i].Counts.Messages == 3 {
				m.Shards[i].Counts.Messages = 4
			}
		}
	})
	_, err = b.r.Verify(testCtx(t), b.man.ID, b.n.identity)
	if err == nil || !strings.Contains(err.Error(), "record counts") {
		t.Fatalf("verify with a wrong message count: %v", err)
	}
}

func TestWrongIdentityFailsRestore(t *testing.T) {
	b := newBackedUp(t, "eu")
	other, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "r")
	_, err = b.r.Restore(testCtx(t), RestoreOptions{Identity: other, Dir: dir})
	if !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), b.man.KeyID) {
		t.Fatalf("restore with a wrong identity: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("failed restore left %s behind", dir)
	}
	if _, err := b.r.Verify(testCtx(t), "", other); !errors.Is(err, ErrWrongIdentity) {
		t.Fatalf("verify with a wrong identity: %v", err)
	}

	// A manifest that lies about the key id still cannot get past
	// decryption: age itself refuses the identity.
	path := b.objectPath("eu", manifestName)
	rewriteManifest(t, path, b.n.c.BackupManifestKey(), func(m *Manifest) { m.KeyID = other.KeyIDs()[0] })
	_, err = b.r.Restore(testCtx(t), RestoreOptions{Identity: other, Dir: dir})
	if !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), "shard-0.age") {
		t.Fatalf("restore with a forged key id: %v", err)
	}
}

func TestRestoreRefusesNonEmptyDir(t *testing.T) {
	b := newBackedUp(t, "eu")
	dir := t.TempDir()
	keep := filepath.Join(dir, "something")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := b.r.Restore(testCtx(t), RestoreOptions{Identity: b.n.identity, Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty directory: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatal("restore touched an existing file")
	}
	if _, err := b.r.Restore(testCtx(t), RestoreOptions{ID: "nonsense", Identity: b.n.identity, Dir: t.TempDir()}); err == nil {
		t.Fatal("restore accepted a malformed id")
	}
}
