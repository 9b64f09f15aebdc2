package mailstore_test

import (
	"testing"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// TestRecentClaimsAcrossNodes: two sessions of one user on two nodes
// claim \Recent through the shard's leader, so exactly one of them gets
// each new message (protocoltest.CheckRecentClaims).
func TestRecentClaimsAcrossNodes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, MailShards: 1, Replicas: 2})
	c.AddUser("recent@example.test", pw)
	a := c.Nodes[0].Login("recent@example.test", pw)
	b := c.Nodes[1].Login("recent@example.test", pw)
	inbox := mailbox(t, a, "INBOX")
	protocoltest.CheckRecentClaims(t, a, b, inbox.ID)
}
