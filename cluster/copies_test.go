package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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
	repairedOnlyOn(t, c, shard, victim, 3)
}

// repairedOnlyOn checks that damaged's replica of shard counts want
// repaired pieces and every other running node's none.
func repairedOnlyOn(t *testing.T, c *clustertest.Cluster, shard uint32, damaged *clustertest.Node, want uint64) {
	t.Helper()
	for _, n := range c.Running() {
		w := uint64(0)
		if n == damaged {
			w = want
		}
		if got := replicaOf(n, shard).Status().Repaired; got != w {
			t.Errorf("%s counts %d repaired pieces, want %d", n.ID, got, w)
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

// TestScrubFindsAndMendsDamage: a scrub of a replica reads every message,
// record and queued message it holds, finds what a disk changed,
// which no client has read, and has them put back from another
// replica's copy; a second scrub finds nothing. It reads at the pace it
// is given.
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
	box, err := leader.Login(user, "password-1").Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	sub := schema.Submission{User: user, From: user, Recipients: []string{"bob@remote.test"},
		Message: []byte("From: <scrub@example.test>\r\nSubject: queued\r\n\r\nbody\r\n")}
	if err := leader.Store().Submit(ctx, sub); err != nil {
		t.Fatal(err)
	}
	queued, err := leader.Store().OutboundLed(ctx)
	if err != nil || len(queued) != 1 {
		t.Fatalf("the queue: %+v, %v", queued, err)
	}
	damageOn(t, c, victim, shard,
		func(path string) error { return statedamage.OutboundState(path, queued[0].ID) },
		func(path string) error { return statedamage.Chunk(path, u.ID, msgs[1].Blob, 1) },
		func(path string) error { return statedamage.SearchRecord(path, u.ID, msgs[3].Blob) },
		func(path string) error { return statedamage.MailboxRecord(path, u.ID, box.ID) },
		func(path string) error { return statedamage.MessageRecord(path, u.ID, box.ID, msgs[2].UID) })

	var paced int64
	pace := func(_ context.Context, n int) error { paced += int64(n); return nil }
	rep, err := victim.Store().Scrub(ctx, shard, pace)
	if err != nil {
		t.Fatal(err)
	}
	// Damaged: two messages, the INBOX for its records and the queue
	// entry.
	if rep.Users != 1 || rep.Blobs != count || rep.Records < 1+count || rep.Queued != 1 || rep.Damaged != 4 ||
		rep.Unreadable != 0 || rep.Bytes < count*48<<10 || paced != rep.Bytes {
		t.Fatalf("scrub read %+v, paced %d bytes", rep, paced)
	}
	c.Eventually(30*time.Second, "the damaged pieces and records put back", func() error {
		if n := replicaOf(victim, shard).Status().Repaired; n != 5 {
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
	if n := replicaOf(victim, shard).Status().Repaired; n != 5 {
		t.Fatalf("%d pieces repaired after the scrubs, want 5", n)
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

// TestDamagedRecordIsReadElsewhereAndRepaired changes the sealed part of
// a mailbox record and of two message records in the state file of the
// shard's leader, which answers every read of them. STORE, SELECT (a
// snapshot) and LIST must still work, with the flags as they were: each
// record is read from another replica that has applied as much, and put
// back on the leader through the log, counted there only.
func TestDamagedRecordIsReadElsewhereAndRepaired(t *testing.T) {
	const user = "records@example.test"
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	c.AddUser(user, "password-1")
	shard := shardOf(t, c, user)
	leader := homeLeader(t, c, shard)
	ctx := testCtx(t)
	u, err := leader.Directory().ResolveRecipient(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := deliverRandom(leader, user, i); err != nil {
			t.Fatal(err)
		}
	}
	acct := leader.Login(user, "password-1")
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	msgs := inboxMessages(t, acct)
	if len(msgs) != 2 {
		t.Fatalf("%d messages in the INBOX", len(msgs))
	}
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{msgs[0].UID}, schema.FlagsAdd, []string{`\Flagged`}); err != nil {
		t.Fatal(err)
	}
	// records reads the INBOX's records from n's replica as its disk
	// hands them back.
	records := func(n *clustertest.Node) *raftstore.QueryResult {
		t.Helper()
		res, err := replicaOf(n, shard).Query(raftstore.Query{Kind: raftstore.QuerySnapshot, User: u.ID, Mailbox: inbox.ID})
		if err != nil || len(res.Messages) != 2 {
			t.Fatalf("%s's replica: %v, %d messages", n.ID, err, len(res.Messages))
		}
		return res
	}
	same := func(a, b *raftstore.QueryResult) error {
		if !bytes.Equal(a.Mailbox.Sealed, b.Mailbox.Sealed) {
			return errors.New("the mailbox records differ")
		}
		for i := range a.Messages {
			if !bytes.Equal(a.Messages[i].Sealed, b.Messages[i].Sealed) {
				return fmt.Errorf("message %d's records differ", a.Messages[i].UID)
			}
		}
		return nil
	}
	caughtUp(t, c, leader, shard)
	want := records(leader)

	damageOn(t, c, leader, shard,
		func(path string) error { return statedamage.MailboxRecord(path, u.ID, inbox.ID) },
		func(path string) error { return statedamage.MessageRecord(path, u.ID, inbox.ID, msgs[0].UID) },
		func(path string) error { return statedamage.MessageRecord(path, u.ID, inbox.ID, msgs[1].UID) })
	if got := records(leader); bytes.Equal(got.Mailbox.Sealed, want.Mailbox.Sealed) || bytes.Equal(got.Messages[1].Sealed, want.Messages[1].Sealed) {
		t.Fatal("the damage did not take")
	}
	if l := homeLeader(t, c, shard); l != leader {
		t.Fatalf("%s leads the shard again, not %s", l.ID, leader.ID)
	}

	// STORE reads the message it changes; SELECT every record.
	acct = leader.Login(user, "password-1")
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{msgs[1].UID}, schema.FlagsAdd, []string{`\Seen`}); err != nil {
		t.Fatalf("STORE of a message whose record is damaged: %v", err)
	}
	snap, err := acct.Snapshot(ctx, inbox.ID)
	if err != nil {
		t.Fatalf("SELECT of a mailbox whose records are damaged: %v", err)
	}
	if snap.Mailbox.Name != "INBOX" || len(snap.Messages) != 2 ||
		!slices.Equal(snap.Messages[0].Flags, []string{`\Flagged`}) || !slices.Equal(snap.Messages[1].Flags, []string{`\Seen`}) {
		t.Fatalf("the INBOX reads %+v", snap)
	}
	if boxes, err := acct.Mailboxes(ctx); err != nil || len(boxes) == 0 {
		t.Fatalf("LIST: %v, %d mailboxes", err, len(boxes))
	}

	// The leader's records are the others' again (the second message's
	// as STORE left it), and only the leader counted repairs: the
	// mailbox record and the first message at SELECT, the second at
	// STORE.
	c.Eventually(30*time.Second, "the damaged records put back", func() error {
		mine := records(leader)
		for _, n := range c.Running() {
			if n != leader {
				if err := same(mine, records(n)); err != nil {
					return fmt.Errorf("against %s: %w", n.ID, err)
				}
			}
		}
		return nil
	})
	repairedOnlyOn(t, c, shard, leader, 3)
}

// TestDamagedQueueEntryIsReadElsewhereAndRepaired changes the sealed
// state and the message of an outbound queue entry in the state file of
// its shard's leader, whose delivery engine reads it. The queue must
// still list the entry and hand out its message, read from another
// replica, and the damaged copies are put back on the leader; before,
// one such entry failed the whole queue of the node.
func TestDamagedQueueEntryIsReadElsewhereAndRepaired(t *testing.T) {
	const user = "queue@example.test"
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	c.AddUser(user, "password-1")
	shard := shardOf(t, c, user)
	leader := homeLeader(t, c, shard)
	ctx := testCtx(t)
	sub := schema.Submission{User: user, From: user, Recipients: []string{"bob@remote.test"},
		Message: []byte("From: <queue@example.test>\r\nSubject: queued\r\n\r\nbody\r\n")}
	if err := leader.Store().Submit(ctx, sub); err != nil {
		t.Fatal(err)
	}
	led := func() schema.OutboundEntry {
		t.Helper()
		es, err := leader.Store().OutboundLed(ctx)
		if err != nil || len(es) != 1 {
			t.Fatalf("the leader's queue: %+v, %v", es, err)
		}
		return es[0]
	}
	e := led()
	msg, err := leader.Store().OutboundMessage(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	entry := func(n *clustertest.Node) *raftstore.QueryResult {
		t.Helper()
		res, err := replicaOf(n, shard).Query(raftstore.Query{Kind: raftstore.QueryOutboundChunks, Blob: e.ID})
		if err != nil || len(res.Outbound) != 1 || len(res.Chunks) != 2 {
			t.Fatalf("%s's copy of the entry: %v, %d chunks", n.ID, err, len(res.Chunks))
		}
		return res
	}
	// Chunk 0 is the header section, chunk 1 the body.
	same := func(a, b *raftstore.QueryResult) bool {
		return bytes.Equal(a.Outbound[0].State, b.Outbound[0].State) && bytes.Equal(a.Chunks[1], b.Chunks[1])
	}
	caughtUp(t, c, leader, shard)
	damageOn(t, c, leader, shard,
		func(path string) error { return statedamage.OutboundState(path, e.ID) },
		func(path string) error { return statedamage.OutboundChunk(path, e.ID, 1) })
	if got, want := entry(leader), entry(otherThan(c, leader)); bytes.Equal(got.Outbound[0].State, want.Outbound[0].State) ||
		bytes.Equal(got.Chunks[1], want.Chunks[1]) {
		t.Fatal("the damage did not take")
	}
	if l := homeLeader(t, c, shard); l != leader {
		t.Fatalf("%s leads the shard again, not %s", l.ID, leader.ID)
	}

	if got := led(); got.ID != e.ID || len(got.State.Recipients) != 1 || got.State.Recipients[0].Address != "bob@remote.test" {
		t.Fatalf("the queue lists %+v", got)
	}
	if got, err := leader.Store().OutboundMessage(ctx, e); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("the queued message: %v (%d bytes, want %d)", err, len(got), len(msg))
	}
	c.Eventually(30*time.Second, "the damaged entry put back", func() error {
		mine := entry(leader)
		for _, n := range c.Running() {
			if !same(mine, entry(n)) {
				return fmt.Errorf("the leader's entry differs from %s's", n.ID)
			}
		}
		return nil
	})
	repairedOnlyOn(t, c, shard, leader, 2)
}
