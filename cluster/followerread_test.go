package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestFollowerServesTheBlobsItHolds: a node that follows a user's shard
// answers reads of a message's contents (header, body, search record)
// from its own replica once it holds the message, so they work even cut
// off from the leader, while reads of anything that changes still go to
// the leader. A message the replica does not hold yet is asked of the
// leader, never reported missing because the replica lags.
func TestFollowerServesTheBlobsItHolds(t *testing.T) {
	firstLine := func(msg []byte) []byte { return bytes.Clone(msg[:bytes.IndexByte(msg, '\n')+1]) }
	c := clustertest.Start(t, clustertest.Options{RouteTimeout: 2 * time.Second, SearchIndexer: firstLine})
	const user, pass = "fay@example.test", "password-1"
	c.AddUser(user, pass)
	n := shardOf(t, c, user)
	ctx := testCtx(t)

	leader := c.Leader(n)
	if leader == nil {
		t.Fatal("no leader")
	}
	var follower *clustertest.Node
	for _, x := range c.Running() {
		if x != leader {
			follower = x
		}
	}
	if err := deliver(ctx, leader, user, "held"); err != nil {
		t.Fatal(err)
	}
	acct := follower.Login(user, pass)
	msgs := inboxMessages(t, acct)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	held := msgs[0].Blob
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	c.Eventually(time.Minute, "every replica applied the delivery", func() error { return sameApplied(c, n) })

	follower.Partition(true)
	defer follower.Partition(false)
	replicaBefore, leaderBefore := follower.Cluster().BlobReads()
	body, err := acct.Body(ctx, held)
	if err != nil {
		t.Fatalf("body through the cut-off follower: %v", err)
	}
	if !bytes.Contains(body, []byte("Subject: held\r\n")) || !bytes.HasSuffix(body, []byte("\r\n\r\nbody\r\n")) {
		t.Fatalf("body through the cut-off follower: %q", body)
	}
	header, err := acct.Header(ctx, held)
	if err != nil || !bytes.Contains(header, []byte("Subject: held\r\n")) || bytes.Contains(header, []byte("body")) {
		t.Fatalf("header through the cut-off follower: %q, %v", header, err)
	}
	recs, err := acct.SearchRecords(ctx, []schema.ID{held})
	if err != nil || len(recs) != 1 || string(recs[0]) != string(firstLine(body)) {
		t.Fatalf("search record through the cut-off follower: %q, %v; want %q", recs, err, firstLine(body))
	}
	if replica, leader := follower.Cluster().BlobReads(); replica-replicaBefore != 3 || leader != leaderBefore {
		t.Fatalf("reads served by the follower's replica %d, by the leader %d; want 3 and 0", replica-replicaBefore, leader-leaderBefore)
	}
	// What changes (the mailbox's messages and flags) is read on the
	// leader only, which the follower cannot reach.
	if _, err := acct.Snapshot(ctx, inbox.ID); !errors.Is(err, schema.ErrUnavailable) {
		t.Fatalf("mailbox snapshot through the cut-off follower: %v, want unavailable", err)
	}

	// A message delivered meanwhile is not on the follower's replica: its
	// reads need the leader, and fail as unavailable, not as missing.
	if err := deliver(ctx, leader, user, "later"); err != nil {
		t.Fatal(err)
	}
	var later schema.ID
	for _, m := range inboxMessages(t, leader.Login(user, pass)) {
		if m.Blob != held {
			later = m.Blob
		}
	}
	if later == (schema.ID{}) {
		t.Fatal("the second delivery is not in the leader's INBOX")
	}
	for _, read := range []func(context.Context) error{
		func(ctx context.Context) error { _, err := acct.Body(ctx, later); return err },
		func(ctx context.Context) error { _, err := acct.Header(ctx, later); return err },
		func(ctx context.Context) error {
			_, err := acct.SearchRecords(ctx, []schema.ID{held, later})
			return err
		},
	} {
		if err := read(ctx); !errors.Is(err, schema.ErrUnavailable) {
			t.Fatalf("read of a message the cut-off follower lacks: %v, want unavailable", err)
		}
	}

	if _, leader := follower.Cluster().BlobReads(); leader-leaderBefore != 3 {
		t.Fatalf("%d reads sent to the leader, want 3", leader-leaderBefore)
	}

	follower.Partition(false)
	c.Eventually(time.Minute, "the healed follower reads the later message", func() error {
		body, err := acct.Body(ctx, later)
		if err == nil && !bytes.Contains(body, []byte("Subject: later\r\n")) {
			t.Fatalf("later message through the healed follower: %q", body)
		}
		return err
	})
}
