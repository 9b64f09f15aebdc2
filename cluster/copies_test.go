package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
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
	const user = "copies@example.test"
	c, leader, victim, shard, u := damageFixture(t, user)
	ctx := testCtx(t)
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
	// Chunk 0 is the header section, chunk 1 the body.
	damageOn(t, c, victim, shard,
		func(path string) error { return statedamage.Chunk(path, u.ID, blob, 0) },
		func(path string) error { return statedamage.Chunk(path, u.ID, blob, 1) },
		func(path string) error { return statedamage.SearchRecord(path, u.ID, blob) })
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

// damageFixture starts three nodes that store search records, adds
// user, and returns the leader of the user's shard, another node (whose
// replica the tests damage), the shard and the user.
func damageFixture(t *testing.T, user string) (c *clustertest.Cluster, leader, victim *clustertest.Node, shard uint32, u *directory.User) {
	t.Helper()
	c = clustertest.Start(t, clustertest.Options{MailShards: 2,
		SearchIndexer: func(msg []byte) []byte { return append([]byte("words of "), msg[:min(len(msg), 64)]...) }})
	c.AddUser(user, "password-1")
	shard = shardOf(t, c, user)
	leader = c.WaitLeader(shard, 30*time.Second)
	victim = otherThan(c, leader)
	u, err := leader.Directory().ResolveRecipient(testCtx(t), user)
	if err != nil {
		t.Fatal(err)
	}
	return c, leader, victim, shard, u
}

// damageOn lets n's replica of shard catch up, stops n, damages the
// replica's state file with each of damage, and starts n again, caught
// up.
func damageOn(t *testing.T, c *clustertest.Cluster, n *clustertest.Node, shard uint32, damage ...func(path string) error) {
	t.Helper()
	caughtUp(t, c, n, shard)
	n.Stop()
	path := filepath.Join(raftstore.ReplicaDir(n.Dir, shard), "state.db")
	for _, d := range damage {
		if err := d(path); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	caughtUp(t, c, n, shard)
}

// TestScrubFindsAndMendsDamage: a scrub of a replica reads every message
// it holds, finds the pieces a disk changed, which no client has read,
// and has them put back from another replica's copy; a second scrub
// finds nothing. It reads at the pace it is given.
func TestScrubFindsAndMendsDamage(t *testing.T) {
	const user = "scrub@example.test"
	c, leader, victim, shard, u := damageFixture(t, user)
	ctx := testCtx(t)
	const count = 5
	for i := range count {
		if err := deliverRandom(leader, user, i); err != nil {
			t.Fatal(err)
		}
	}
	msgs := inboxMessages(t, leader.Login(user, "password-1"))
	if len(msgs) != count {
		t.Fatalf("%d messages in the INBOX", len(msgs))
	}
	damageOn(t, c, victim, shard,
		func(path string) error { return statedamage.Chunk(path, u.ID, msgs[1].Blob, 1) },
		func(path string) error { return statedamage.SearchRecord(path, u.ID, msgs[3].Blob) })

	var paced int64
	pace := func(_ context.Context, n int) error { paced += int64(n); return nil }
	rep, err := victim.Store().Scrub(ctx, shard, pace)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Users != 1 || rep.Blobs != count || rep.Damaged != 2 || rep.Unreadable != 0 || rep.Bytes < count*48<<10 || paced != rep.Bytes {
		t.Fatalf("scrub read %+v, paced %d bytes", rep, paced)
	}
	c.Eventually(30*time.Second, "the damaged pieces put back", func() error {
		if n := replicaOf(victim, shard).Status().Repaired; n != 2 {
			return fmt.Errorf("%d pieces repaired", n)
		}
		return nil
	})
	// The replica's reads of a blob come from its state file as
	// committed, which takes the repairs with its next group commit.
	c.Eventually(30*time.Second, "a scrub that finds nothing", func() error {
		rep, err := victim.Store().Scrub(ctx, shard, nil)
		if err != nil || rep.Blobs != count || rep.Damaged != 0 {
			return fmt.Errorf("scrub read %+v, %v", rep, err)
		}
		return nil
	})
	if n := replicaOf(victim, shard).Status().Repaired; n != 2 {
		t.Fatalf("%d pieces repaired after the scrubs, want 2", n)
	}
	if _, err := victim.Store().Scrub(ctx, 0, nil); err == nil {
		t.Fatal("a scrub of the meta shard did not fail")
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
