package directory_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const aliasTestPassword = "password-1"

// deliverVia delivers a message marked with id through node n's store,
// as the SMTP frontend does after RCPT and DATA.
func deliverVia(t *testing.T, n *clustertest.Node, id string, rcpts ...string) {
	t.Helper()
	ctx := testCtx(t)
	for _, r := range rcpts {
		if err := n.Store().LookupRecipient(ctx, r); err != nil {
			t.Fatalf("RCPT %s via %s: %v", r, n.ID, err)
		}
	}
	msg := "Message-ID: <" + id + "@test>\r\nSubject: " + id + "\r\n\r\nbody\r\n"
	if err := n.Store().Deliver(ctx, schema.Delivery{From: "sender@remote.test", Recipients: rcpts, Message: []byte(msg)}); err != nil {
		t.Fatalf("deliver %s to %v via %s: %v", id, rcpts, n.ID, err)
	}
}

// copies counts the messages marked with id in a user's INBOX, read
// through node n.
func copies(t *testing.T, n *clustertest.Node, addr, id string) int {
	t.Helper()
	ctx := testCtx(t)
	a, err := n.Store().Authenticate(ctx, schema.Credentials{Username: addr, Password: aliasTestPassword})
	if err != nil {
		t.Fatalf("login %s via %s: %v", addr, n.ID, err)
	}
	defer a.Close()
	inbox, err := a.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := a.Snapshot(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, m := range snap.Messages {
		h, err := a.Header(ctx, m.Blob)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(h), "<"+id+"@test>") {
			found++
		}
	}
	return found
}

// wantCopies checks how many copies of message id each user has.
func wantCopies(t *testing.T, n *clustertest.Node, id string, want map[string]int) {
	t.Helper()
	for addr, w := range want {
		if got := copies(t, n, addr, id); got != w {
			t.Errorf("%s: %s has %d copies, want %d", id, addr, got, w)
		}
	}
}

// TestAliasDeliveryAcrossNodes: aliases added through one node deliver
// through the others at once (no waiting for replication: a miss catches
// up with the meta leader), one copy per user: an alias of two users, an
// alias and one of its users both as recipients, an alias naming an
// alias and a user of another domain, plus-addresses of an alias; and a
// removed target or alias stops receiving.
func TestAliasDeliveryAcrossNodes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	ada, bob, cyd := "ada@example.test", "bob@example.test", "cyd@other.test"
	for _, u := range []string{ada, bob, cyd} {
		c.AddUser(u, aliasTestPassword)
	}
	ctx := testCtx(t)
	a, b, n2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	got, err := a.Directory().AddAlias(ctx, "Team@Example.test", []string{ada, " BOB@example.test", ada})
	if err != nil {
		t.Fatal(err)
	}
	if want := (directory.Alias{Address: "team@example.test", Targets: []string{ada, bob}}); !reflect.DeepEqual(got, want) {
		t.Fatalf("AddAlias = %+v, want %+v", got, want)
	}
	deliverVia(t, b, "m1", "team@example.test")
	wantCopies(t, b, "m1", map[string]int{ada: 1, bob: 1, cyd: 0})

	deliverVia(t, b, "m2", "team@example.test", ada, "ada+lists@example.test")
	wantCopies(t, n2, "m2", map[string]int{ada: 1, bob: 1})
	// The same with one user only (its shard alone: no spool).
	if _, err := a.Directory().AddAlias(ctx, "hostmaster@example.test", []string{ada}); err != nil {
		t.Fatal(err)
	}
	deliverVia(t, b, "m2b", "hostmaster@example.test", ada, "ada+x@example.test", "hostmaster+y@example.test")
	wantCopies(t, n2, "m2b", map[string]int{ada: 1, bob: 0})

	if _, err := a.Directory().AddAlias(ctx, "all@example.test", []string{"team@example.test", cyd}); err != nil {
		t.Fatal(err)
	}
	deliverVia(t, n2, "m3", "all@example.test", "team+x@example.test", bob)
	wantCopies(t, b, "m3", map[string]int{ada: 1, bob: 1, cyd: 1})

	// An alias of one user resolves to it alone; of several, only as a
	// list.
	if _, err := a.Directory().AddAlias(ctx, "postmaster@other.test", []string{cyd}); err != nil {
		t.Fatal(err)
	}
	if u, err := b.Directory().ResolveRecipient(ctx, "postmaster@other.test"); err != nil || u.Address != cyd {
		t.Fatalf("ResolveRecipient(postmaster) = %v, %v; want %s", u, err, cyd)
	}
	if _, err := b.Directory().ResolveRecipient(ctx, "team@example.test"); !errors.Is(err, directory.ErrSeveralUsers) {
		t.Fatalf("ResolveRecipient(team) error = %v, want ErrSeveralUsers", err)
	}

	// Adding to an existing alias keeps its targets.
	if got, err := a.Directory().AddAlias(ctx, "postmaster@other.test", []string{ada}); err != nil || len(got.Targets) != 2 {
		t.Fatalf("extend alias = %+v, %v; want two targets", got, err)
	}

	// Removing a target through another node, then the alias: obeyed at
	// once by the node the change went through, and by the others as
	// soon as their replica has it (a hit is not checked with the meta
	// leader, as for a deleted user).
	if err := b.Directory().DeleteAlias(ctx, "team@example.test", []string{bob}); err != nil {
		t.Fatal(err)
	}
	deliverVia(t, b, "m4", "team@example.test")
	wantCopies(t, a, "m4", map[string]int{ada: 1, bob: 0})
	if err := n2.Directory().DeleteAlias(ctx, "team@example.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := n2.Store().LookupRecipient(ctx, "team@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("deleted alias via %s: LookupRecipient = %v, want ErrNoSuchUser", n2.ID, err)
	}
	for _, n := range c.Nodes {
		c.Eventually(10*time.Second, "deleted alias refused by "+n.ID, func() error {
			if err := n.Store().LookupRecipient(ctx, "team@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
				return fmt.Errorf("LookupRecipient = %v, want ErrNoSuchUser", err)
			}
			return nil
		})
	}
	// all@ still reaches cyd, and nobody through the deleted team@.
	deliverVia(t, a, "m5", "all@example.test")
	wantCopies(t, a, "m5", map[string]int{ada: 0, bob: 0, cyd: 1})
	if err := a.Directory().DeleteAlias(ctx, "team@example.test", nil); !errors.Is(err, directory.ErrNoSuchAlias) {
		t.Errorf("delete a deleted alias: %v, want ErrNoSuchAlias", err)
	}

	list, err := n2.Directory().Aliases(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []directory.Alias{
		{Address: "all@example.test", Targets: []string{"team@example.test", cyd}},
		{Address: "hostmaster@example.test", Targets: []string{ada}},
		{Address: "postmaster@other.test", Targets: []string{cyd, ada}},
	}
	if !reflect.DeepEqual(list, want) {
		t.Errorf("Aliases = %+v, want %+v", list, want)
	}
	if list, err := n2.Directory().Aliases(ctx, "other.test"); err != nil || len(list) != 1 {
		t.Errorf("Aliases(other.test) = %+v, %v; want postmaster only", list, err)
	}
}

// TestCatchAllAndPlusAddressing: a domain's catch-all receives its
// unknown local parts, after users, aliases and plus-addresses of
// either; it is set and switched off through one node and obeyed at once
// by another.
func TestCatchAllAndPlusAddressing(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, Replicas: 2})
	ada, bob, cyd := "ada@example.test", "bob@example.test", "cyd@other.test"
	for _, u := range []string{ada, bob, cyd} {
		c.AddUser(u, aliasTestPassword)
	}
	ctx := testCtx(t)
	a, b := c.Nodes[0], c.Nodes[1]
	if _, err := a.Directory().AddAlias(ctx, "sales@example.test", []string{cyd}); err != nil {
		t.Fatal(err)
	}
	if err := b.Store().LookupRecipient(ctx, "nobody@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Fatalf("no catch-all yet: LookupRecipient = %v, want ErrNoSuchUser", err)
	}
	if err := a.Directory().SetCatchAll(ctx, "Example.test", ada); err != nil {
		t.Fatal(err)
	}
	deliverVia(t, b, "c1", "nobody@example.test", "other-unknown@example.test")
	wantCopies(t, b, "c1", map[string]int{ada: 1, bob: 0, cyd: 0})
	deliverVia(t, b, "c2", "bob+news@example.test")
	wantCopies(t, b, "c2", map[string]int{ada: 0, bob: 1})
	deliverVia(t, b, "c3", "sales+eu@example.test")
	wantCopies(t, b, "c3", map[string]int{ada: 0, cyd: 1})
	// The catch-all is per domain.
	if err := b.Store().LookupRecipient(ctx, "nobody@other.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("other domain: LookupRecipient = %v, want ErrNoSuchUser", err)
	}
	// A user created later takes its address from the catch-all.
	c.AddUser("dan@example.test", aliasTestPassword)
	deliverVia(t, b, "c4", "dan@example.test")
	wantCopies(t, b, "c4", map[string]int{ada: 0, "dan@example.test": 1})

	list, err := b.Directory().Aliases(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []directory.Alias{
		{Address: "@example.test", Targets: []string{ada}, CatchAll: true},
		{Address: "sales@example.test", Targets: []string{cyd}},
	}
	if !reflect.DeepEqual(list, want) {
		t.Errorf("Aliases = %+v, want %+v", list, want)
	}

	for _, bad := range []struct {
		target string
		want   error
	}{
		{"someone@gmail.test", directory.ErrNeedsOutbound},
		{"nobody@example.test", schema.ErrNoSuchUser},
		{"sales@example.test", schema.ErrNoSuchUser}, // an alias, not a user
		{"not an address", schema.ErrInvalid},
	} {
		if err := a.Directory().SetCatchAll(ctx, "example.test", bad.target); !errors.Is(err, bad.want) {
			t.Errorf("SetCatchAll(%q) = %v, want %v", bad.target, err, bad.want)
		}
	}
	if err := a.Directory().SetCatchAll(ctx, "unknown.test", ada); !errors.Is(err, schema.ErrNoSuchDomain) {
		t.Errorf("SetCatchAll on an unknown domain = %v, want ErrNoSuchDomain", err)
	}

	if err := a.Directory().SetCatchAll(ctx, "example.test", ""); err != nil {
		t.Fatal(err)
	}
	if err := b.Store().LookupRecipient(ctx, "nobody@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("catch-all off: LookupRecipient = %v, want ErrNoSuchUser", err)
	}
	if err := b.Store().LookupRecipient(ctx, "bob+x@example.test"); err != nil {
		t.Errorf("plus-address with the catch-all off: %v", err)
	}
}

// TestAliasRefusals: what an alias may not be or name, and that a user
// may not be created over an alias.
func TestAliasRefusals(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Replicas: 1})
	ada := "ada@example.test"
	c.AddUser(ada, aliasTestPassword)
	c.AddUser("cyd@other.test", aliasTestPassword)
	ctx := testCtx(t)
	d := c.Nodes[0].Directory()

	add := func(alias string, targets ...string) error {
		_, err := d.AddAlias(ctx, alias, targets)
		return err
	}
	// A chain a1 -> a2 -> ... -> a5 -> ada: five aliases, the limit.
	if err := add("a5@example.test", ada); err != nil {
		t.Fatal(err)
	}
	for i := 4; i >= 1; i-- {
		if err := add(fmt.Sprintf("a%d@example.test", i), fmt.Sprintf("a%d@example.test", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := add("team@example.test", ada); err != nil {
		t.Fatal(err)
	}
	var manyForwards []string
	for i := range directory.MaxForwardTargets + 1 {
		manyForwards = append(manyForwards, fmt.Sprintf("f%d@gmail.test", i))
	}
	for _, tc := range []struct {
		name    string
		alias   string
		targets []string
		want    error
	}{
		{"shadows a user", ada, []string{"cyd@other.test"}, schema.ErrUserExists},
		{"too many forwards", "fwd@example.test", manyForwards, schema.ErrInvalid},
		{"unknown local target", "fwd@example.test", []string{"nobody@example.test"}, schema.ErrNoSuchUser},
		{"itself", "self@example.test", []string{"self@example.test"}, schema.ErrInvalid},
		{"loop", "a5@example.test", []string{"a1@example.test"}, schema.ErrInvalid},
		{"short loop", "a5@example.test", []string{"a4@example.test"}, schema.ErrInvalid},
		{"six deep from above", "team@example.test", []string{"a1@example.test"}, schema.ErrInvalid},
		{"six deep from below", "a0@example.test", []string{"a1@example.test"}, schema.ErrInvalid},
		{"six deep below the end", "a5@example.test", []string{"team@example.test"}, schema.ErrInvalid},
		{"no target", "fwd@example.test", nil, schema.ErrInvalid},
		{"bad target", "fwd@example.test", []string{"no at sign"}, schema.ErrInvalid},
		{"bad alias", "no at sign", []string{ada}, schema.ErrInvalid},
		{"unknown domain", "x@unknown.test", []string{ada}, schema.ErrNoSuchDomain},
	} {
		err := add(tc.alias, tc.targets...)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: AddAlias(%s, %v) = %v, want %v", tc.name, tc.alias, tc.targets, err, tc.want)
		}
	}
	// A refused change leaves the alias as it was.
	if u, err := d.ResolveRecipient(ctx, "a5@example.test"); err != nil || u.Address != ada {
		t.Errorf("a5 after refused changes: %v, %v", u, err)
	}
	if err := d.AddUser(ctx, "team@example.test", "password-2"); !errors.Is(err, schema.ErrUserExists) {
		t.Errorf("AddUser over an alias = %v, want ErrUserExists", err)
	}
	// The chain at the limit delivers.
	deliverVia(t, c.Nodes[0], "deep", "a1@example.test")
	wantCopies(t, c.Nodes[0], "deep", map[string]int{ada: 1})

	// A deleted domain takes its aliases along.
	c.AddUser("eve@gone.test", aliasTestPassword)
	if err := add("x@gone.test", "eve@gone.test"); err != nil {
		t.Fatal(err)
	}
	if err := d.SetCatchAll(ctx, "gone.test", "eve@gone.test"); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteUser(ctx, "eve@gone.test"); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteDomain(ctx, "gone.test"); err != nil {
		t.Fatal(err)
	}
	all, err := d.Aliases(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		if strings.HasSuffix(a.Address, "@gone.test") {
			t.Errorf("alias %+v outlived its domain", a)
		}
	}
	if err := d.AddDomain(ctx, "gone.test", "", ""); err != nil {
		t.Fatal(err)
	}
	if list, err := d.Aliases(ctx, "gone.test"); err != nil || len(list) != 0 {
		t.Errorf("aliases of a domain deleted and added again: %+v, %v", list, err)
	}
}

// TestAliasNamesNotStoredInClear: no file of any node holds an alias's
// address or its targets: alias records are sealed and found by a keyed
// hash, like users.
func TestAliasNamesNotStoredInClear(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, Replicas: 2})
	target := "zq7target@example.test"
	c.AddUser(target, aliasTestPassword)
	ctx := testCtx(t)
	canary := "canary" + strings.ToLower(schema.NewID().String()[:12])
	if _, err := c.Nodes[0].Directory().AddAlias(ctx, canary+"@example.test", []string{target}); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[0].Directory().SetCatchAll(ctx, "example.test", target); err != nil {
		t.Fatal(err)
	}
	deliverVia(t, c.Nodes[1], "clear", canary+"@example.test")
	for _, n := range c.Nodes {
		err := filepath.WalkDir(n.Dir, func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if e.IsDir() || e.Type()&fs.ModeSocket != 0 {
				return nil
			}
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, needle := range []string{canary, "zq7target"} {
				if bytes.Contains(b, []byte(needle)) {
					t.Errorf("%s holds %q in the clear", path, needle)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
