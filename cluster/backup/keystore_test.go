package backup

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// TestDeletedUserUnreadableInOlderBackup: a backup is taken, a user is
// deleted (its key destroyed and the targets' key store rewritten), and
// the backup from before the deletion is restored: the deleted user's
// key no longer opens while another user's mail is intact. Restored with
// the key store of before the deletion, the same backup opens the user
// again: the key store alone decides.
func TestDeletedUserUnreadableInOlderBackup(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "alice@example.test")
	n.addUser(t, "bob@other.test")
	n.deliver(t, "alice@example.test", "for alice", canary+" alice")
	n.deliver(t, "bob@other.test", "for bob", canary+" bob")
	bobBefore := readState(t, n.login(t, n.c, "bob@other.test"))
	d := n.c.n.Directory()
	ks := &KeyStore{Shard: directory.MetaShard, Prefix: directory.KeyStorePrefix, Read: d.KeyStore}
	targets := fileTargets(t, "eu-west", "us-east")
	r := newRunner(t, Config{Targets: targets, Cluster: n.c, KeyStore: ks})
	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.KeyStore == nil || res.Manifest.KeyStore.Prefix != directory.KeyStorePrefix {
		t.Fatalf("manifest key store %+v", res.Manifest.KeyStore)
	}
	oldStore := readObject(t, targets[0], KeyStoreObject)

	rep, err := d.EraseUser(testCtx(t), "alice@example.test")
	if err != nil || !rep.KeyDestroyed {
		t.Fatalf("delete alice: %+v, %v", rep, err)
	}
	writes, err := r.SyncKeyStore(testCtx(t))
	if err != nil || len(writes) != 2 || !writes[0].OK || !writes[1].OK {
		t.Fatalf("key store writes %+v, %v", writes, err)
	}
	if bytes.Equal(readObject(t, targets[1], KeyStoreObject), oldStore) {
		t.Fatal("the key store was not rewritten")
	}
	if err := n.c.Close(); err != nil {
		t.Fatal(err)
	}

	restore := func(name string) *testCluster {
		t.Helper()
		rr := newRunner(t, Config{Targets: targets})
		dir := filepath.Join(t.TempDir(), name)
		if _, err := rr.Restore(testCtx(t), RestoreOptions{ID: res.Manifest.ID, Identity: n.identity, Dir: dir}); err != nil {
			t.Fatalf("restore: %v", err)
		}
		return openCluster(t, dir, n.master)
	}
	c2 := restore("after-delete")
	if _, err := c2.Authenticate(testCtx(t), "alice@example.test", "password-alice@example.test"); !errors.Is(err, directory.ErrKeyDestroyed) {
		t.Fatalf("the deleted user in the older backup: %v, want ErrKeyDestroyed", err)
	}
	if got := readState(t, n.login(t, c2, "bob@other.test")); len(got["INBOX"].Messages) != 1 || len(got) != len(bobBefore) {
		t.Fatalf("bob after restore: %+v", summary(got))
	}
	c2.Close()

	// Control: with the key store of before the deletion, alice opens.
	for _, tg := range targets {
		if err := tg.Put(testCtx(t), KeyStoreObject, bytes.NewReader(oldStore), int64(len(oldStore))); err != nil {
			t.Fatal(err)
		}
	}
	c3 := restore("old-key-store")
	if got := readState(t, n.login(t, c3, "alice@example.test")); len(got["INBOX"].Messages) != 1 {
		t.Fatalf("alice with the old key store: %+v", summary(got))
	}
}

// TestRestoreRefusesMissingKeyStore: a backup whose meta copy lacks the
// key store does not restore without one (its users could not be read).
func TestRestoreRefusesMissingKeyStore(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "carol@example.test")
	targets := fileTargets(t, "eu-west")
	r := newRunner(t, Config{Targets: targets, Cluster: n.c,
		KeyStore: &KeyStore{Shard: directory.MetaShard, Prefix: directory.KeyStorePrefix, Read: n.c.n.Directory().KeyStore}})
	if _, err := r.Backup(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := targets[0].Delete(testCtx(t), KeyStoreObject); err != nil {
		t.Fatal(err)
	}
	rr := newRunner(t, Config{Targets: targets})
	_, err := rr.Restore(testCtx(t), RestoreOptions{Identity: n.identity, Dir: filepath.Join(t.TempDir(), "r")})
	if err == nil {
		t.Fatal("restored without a key store")
	}
	if v, err := rr.Verify(testCtx(t), "", n.identity); err == nil || v.OK {
		t.Fatalf("verify without a key store: %+v, %v", v, err)
	}

	// Anyone may encrypt to the backup's public key: a key store without
	// the MAC of the cluster's master key is refused.
	clusterID, _ := n.c.ClusterID(testCtx(t))
	rcpt, err := ParseRecipient(mustRecipient(t, n))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(keyStoreFile{Format: keyStoreFormat, ClusterID: clusterID, Written: time.Now(),
		Prefix: directory.KeyStorePrefix, Entries: map[string][]byte{directory.KeyStorePrefix + "x": {1}}, MAC: "00"})
	forged := filepath.Join(t.TempDir(), "forged.age")
	size, _, err := sealTo(forged, rcpt, func(w io.Writer) error { _, err := w.Write(body); return err })
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(forged)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := targets[0].Put(testCtx(t), KeyStoreObject, f, size); err != nil {
		t.Fatal(err)
	}
	key := n.c.BackupManifestKey()
	ra := newRunner(t, Config{Targets: targets, ManifestKey: &key})
	if _, err := ra.Restore(testCtx(t), RestoreOptions{Identity: n.identity, Dir: filepath.Join(t.TempDir(), "r2")}); err == nil || !strings.Contains(err.Error(), "not authentic") {
		t.Fatalf("restore with a forged key store: %v", err)
	}
}

func readObject(t *testing.T, tg Target, key string) []byte {
	t.Helper()
	rc, err := tg.Get(testCtx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
