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
