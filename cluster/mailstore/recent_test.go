package mailstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
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

// TestRecentClaimFromSnapshot: a claim that starts from the value the
// session's last Snapshot read still gets only what no other session
// claimed since, and a read of the claim is never answered from it.
func TestRecentClaimFromSnapshot(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, MailShards: 1, Replicas: 2})
	c.AddUser("snapclaim@example.test", pw)
	a := c.Nodes[0].Login("snapclaim@example.test", pw)
	b := c.Nodes[1].Login("snapclaim@example.test", pw)
	inbox := mailbox(t, a, "INBOX").ID
	for i := range 3 {
		if _, err := a.Append(ctx(t), inbox, []byte("Subject: m\r\n\r\nbody "+string(rune('a'+i))+"\r\n"), nil, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(acct *mailstore.Account, upTo, want schema.UID) {
		t.Helper()
		if prev, err := acct.ClaimRecent(ctx(t), inbox, upTo); err != nil || prev != want {
			t.Fatalf("ClaimRecent(%d) = %d, %v; want %d", upTo, prev, err, want)
		}
	}
	snapshot := func() {
		t.Helper()
		if _, err := a.Snapshot(ctx(t), inbox); err != nil {
			t.Fatal(err)
		}
	}
	snapshot()     // no claim yet
	claim(b, 2, 0) // b gets 1 and 2 after a's snapshot
	claim(a, 3, 2) // a's start from "no claim" fails its swap; it gets 3 only
	// Covered by the snapshot's claim: answered without a read of its
	// own, so even with its context gone (which fails a read through
	// the leader, on whichever of the two nodes does not lead).
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for _, acct := range []*mailstore.Account{a, b} {
		if _, err := acct.Snapshot(ctx(t), inbox); err != nil {
			t.Fatal(err)
		}
		if prev, err := acct.ClaimRecent(gone, inbox, 2); err != nil || prev != 3 {
			t.Fatalf("ClaimRecent(2) after the snapshot = %d, %v; want 3 without a read", prev, err)
		}
	}
	snapshot() // claim 3
	claim(a, 2, 3)
	snapshot() // claim 3 again
	res, err := b.AppendClaimingRecent(ctx(t), inbox, []byte("Subject: m\r\n\r\nbody d\r\n"), nil, time.Time{})
	if err != nil || !res.RecentClaimed {
		t.Fatalf("AppendClaimingRecent = %+v, %v", res, err)
	}
	claim(a, 0, res.UID) // a read: the claim as it is now, not as the snapshot saw it
}
