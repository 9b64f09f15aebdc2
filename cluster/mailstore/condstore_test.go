package mailstore_test

import (
	"testing"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// TestStoreFlagsIfAcrossNodes: a flag change conditional on MODSEQ
// (STORE UNCHANGEDSINCE) made through one node leaves alone the message
// another node changed meanwhile (protocoltest.CheckStoreFlagsIf).
func TestStoreFlagsIfAcrossNodes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, MailShards: 1, Replicas: 2})
	c.AddUser("condstore@example.test", pw)
	a := c.Nodes[0].Login("condstore@example.test", pw)
	b := c.Nodes[1].Login("condstore@example.test", pw)
	protocoltest.CheckStoreFlagsIf(t, a, b, mailbox(t, a, "INBOX").ID)
}
