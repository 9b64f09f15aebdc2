package directory_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestRoutesTo: the aliases (direct targets and through other aliases)
// and catch-alls that deliver to a user are listed, sorted, with no other
// user's address; one that stops delivering to the user drops out.
func TestRoutesTo(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 1, Replicas: 1})
	ada, bob, cyd := "ada@example.test", "bob@example.test", "cyd@other.test"
	for _, u := range []string{ada, bob, cyd} {
		c.AddUser(u, aliasTestPassword)
	}
	ctx := testCtx(t)
	d := c.Nodes[0].Directory()
	// In order: an alias's targets must exist when it is added.
	for _, a := range []struct {
		addr    string
		targets []string
	}{
		{"team@example.test", []string{ada, bob}},
		{"all@other.test", []string{"team@example.test", cyd}},
		{"solo@example.test", []string{bob}},
	} {
		if _, err := d.AddAlias(ctx, a.addr, a.targets); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetCatchAll(ctx, "example.test", ada); err != nil {
		t.Fatal(err)
	}
	if err := d.SetCatchAll(ctx, "other.test", bob); err != nil {
		t.Fatal(err)
	}

	want := map[string][]directory.Route{
		ada: {
			{Address: "@example.test", CatchAll: true, Direct: true},
			{Address: "team@example.test", Direct: true},
			{Address: "all@other.test"},
		},
		bob: {
			{Address: "solo@example.test", Direct: true},
			{Address: "team@example.test", Direct: true},
			{Address: "@other.test", CatchAll: true, Direct: true},
			{Address: "all@other.test"},
		},
		cyd: {{Address: "all@other.test", Direct: true}},
	}
	for user, w := range want {
		got, err := d.RoutesTo(ctx, user)
		if err != nil || !reflect.DeepEqual(got, w) {
			t.Errorf("RoutesTo(%s) = %+v, %v; want %+v", user, got, err, w)
		}
	}

	// Taking ada out of team also takes her out of all@; the catch-all
	// off leaves her with none.
	if err := d.DeleteAlias(ctx, "team@example.test", []string{ada}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetCatchAll(ctx, "example.test", ""); err != nil {
		t.Fatal(err)
	}
	if got, err := d.RoutesTo(ctx, "ADA@example.test"); err != nil || len(got) != 0 {
		t.Errorf("RoutesTo(ada) after the changes = %+v, %v; want none", got, err)
	}
	if _, err := d.RoutesTo(ctx, "nobody@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("RoutesTo(unknown user) error = %v, want ErrNoSuchUser", err)
	}
}
