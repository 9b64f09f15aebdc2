package directory_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestAdminTokensAcrossNodes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	ctx := testCtx(t)
	n0, n1 := c.Nodes[0], c.Nodes[1]

	tok, err := n0.Directory().AddAdminToken(ctx, "ops-laptop")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, directory.AdminTokenPrefix) || len(tok) < 40 {
		t.Fatalf("token %q: want %s and 256 random bits", tok, directory.AdminTokenPrefix)
	}
	if _, err := n1.Directory().AddAdminToken(ctx, "ops-laptop"); !errors.Is(err, directory.ErrAdminTokenExists) {
		t.Errorf("second token of one name: %v, want ErrAdminTokenExists", err)
	}
	for _, bad := range []string{"", "has space", "a/b", strings.Repeat("x", 65)} {
		if _, err := n0.Directory().AddAdminToken(ctx, bad); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("token name %q: %v, want ErrInvalid", bad, err)
		}
	}
	c.Eventually(30*time.Second, "token known on node 1", func() error {
		name, ok, err := n1.Directory().CheckAdminToken(tok)
		if err != nil || !ok || name != "ops-laptop" {
			return fmt.Errorf("check: %q %v %v", name, ok, err)
		}
		return nil
	})
	for _, bad := range []string{"", tok[:len(tok)-1], tok + "x", strings.ToUpper(tok), "mct_" + strings.Repeat("A", 200)} {
		if _, ok, err := n1.Directory().CheckAdminToken(bad); ok || err != nil {
			t.Errorf("token %q accepted (%v, %v)", bad, ok, err)
		}
	}
	list, err := n1.Directory().AdminTokens(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "ops-laptop" || list[0].Created.IsZero() {
		t.Fatalf("tokens: %+v, %v", list, err)
	}

	if err := n1.Directory().RevokeAdminToken(ctx, "ops-laptop"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Directory().RevokeAdminToken(ctx, "ops-laptop"); !errors.Is(err, directory.ErrNoSuchAdminToken) {
		t.Errorf("revoke twice: %v, want ErrNoSuchAdminToken", err)
	}
	c.Eventually(30*time.Second, "token revoked on node 0", func() error {
		if _, ok, _ := n0.Directory().CheckAdminToken(tok); ok {
			return errors.New("still accepted")
		}
		return nil
	})
}
