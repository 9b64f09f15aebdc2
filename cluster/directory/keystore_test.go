package directory_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestEraseUserDestroysKeyStoreEntry: a user in "user" key mode gets a
// key-store entry; deleting the user destroys it, so a copy of the user's
// record from before the deletion (what a restored backup holds) no
// longer opens the user's key, while the entry put back would.
func TestEraseUserDestroysKeyStoreEntry(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	c.AddUser("kim@example.test", "kim-password")
	c.AddUser("lou@example.test", "lou-password")
	ctx := testCtx(t)
	node := c.Nodes[0]
	d := node.Directory()
	if err := d.RecordLogin(ctx, "kim@example.test", directory.LoginRecord{Time: time.Now(), Protocol: "imap", Success: true}); err != nil {
		t.Fatal(err)
	}
	store, err := d.KeyStore(ctx)
	if err != nil || len(store) != 2 {
		t.Fatalf("key store: %d entries, %v; want 2", len(store), err)
	}
	kim, err := d.Authenticate(ctx, schema.Credentials{Username: "kim@example.test", Password: "kim-password"})
	if err != nil {
		t.Fatal(err)
	}
	var old schema.UserRecord
	if err := node.Cluster().ViewMeta(func(r *raftstore.Reader) (err error) { old, err = r.User(kim.ID); return err }); err != nil {
		t.Fatal(err)
	}
	entryKey := directory.KeyStorePrefix + kim.ID.String()
	entry := store[entryKey]

	rep, err := d.EraseUser(ctx, "Kim@Example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !rep.KeyDestroyed || !rep.MailDeleted || rep.KeyMode != directory.KeyModeUser || rep.Removed["login_records"] != 1 || rep.KeyNote != "" {
		t.Fatalf("report %+v", rep)
	}
	if store, _ = d.KeyStore(ctx); len(store) != 1 || store[entryKey] != nil {
		t.Fatalf("key store after the deletion: %d entries", len(store))
	}

	// An old copy of the record comes back, as in a restored backup.
	if _, err := node.Cluster().Apply(ctx, directory.MetaShard, &schema.PutUser{Record: old, Create: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.UserByID(ctx, kim.ID); !errors.Is(err, directory.ErrKeyDestroyed) {
		t.Fatalf("the deleted user's key from an old record: %v, want ErrKeyDestroyed", err)
	}
	if _, err := d.UserByID(ctx, kim.ID); err == nil || strings.Contains(err.Error(), "kim") {
		t.Fatalf("error names the user: %v", err)
	}
	// The entry alone decides: put back, the old record opens again.
	if _, err := node.Cluster().Apply(ctx, directory.MetaShard, &schema.PutSetting{Key: entryKey, Value: entry}); err != nil {
		t.Fatal(err)
	}
	if u, err := d.UserByID(ctx, kim.ID); err != nil || u.Keys == nil {
		t.Fatalf("with the entry back: %v", err)
	}
	if _, err := d.Authenticate(ctx, schema.Credentials{Username: "lou@example.test", Password: "lou-password"}); err != nil {
		t.Fatalf("another user: %v", err)
	}
}

// TestMigrateKeyStore: a user whose key is wrapped under the domain key
// (created before the key store) keeps its mail readable, is moved to a
// key-encryption key of its own by MigrateKeyStore (once), and can then
// be crypto-shredded; a destroyed user is not brought back.
func TestMigrateKeyStore(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	c.AddUser("old@example.test", "old-password")
	c.AddUser("gone@example.test", "gone-password")
	ctx := testCtx(t)
	node := c.Nodes[0]
	d := node.Directory()
	if err := node.Store().Deliver(ctx, schema.Delivery{From: "x@remote.test", Recipients: []string{"old@example.test"},
		Message: []byte("Subject: kept\r\n\r\nbody\r\n")}); err != nil {
		t.Fatal(err)
	}
	gone, err := d.Authenticate(ctx, schema.Credentials{Username: "gone@example.test", Password: "gone-password"})
	if err != nil {
		t.Fatal(err)
	}
	var goneRec schema.UserRecord
	if err := node.Cluster().ViewMeta(func(r *raftstore.Reader) (err error) { goneRec, err = r.User(gone.ID); return err }); err != nil {
		t.Fatal(err)
	}
	if rep, err := d.EraseUser(ctx, "gone@example.test"); err != nil || !rep.KeyDestroyed {
		t.Fatalf("delete: %+v, %v", rep, err)
	}
	if err := directory.MakeLegacyUserKey(ctx, d, "old@example.test"); err != nil {
		t.Fatal(err)
	}
	readInbox := func() int {
		t.Helper()
		a, err := node.Store().Authenticate(ctx, schema.Credentials{Username: "old@example.test", Password: "old-password"})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		inbox, err := a.Mailbox(ctx, schema.InboxName)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := a.Snapshot(ctx, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Messages)
	}
	if n := readInbox(); n != 1 {
		t.Fatalf("legacy user's inbox: %d messages", n)
	}
	if store, _ := d.KeyStore(ctx); len(store) != 0 {
		t.Fatalf("key store of a legacy user: %d entries", len(store))
	}
	// The deleted user's old record comes back, as from a restored backup:
	// it must stay shredded.
	if _, err := node.Cluster().Apply(ctx, directory.MetaShard, &schema.PutUser{Record: goneRec, Create: true}); err != nil {
		t.Fatal(err)
	}
	if moved, err := d.MigrateKeyStore(ctx); err != nil || moved != 1 {
		t.Fatalf("migrate: %d, %v; want 1", moved, err)
	}
	if moved, err := d.MigrateKeyStore(ctx); err != nil || moved != 0 {
		t.Fatalf("migrate again: %d, %v; want 0", moved, err)
	}
	if n := readInbox(); n != 1 {
		t.Fatalf("migrated user's inbox: %d messages", n)
	}
	if store, _ := d.KeyStore(ctx); len(store) != 1 {
		t.Fatalf("key store after the migration: %d entries", len(store))
	}
	if _, err := d.UserByID(ctx, gone.ID); !errors.Is(err, directory.ErrKeyDestroyed) {
		t.Fatalf("the shredded user after the migration: %v", err)
	}
	rep, err := d.EraseUser(ctx, "old@example.test")
	if err != nil || !rep.KeyDestroyed {
		t.Fatalf("delete the migrated user: %+v, %v", rep, err)
	}
}
