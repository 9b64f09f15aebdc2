package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestThreeNodesServeEveryUserFromEveryNode(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	c.AddUser("alice@example.test", "password-1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, n := range c.Nodes {
		err := n.Store().Deliver(ctx, schema.Delivery{From: "bob@example.net", Recipients: []string{"alice@example.test"},
			Message: []byte("Subject: via " + n.ID + "\r\n\r\nhello\r\n")})
		if err != nil {
			t.Fatalf("deliver via %s: %v", n.ID, err)
		}
		for _, reader := range c.Nodes {
			acct := reader.Login("alice@example.test", "password-1")
			inbox, err := acct.Mailbox(ctx, "INBOX")
			if err != nil {
				t.Fatalf("%s: %v", reader.ID, err)
			}
			snap, err := acct.Snapshot(ctx, inbox.ID)
			if err != nil {
				t.Fatalf("%s: %v", reader.ID, err)
			}
			if len(snap.Messages) != i+1 {
				t.Fatalf("after delivery %d via %s, %s sees %d messages", i+1, n.ID, reader.ID, len(snap.Messages))
			}
		}
	}
}
