package directory_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestLoginHistory: login records are kept per user in time order, read
// through any node, refused for unknown users, and pruned by age and
// with their user.
func TestLoginHistory(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2})
	c.AddUser("ann@example.test", "ann-password")
	c.AddUser("ben@example.test", "ben-password")
	ctx := testCtx(t)
	d0, d1 := c.Nodes[0].Directory(), c.Nodes[1].Directory()
	now := time.Now().UTC()
	rec := func(ago time.Duration, proto string, ok bool) directory.LoginRecord {
		r := directory.LoginRecord{Time: now.Add(-ago), Node: "n", Protocol: proto, Remote: "192.0.2.1", Success: ok}
		if ok {
			r.Credential = "password"
		}
		return r
	}
	for _, r := range []directory.LoginRecord{rec(48*time.Hour, "pop3", true), rec(time.Hour, "imap", false), rec(time.Minute, "imap", true)} {
		if err := d0.RecordLogin(ctx, "Ann@Example.test", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := d0.RecordLogin(ctx, "ben@example.test", rec(time.Minute, "smtp", true)); err != nil {
		t.Fatal(err)
	}
	if err := d0.RecordLogin(ctx, "nobody@example.test", rec(0, "imap", false)); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("record of an unknown user: %v", err)
	}

	got, err := d1.Logins(ctx, "ann@example.test", now.Add(-72*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Protocol != "pop3" || got[1].Success || got[2].Credential != "password" {
		t.Fatalf("ann's logins through node 1: %+v", got)
	}
	if got, _ := d1.Logins(ctx, "ann@example.test", now.Add(-2*time.Hour)); len(got) != 2 {
		t.Errorf("ann's logins of the last two hours: %+v", got)
	}

	if k, err := d0.PruneLogins(ctx, now.Add(-24*time.Hour)); err != nil || k != 1 {
		t.Errorf("prune by age: %d, %v; want 1", k, err)
	}
	if got, _ := d0.Logins(ctx, "ann@example.test", time.Time{}); len(got) != 2 {
		t.Errorf("ann's logins after the prune: %+v", got)
	}
	if err := d0.DeleteUser(ctx, "ben@example.test"); err != nil {
		t.Fatal(err)
	}
	// Deleting the user took its records at once.
	if k, err := d0.PruneLogins(ctx, now.Add(-24*time.Hour)); err != nil || k != 0 {
		t.Errorf("prune after the deletion: %d, %v; want 0", k, err)
	}
	if got, _ := d0.Logins(ctx, "ann@example.test", time.Time{}); len(got) != 2 {
		t.Errorf("ann's logins after ben's went: %+v", got)
	}
}
