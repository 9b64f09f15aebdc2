package directory_test

import (
	"testing"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
)

// TestSendsAs: a user sends as their address, aliases that reach them
// (through another alias too), and plus-addresses of both, asked
// through a node other than the one the alias was added on; never as
// another user, an alias without them, or what the catch-all gives them.
func TestSendsAs(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, Replicas: 2})
	ada, bob := "ada@example.test", "bob@example.test"
	c.AddUser(ada, aliasTestPassword)
	c.AddUser(bob, aliasTestPassword)
	ctx := testCtx(t)
	a, b := c.Nodes[0], c.Nodes[1]
	// In order: an alias's targets must exist when it is added.
	for _, al := range []struct {
		alias   string
		targets []string
	}{
		{"sales@example.test", []string{ada}},
		{"team@example.test", []string{"sales@example.test", bob}},
		{"bobs@example.test", []string{bob}},
	} {
		if _, err := a.Directory().AddAlias(ctx, al.alias, al.targets); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Directory().SetCatchAll(ctx, "example.test", ada); err != nil {
		t.Fatal(err)
	}
	u, err := b.Directory().UserByAddress(ctx, ada)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"ada@example.test":       true,
		"ADA@Example.test":       true,
		"ada+lists@example.test": true,
		"sales@example.test":     true,
		"sales+eu@example.test":  true,
		"team@example.test":      true,
		"bob@example.test":       false,
		"bob+x@example.test":     false,
		"bobs@example.test":      false,
		"unknown@example.test":   false, // the catch-all's, not hers
		"ada@other.test":         false,
	} {
		got, err := b.Directory().SendsAs(ctx, u.ID, addr)
		if err != nil {
			t.Fatalf("SendsAs %s: %v", addr, err)
		}
		if got != want {
			t.Errorf("SendsAs %s = %v, want %v", addr, got, want)
		}
	}
}
