package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/clustertest"
)

// replicasOn counts the mail shards whose voting replicas include node.
func replicasOn(st cluster.Status, node string) int {
	n := 0
	for _, s := range st.Shards {
		for _, r := range s.Replicas {
			if s.Shard != 0 && r.Node == node && r.Voter {
				n++
			}
		}
	}
	return n
}

// TestJoinRemoveAndRepair: a fourth node joins with a one-time token;
// removing a node that holds replicas rebuilds them on the others, every
// shard is back to three voters, the removed node's certificate is
// refused, and a spent token cannot join another node.
func TestJoinRemoveAndRepair(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, MailShards: 4})
	c.AddUser("dee@example.test", "password-1")
	ctx := testCtx(t)
	tok, err := c.Nodes[1].Cluster().IssueToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	n4 := c.AddNodeWithToken("r1", tok)
	c.WaitConverged(time.Minute)
	// The token is spent.
	if _, err := cluster.Join(ctx, cluster.JoinRequest{Addr: c.Nodes[0].Addr, Token: tok, DataDir: t.TempDir(),
		NodeID: "n9", Region: "r1", Advertise: "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "used") {
		t.Fatalf("joining with a spent token: %v", err)
	}
	// A made-up token is refused.
	if _, err := cluster.Join(ctx, cluster.JoinRequest{Addr: c.Nodes[0].Addr, Token: "MCJ1.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		DataDir: t.TempDir(), NodeID: "n9", Region: "r1", Advertise: "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "invalid join token") {
		t.Fatalf("joining with a wrong token: %v", err)
	}

	victim := c.Nodes[1]
	// A member's id is refused, with what to do instead, and the token is
	// not spent on the refusal.
	tok2, err := c.Nodes[0].Cluster().IssueToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	joinAs := func(id, token string) error {
		_, err := cluster.Join(ctx, cluster.JoinRequest{Addr: c.Nodes[0].Addr, Token: token, DataDir: t.TempDir(),
			NodeID: id, Region: "r9", Advertise: "127.0.0.1:1"})
		return err
	}
	for i := 0; i < 2; i++ {
		if err := joinAs(victim.ID, tok2); err == nil || !strings.Contains(err.Error(), "is taken by a member of this cluster") ||
			!strings.Contains(err.Error(), "mailnode cluster remove "+victim.ID) {
			t.Fatalf("joining under a member's id (attempt %d): %v", i+1, err)
		}
	}
	if got := replicasOn(c.Nodes[0].Cluster().Status(), victim.ID); got == 0 {
		t.Fatalf("%s holds no replica to repair", victim.ID)
	}
	if err := c.Nodes[0].Cluster().RemoveNode(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}
	c.Eventually(2*time.Minute, "replicas rebuilt without the removed node", func() error {
		st := c.Nodes[0].Cluster().Status()
		for _, s := range st.Shards {
			voters := 0
			for _, r := range s.Replicas {
				if r.Node == victim.ID {
					return fmt.Errorf("shard %d still has a replica on %s", s.Shard, victim.ID)
				}
				if r.Voter {
					voters++
				}
			}
			if s.Shard != 0 && voters != 3 {
				return fmt.Errorf("shard %d has %d voters: %+v", s.Shard, voters, s)
			}
		}
		for _, node := range st.Nodes {
			if node.ID == victim.ID && node.Health != "removed" {
				return fmt.Errorf("%s shows as %s", victim.ID, node.Health)
			}
		}
		return nil
	})
	if replicasOn(c.Nodes[0].Cluster().Status(), n4.ID) == 0 {
		t.Fatal("the new node took no replica")
	}
	// The removed node is refused on the cluster port.
	c.Eventually(30*time.Second, "removed node refused", func() error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := victim.Cluster().Ping(pctx, c.Nodes[0].Addr)
		if err == nil {
			return errors.New("a removed node still gets answers")
		}
		return nil
	})
	// Its id cannot join again.
	if err := joinAs(victim.ID, tok2); err == nil || !strings.Contains(err.Error(), "was removed from this cluster and cannot join again") {
		t.Fatalf("joining under a removed node's id: %v", err)
	}
	// Mail still flows, through the new node too.
	if err := deliver(ctx, n4, "dee@example.test", "after repair"); err != nil {
		t.Fatal(err)
	}
	// The removed node deleted its mail replicas once they left their
	// groups.
	c.Eventually(time.Minute, "removed node dropped its replicas", func() error {
		if n := len(victim.Cluster().Shards()); n > 1 {
			return fmt.Errorf("%s keeps %d replicas", victim.ID, n)
		}
		return nil
	})
}

// TestDeadNodeIsReplaced: a node that stays unreachable longer than
// DeadAfter has its replicas rebuilt on a spare node, and the shards keep
// three voters.
func TestDeadNodeIsReplaced(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 4, MailShards: 4, DeadAfter: 3 * time.Second})
	c.AddUser("eve@example.test", "password-1")
	var victim *clustertest.Node
	for _, n := range c.Nodes[1:] {
		if replicasOn(c.Nodes[0].Cluster().Status(), n.ID) > 0 && !n.Cluster().LeadsShard(0) {
			victim = n
			break
		}
	}
	if victim == nil {
		t.Fatal("no node to kill")
	}
	victim.Kill()
	live := c.Running()
	c.Eventually(2*time.Minute, "dead node's replicas rebuilt", func() error {
		st := live[0].Cluster().Status()
		for _, s := range st.Shards[1:] {
			voters := 0
			for _, r := range s.Replicas {
				if r.Node == victim.ID {
					return fmt.Errorf("shard %d still counts %s", s.Shard, victim.ID)
				}
				if r.Voter {
					voters++
				}
			}
			if voters != 3 {
				return fmt.Errorf("shard %d has %d voters", s.Shard, voters)
			}
		}
		for _, node := range st.Nodes {
			if node.ID == victim.ID && node.Health != "dead" {
				return fmt.Errorf("%s shows as %s", victim.ID, node.Health)
			}
		}
		return nil
	})
	if err := deliver(testCtx(t), live[0], "eve@example.test", "after repair"); err != nil {
		t.Fatal(err)
	}
}
