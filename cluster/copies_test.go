package cluster_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/statedamage"
)

// TestDamagedCopyIsReadElsewhereAndRepaired changes a message's header,
// body and search record in one replica's state file, as a failing disk
// does (bbolt checks no checksum of what it stores, so the replica
// serves the bytes as they are). A session on that node, which reads a
// message from its own replica, must still get the message: its copy
// does not open under the user's key, so another replica's is read. The
// damaged pieces must then be put back on that replica through the
// shard's log, counted there, and nowhere else.
func TestDamagedCopyIsReadElsewhereAndRepaired(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2,
		SearchIndexer: func(msg []byte) []byte { return append([]byte("words of "), msg[:min(len(msg), 64)]...) }})
	const user = "copies@example.test"
	c.AddUser(user, "password-1")
	ctx := testCtx(t)
	shard := shardOf(t, c, user)
	leader := c.WaitLeader(shard, 30*time.Second)
	victim := otherThan(c, leader)
	u, err := leader.Directory().ResolveRecipient(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if err := deliverRandom(leader, user, 1); err != nil {
		t.Fatal(err)
	}
	acct := leader.Login(user, "password-1")
	msgs := inboxMessages(t, acct)
	if len(msgs) != 1 {
		t.Fatalf("%d messages in the INBOX", len(msgs))
	}
	blob := msgs[0].Blob
	header, err := acct.Header(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	body, err := acct.Body(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	records, err := acct.SearchRecords(ctx, []schema.ID{blob})
	if err != nil || len(records) != 1 || records[0] == nil {
		t.Fatalf("search records %q, %v", records, err)
	}
	caughtUp(t, c, victim, shard)

	// Chunk 0 is the header section, chunk 1 the body.
	victim.Stop()
	path := filepath.Join(raftstore.ReplicaDir(victim.Dir, shard), "state.db")
	for _, damage := range []func() error{
		func() error { return statedamage.Chunk(path, u.ID, blob, 0) },
		func() error { return statedamage.Chunk(path, u.ID, blob, 1) },
		func() error { return statedamage.SearchRecord(path, u.ID, blob) },
	} {
		if err := damage(); err != nil {
			t.Fatal(err)
		}
	}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	caughtUp(t, c, victim, shard)
	held := func(q raftstore.Query) *raftstore.QueryResult {
		t.Helper()
		q.User = u.ID
		res, ok, err := replicaOf(victim, shard).QueryHeld(q)
		if err != nil || !ok {
			t.Fatalf("the victim's replica: held %v, %v", ok, err)
		}
		return res
	}
	lres, ok, err := replicaOf(leader, shard).QueryHeld(raftstore.Query{Kind: raftstore.QueryBody, User: u.ID, Blob: blob})
	if err != nil || !ok {
		t.Fatalf("the leader's replica: held %v, %v", ok, err)
	}
	if damaged := held(raftstore.Query{Kind: raftstore.QueryBody, Blob: blob}); bytes.Equal(damaged.Chunks[1], lres.Chunks[1]) {
		t.Fatal("the damage did not take")
	}

	// Read through the victim's node, whose replica holds the blob.
	vacct := victim.Login(user, "password-1")
	if got, err := vacct.Header(ctx, blob); err != nil || !bytes.Equal(got, header) {
		t.Fatalf("header through the damaged replica's node: %v (%d bytes, want %d)", err, len(got), len(header))
	}
	if got, err := vacct.Body(ctx, blob); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("message through the damaged replica's node: %v (%d bytes, want %d)", err, len(got), len(body))
	}
	if got, err := vacct.SearchRecords(ctx, []schema.ID{blob}); err != nil || len(got) != 1 || !bytes.Equal(got[0], records[0]) {
		t.Fatalf("search record through the damaged replica's node: %q, %v", got, err)
	}

	// The victim's copies are the leader's again, and only its replica
	// counted repairs.
	c.Eventually(30*time.Second, "the damaged replica's pieces put back", func() error {
		res := held(raftstore.Query{Kind: raftstore.QueryBody, Blob: blob})
		for i := range lres.Chunks {
			if !bytes.Equal(res.Chunks[i], lres.Chunks[i]) {
				return fmt.Errorf("chunk %d differs from the leader's", i)
			}
		}
		rec := held(raftstore.Query{Kind: raftstore.QuerySearchRecords, Blobs: []schema.ID{blob}})
		lrec, _, _ := replicaOf(leader, shard).QueryHeld(raftstore.Query{Kind: raftstore.QuerySearchRecords, User: u.ID, Blobs: []schema.ID{blob}})
		if !bytes.Equal(rec.Chunks[0], lrec.Chunks[0]) {
			return errors.New("the search record differs from the leader's")
		}
		return nil
	})
	for _, n := range c.Running() {
		want := uint64(0)
		if n == victim {
			want = 3
		}
		if got := replicaOf(n, shard).Status().Repaired; got != want {
			t.Errorf("%s counts %d repaired pieces, want %d", n.ID, got, want)
		}
	}
}

// caughtUp waits until n's replica of shard is open, sound and has
// applied what the shard's leader has committed.
func caughtUp(t *testing.T, c *clustertest.Cluster, n *clustertest.Node, shard uint32) {
	t.Helper()
	c.Eventually(time.Minute, n.ID+" caught up with shard "+fmt.Sprint(shard), func() error {
		_, _, err := replicaCaughtUp(c, n, shard)
		return err
	})
}

// replicaCaughtUp returns n's replica of shard and the leader's, or why
// n's is not open and sound or has not applied what the leader has
// committed.
func replicaCaughtUp(c *clustertest.Cluster, n *clustertest.Node, shard uint32) (mine, leaders *raftstore.Shard, err error) {
	if mine = replicaOf(n, shard); mine == nil {
		return nil, nil, errors.New("the replica is not open")
	}
	if err := mine.Broken(); err != nil {
		return nil, nil, err
	}
	leader := c.Leader(shard)
	if leader == nil {
		return nil, nil, errors.New("no leader")
	}
	if leaders = replicaOf(leader, shard); leaders == nil {
		return nil, nil, errors.New("the leader's replica is not open")
	}
	if got, want := mine.Status().AppliedIndex, leaders.Status().CommitIndex; got < want {
		return nil, nil, fmt.Errorf("applied %d of %d", got, want)
	}
	return mine, leaders, nil
}
