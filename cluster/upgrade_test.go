package cluster_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestCommandLevelRollingUpgrade: a cluster whose nodes run at an older
// command level writes no form above it, however new the proposer; a
// rolling upgrade brings the new form into use only once the last node
// runs the new level; a node below the cluster's level can neither join
// nor start again (a downgrade).
func TestCommandLevelRollingUpgrade(t *testing.T) {
	const old = schema.LevelAppendClaimsRecent - 1
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, MailShards: 2, CommandLevel: old})
	c.AddUser("uma@example.test", "password-1")
	ctx := testCtx(t)

	// levels reports each running node's view of the cluster's level.
	levels := func() string {
		var out []string
		for _, n := range c.Running() {
			out = append(out, fmt.Sprintf("%s:%d", n.ID, n.Cluster().CommandLevel()))
		}
		return strings.Join(out, " ")
	}
	// appendClaiming appends through node n and reports whether the
	// commit claimed \Recent; a claim reported must be the mailbox's.
	appendClaiming := func(n *clustertest.Node, subject string) bool {
		t.Helper()
		acct := n.Login("uma@example.test", "password-1")
		defer acct.Close()
		inbox, err := acct.Mailbox(ctx, "INBOX")
		if err != nil {
			t.Fatal(err)
		}
		res, err := acct.AppendClaimingRecent(ctx, inbox.ID, []byte("Subject: "+subject+"\r\n\r\nx\r\n"), nil, time.Time{})
		if err != nil {
			t.Fatalf("append through %s: %v", n.ID, err)
		}
		claim, err := acct.ClaimRecent(ctx, inbox.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if res.RecentClaimed && claim != res.UID {
			t.Fatalf("append through %s claimed UID %d, the mailbox's claim is %d", n.ID, res.UID, claim)
		}
		if !res.RecentClaimed && claim >= res.UID {
			t.Fatalf("append through %s claimed nothing, yet the claim is %d (UID %d)", n.ID, claim, res.UID)
		}
		return res.RecentClaimed
	}

	c.Eventually(30*time.Second, "every node at the old level", func() error {
		if got, want := levels(), fmt.Sprintf("n1:%d n2:%d n3:%d", old, old, old); got != want {
			return fmt.Errorf("levels %s, want %s", got, want)
		}
		return nil
	})
	if appendClaiming(c.Nodes[0], "before") {
		t.Fatal("a cluster at the old level claimed \\Recent in an Append")
	}
	// The guard under the store: a new form is refused, not written.
	_, err := c.Nodes[0].Cluster().Apply(ctx, 1, &schema.Append{User: schema.NewID(), Message: schema.NewID(), Blob: schema.NewID(),
		Size: 1, Chunks: [][]byte{{'x'}}, ClaimRecent: true})
	if !errors.Is(err, schema.ErrUnavailable) || !strings.Contains(err.Error(), "command level") {
		t.Fatalf("a form above the cluster's level: %v", err)
	}

	// Upgrade one node after the other; until the last, nothing changes.
	for i, n := range c.Nodes {
		n.Stop()
		n.CommandLevel = 0 // the software's own
		if err := n.Start(); err != nil {
			t.Fatalf("restart %s upgraded: %v", n.ID, err)
		}
		c.WaitConverged(time.Minute)
		if i < len(c.Nodes)-1 {
			if appendClaiming(n, "during") {
				t.Fatalf("claimed with %d of %d nodes upgraded (levels %s)", i+1, len(c.Nodes), levels())
			}
		}
	}
	c.Eventually(30*time.Second, "every node at the new level", func() error {
		want := schema.CommandLevel
		if got := levels(); got != fmt.Sprintf("n1:%d n2:%d n3:%d", want, want, want) {
			return fmt.Errorf("levels %s", got)
		}
		return nil
	})
	for _, n := range c.Nodes {
		if !appendClaiming(n, "after") {
			t.Fatalf("an upgraded cluster did not claim \\Recent in the Append through %s", n.ID)
		}
	}
	st := c.Nodes[0].Cluster().Status()
	for _, ns := range st.Nodes {
		if ns.Commands != schema.CommandLevel {
			t.Errorf("status shows %s at level %d", ns.ID, ns.Commands)
		}
	}

	// A node of the old software can no longer join: it could not apply
	// the log.
	tok, err := c.Nodes[1].Cluster().IssueToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Join(ctx, cluster.JoinRequest{Addr: c.Nodes[0].Addr, Token: tok, DataDir: t.TempDir(),
		NodeID: "n9", Region: "r1", Advertise: "127.0.0.1:1", CommandLevel: old}); err == nil || !strings.Contains(err.Error(), "command level") {
		t.Fatalf("a node of the old level joined: %v", err)
	}
	// Nor can a member go back to it.
	back := c.Nodes[2]
	back.Stop()
	back.CommandLevel = old
	if err := back.Start(); err == nil || !strings.Contains(err.Error(), "command level") {
		t.Fatalf("a downgraded node started: %v", err)
	}
	back.CommandLevel = 0
	if err := back.Start(); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(time.Minute)
}
