package cluster_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// nodeWithoutReplica returns a running node that keeps no replica of
// mail shard n.
func nodeWithoutReplica(c *clustertest.Cluster, n uint32) *clustertest.Node {
	for _, node := range c.Running() {
		has := false
		for _, s := range node.Cluster().Shards() {
			if s.ID() == n {
				has = true
			}
		}
		if !has {
			return node
		}
	}
	return nil
}

// waitChange waits for a change of kind on a watcher's channel.
func waitChange(t *testing.T, ch <-chan schema.Change, kind schema.ChangeKind, within time.Duration) schema.Change {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatal("watcher closed")
			}
			if c.Kind == kind {
				return c
			}
		case <-deadline:
			t.Fatalf("no change of kind %d within %s", kind, within)
		}
	}
}

// TestSessionsAcrossNodes: in a five-node cluster (three replicas per
// shard, so some nodes keep no replica of a user's shard), a session on
// such a node reads its own writes at once, is told of mail that entered
// through another node (IDLE), and sees its own change in its watcher
// before the write returns.
func TestSessionsAcrossNodes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 5, MailShards: 3})
	c.AddUser("fay@example.test", "password-1")
	n := shardOf(t, c, "fay@example.test")
	remote := nodeWithoutReplica(c, n)
	if remote == nil {
		t.Fatal("every node keeps the shard")
	}
	ctx := testCtx(t)
	acct := remote.Login("fay@example.test", "password-1")
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	changes, stop := acct.Watch(inbox.ID)
	defer stop()

	// Mail through another node reaches the watching session.
	var other *clustertest.Node
	for _, x := range c.Running() {
		if x != remote {
			other = x
			break
		}
	}
	if err := deliver(ctx, other, "fay@example.test", "idle"); err != nil {
		t.Fatal(err)
	}
	added := waitChange(t, changes, schema.ChangeAdded, 30*time.Second)
	if added.Message == nil || added.UID == 0 {
		t.Fatalf("added change %+v", added)
	}

	// The session's own writes: visible to its next read, and their
	// events are on the channel when the write returns.
	res, err := acct.Append(ctx, inbox.ID, []byte("Subject: own\r\n\r\nx\r\n"), []string{`\Seen`}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := drainFor(changes, schema.ChangeAdded, res.UID); !got {
		t.Fatal("the session's own append was not on its watcher when Append returned")
	}
	snap, err := acct.Snapshot(ctx, inbox.ID)
	if err != nil || len(snap.Messages) != 2 || snap.Messages[1].UID != res.UID {
		t.Fatalf("snapshot after own append: %+v, %v", snap.Messages, err)
	}
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{res.UID}, schema.FlagsAdd, []string{`\Flagged`}); err != nil {
		t.Fatal(err)
	}
	if !drainFor(changes, schema.ChangeFlags, res.UID) {
		t.Fatal("the session's own flag change was not on its watcher when StoreFlags returned")
	}
	if _, err := acct.Expunge(ctx, inbox.ID, []schema.ExpungeTarget{{UID: res.UID}}); err != nil {
		t.Fatal(err)
	}
	if !drainFor(changes, schema.ChangeExpunged, res.UID) {
		t.Fatal("the session's own expunge was not on its watcher when Expunge returned")
	}
}

// drainFor reads what is queued on ch now and reports whether a change of
// kind for uid is among it.
func drainFor(ch <-chan schema.Change, kind schema.ChangeKind, uid schema.UID) bool {
	for {
		select {
		case c := <-ch:
			if c.Kind == kind && c.UID == uid {
				return true
			}
			if c.Kind == schema.ChangeResync {
				return true // the session reloads and sees it
			}
		default:
			return false
		}
	}
}

// TestMaildropLockAcrossNodes: a POP3 maildrop locked through one node is
// in use through every other; released, it is free; and the lock of a
// node that dies runs out by itself.
func TestMaildropLockAcrossNodes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	c.AddUser("gus@example.test", "password-1")
	ctx := testCtx(t)
	a1 := c.Nodes[0].Login("gus@example.test", "password-1")
	a2 := c.Nodes[1].Login("gus@example.test", "password-1")
	release, err := a1.LockMaildrop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.LockMaildrop(ctx); !errors.Is(err, schema.ErrInUse) {
		t.Fatalf("second lock through another node: %v, want in use", err)
	}
	release()
	release2, err := a2.LockMaildrop(ctx)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	// The holder stays locked while it renews (the lease is 3 s here).
	time.Sleep(4 * time.Second) // longer than the lease: only renewals keep it
	if _, err := a1.LockMaildrop(ctx); !errors.Is(err, schema.ErrInUse) {
		t.Fatalf("lock held past its lease by renewals: %v, want in use", err)
	}
	_ = release2 // the holder dies without releasing
	holder := c.Nodes[1]
	holder.Kill()
	var a3 protocols.Account = c.Nodes[2].Login("gus@example.test", "password-1")
	c.Eventually(time.Minute, "a dead holder's lock runs out", func() error {
		r, err := a3.LockMaildrop(ctx)
		if err != nil {
			return err
		}
		r()
		return nil
	})
}

// TestMaildropLockLostWhileCutOff: the POP3 lock of a session whose node
// is cut off from the others runs out, and a session through another
// node takes it; once the first node is back, its session learns that it
// lost the lock (so it deletes nothing), and the new holder keeps it.
func TestMaildropLockLostWhileCutOff(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	c.AddUser("ida@example.test", "password-1")
	ctx := testCtx(t)
	a1 := c.Nodes[0].Login("ida@example.test", "password-1")
	a2 := c.Nodes[1].Login("ida@example.test", "password-1")
	release1, err := a1.LockMaildrop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release1()
	if err := a1.ConfirmMaildrop(ctx); err != nil {
		t.Fatalf("the holder confirms its lock: %v", err)
	}
	if _, err := a2.LockMaildrop(ctx); !errors.Is(err, schema.ErrInUse) {
		t.Fatalf("second lock through another node: %v, want in use", err)
	}

	c.Nodes[0].Partition(true)
	var release2 func()
	c.Eventually(time.Minute, "a session through another node takes the lock once it ran out", func() error {
		r, err := a2.LockMaildrop(ctx)
		if err != nil {
			return err
		}
		release2 = r
		return nil
	})
	defer release2()
	c.Nodes[0].Partition(false)
	c.Eventually(time.Minute, "the cut-off holder learns that it lost the lock", func() error {
		if err := a1.ConfirmMaildrop(ctx); !errors.Is(err, schema.ErrInUse) {
			return fmt.Errorf("confirm on the former holder: %v, want in use", err)
		}
		return nil
	})
	if err := a2.ConfirmMaildrop(ctx); err != nil {
		t.Fatalf("the new holder confirms its lock: %v", err)
	}
	release1() // gives back nothing: the lock is the other session's
	a3 := c.Nodes[2].Login("ida@example.test", "password-1")
	if _, err := a3.LockMaildrop(ctx); !errors.Is(err, schema.ErrInUse) {
		t.Fatalf("a lock after the former holder released: %v, want in use (the new holder keeps it)", err)
	}
}

// TestMultiRecipientMailSurvivesAShardFailure: a message to users on two
// shards, accepted while the second shard has lost its quorum, is
// committed once to the spool; once the shard is back every recipient has
// exactly one copy, and the spool's retries add no second copy.
func TestMultiRecipientMailSurvivesAShardFailure(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 5, MailShards: 6, RouteTimeout: 2 * time.Second})
	ctx := testCtx(t)
	// Users fill the shards in order: one per shard.
	for i := 0; i < 6; i++ {
		c.AddUser(fmt.Sprintf("u%d@example.test", i), "password-1")
	}
	replicas := func(st cluster.Status, n uint32) map[string]bool {
		out := map[string]bool{}
		for _, r := range st.Shards[n].Replicas {
			out[r.Node] = true
		}
		return out
	}
	// New nodes take replicas over until some shard y has two replicas
	// outside shard x's, x < y (the spool goes to the lowest shard).
	var x, y uint32
	var st cluster.Status
	c.Eventually(3*time.Minute, "two shards with different replicas", func() error {
		if err := c.Converged(); err != nil {
			return err
		}
		st = c.Nodes[0].Cluster().Status()
		for a := uint32(1); a <= 6; a++ {
			for b := a + 1; b <= 6; b++ {
				outside := 0
				for id := range replicas(st, b) {
					if !replicas(st, a)[id] {
						outside++
					}
				}
				if outside >= 2 {
					x, y = a, b
					return nil
				}
			}
		}
		return fmt.Errorf("no two shards with two replicas apart")
	})
	userOn := func(n uint32) string {
		for i := 0; i < 6; i++ {
			addr := fmt.Sprintf("u%d@example.test", i)
			if shardOf(t, c, addr) == n {
				return addr
			}
		}
		t.Fatalf("no user on shard %d", n)
		return ""
	}
	ux, uy := userOn(x), userOn(y)
	// Cut y's replicas outside x off: y loses its quorum, x keeps it.
	var cut []*clustertest.Node
	for id := range replicas(st, y) {
		if !replicas(st, x)[id] {
			cut = append(cut, c.Node(id))
		}
	}
	for _, n := range cut {
		n.Partition(true)
	}
	var via *clustertest.Node
	for id := range replicas(st, x) {
		via = c.Node(id)
	}
	err := via.Store().Deliver(ctx, schema.Delivery{From: "s@remote.test", Recipients: []string{ux, uy},
		Message: []byte("Message-ID: <spool-1@test>\r\nSubject: both\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatalf("delivery with the second shard down was not accepted: %v", err)
	}
	for _, n := range cut {
		n.Partition(false)
	}
	count := func(addr string) (int, error) {
		a, err := via.Store().Authenticate(ctx, schema.Credentials{Username: addr, Password: "password-1"})
		if err != nil {
			return 0, err
		}
		defer a.Close()
		inbox, err := a.Mailbox(ctx, "INBOX")
		if err != nil {
			return 0, err
		}
		snap, err := a.Snapshot(ctx, inbox.ID)
		if err != nil {
			return 0, err
		}
		n := 0
		for _, m := range snap.Messages {
			h, err := a.Header(ctx, m.Blob)
			if err != nil {
				return 0, err
			}
			if strings.Contains(string(h), "<spool-1@test>") {
				n++
			}
		}
		return n, nil
	}
	c.Eventually(time.Minute, "both recipients have the message", func() error {
		for _, u := range []string{ux, uy} {
			n, err := count(u)
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("%s has %d copies", u, n)
			}
		}
		return nil
	})
	// The spool worker keeps running: no copy appears twice later.
	time.Sleep(5 * time.Second) // two more spool retry periods
	for _, u := range []string{ux, uy} {
		if n, err := count(u); err != nil || n != 1 {
			t.Fatalf("%s has %d copies after the spool settled (%v)", u, n, err)
		}
	}
}

// TestRetriedDeliveryIsStoredOnce: a sender that retries a message whose
// acknowledgement it lost (same fingerprint) through another node finds
// the first copy, for a single-shard and a multi-shard delivery; without
// a fingerprint two sends are two messages.
func TestRetriedDeliveryIsStoredOnce(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	c.AddUser("ivy@example.test", "password-1")
	c.AddUser("joe@example.test", "password-1") // the next shard
	ctx := testCtx(t)
	if shardOf(t, c, "ivy@example.test") == shardOf(t, c, "joe@example.test") {
		t.Fatal("the users share a shard")
	}
	send := func(n *clustertest.Node, fp string, to ...string) {
		t.Helper()
		d := schema.Delivery{From: "s@remote.test", Recipients: to, Message: []byte("Message-ID: <" + fp + "@test>\r\nSubject: once\r\n\r\nx\r\n")}
		if fp != "" {
			d.Fingerprint = []byte(fp)
		}
		if err := n.Store().Deliver(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	send(c.Nodes[0], "single", "ivy@example.test")
	send(c.Nodes[1], "single", "ivy@example.test")
	send(c.Nodes[0], "multi", "ivy@example.test", "joe@example.test")
	send(c.Nodes[2], "multi", "ivy@example.test", "joe@example.test")
	send(c.Nodes[0], "", "joe@example.test")
	send(c.Nodes[1], "", "joe@example.test")
	if got := inboxCount(t, c.Nodes[2].Login("ivy@example.test", "password-1")); got != 2 {
		t.Fatalf("ivy has %d messages, want 2 (one per fingerprint)", got)
	}
	if got := inboxCount(t, c.Nodes[0].Login("joe@example.test", "password-1")); got != 3 {
		t.Fatalf("joe has %d messages, want 3 (one multi-shard message, two without fingerprint)", got)
	}
}

// TestFollowerSessionTakesItsEventsFromTheLeader: a session on a node
// whose replica of the user's shard follows has the events of its own
// writes when they return, brought by the leader (which applies an entry
// as it commits it), not by its replica, which learns of a commit only
// with the leader's next append. Here that comes CommitTimeout (5-10 s)
// after the last write, longer than a write waits for its events before
// its watcher is resynchronised: without the leader's events every write
// below would end in a resync. Each change reaches the watcher once,
// though both sources bring it.
func TestFollowerSessionTakesItsEventsFromTheLeader(t *testing.T) {
	// The session goes to a node outside the shard's home region, once
	// the leadership is home: that node's replica follows throughout.
	c, n, leader, node := startWithFollower(t, "gil@example.test")
	ctx := testCtx(t)
	acct := node.Login("gil@example.test", "password-1")
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	changes, stop := acct.Watch(inbox.ID)
	defer stop()
	// next returns the change queued now, failing if there is none.
	next := func(what string) schema.Change {
		t.Helper()
		select {
		case ch := <-changes:
			return ch
		default:
			t.Fatalf("%s: no change queued when the write returned", what)
			return schema.Change{}
		}
	}

	res, err := acct.Append(ctx, inbox.ID, []byte("Subject: own\r\n\r\nx\r\n"), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if ch := next("append"); ch.Kind != schema.ChangeAdded || ch.UID != res.UID {
		t.Fatalf("append: change %+v, want the message added (UID %d)", ch, res.UID)
	}
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{res.UID}, schema.FlagsAdd, []string{`\Flagged`}); err != nil {
		t.Fatal(err)
	}
	if ch := next("store"); ch.Kind != schema.ChangeFlags || ch.UID != res.UID {
		t.Fatalf("store: change %+v, want the flags of UID %d", ch, res.UID)
	}
	// Once the replica has applied both writes too, nothing more comes.
	replicaOf := func(x *clustertest.Node) *raftstore.Shard {
		for _, s := range x.Cluster().Shards() {
			if s.ID() == n {
				return s
			}
		}
		t.Fatalf("%s keeps no replica of shard %d", x.ID, n)
		return nil
	}
	replica, target := replicaOf(node), replicaOf(leader).PublishedIndex()
	c.Eventually(time.Minute, "the follower's replica applies the writes", func() error {
		if got := replica.PublishedIndex(); got < target {
			return fmt.Errorf("published %d", got)
		}
		return nil
	})
	select {
	case ch := <-changes:
		t.Fatalf("a change came again from the replica: %+v", ch)
	case <-time.After(200 * time.Millisecond):
	}

	// The leadership moves (and may come home again at once): the
	// session's next write still has its own change, once, whichever
	// node then leads.
	term := replica.Status().Term
	if err := replicaOf(leader).TransferLeadership(ctx, "", ""); err != nil {
		t.Fatal(err)
	}
	c.Eventually(30*time.Second, "a new term with a leader", func() error {
		if st := replica.Status(); st.Term <= term || st.LeaderID == "" {
			return fmt.Errorf("term %d, leader %q", st.Term, st.LeaderID)
		}
		return nil
	})
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{res.UID}, schema.FlagsRemove, []string{`\Flagged`}); err != nil {
		t.Fatal(err)
	}
	if ch := waitChange(t, changes, schema.ChangeFlags, 30*time.Second); ch.UID != res.UID || ch.Message.HasFlag(`\Flagged`) {
		t.Fatalf("after the move: change %+v, want UID %d without \\Flagged", ch, res.UID)
	}
	c.Eventually(30*time.Second, "a leader", func() error {
		now := c.Leader(n)
		if now == nil {
			return errors.New("no leader")
		}
		target = replicaOf(now).PublishedIndex()
		return nil
	})
	c.Eventually(time.Minute, "the session's replica applies the write", func() error {
		if got := replica.PublishedIndex(); got < target {
			return fmt.Errorf("published %d, want %d", got, target)
		}
		return nil
	})
	select {
	case ch := <-changes:
		t.Fatalf("after the move, a change came again: %+v", ch)
	case <-time.After(200 * time.Millisecond):
	}
}

// slowCommitTiming is a Raft timing under which a follower learns of a
// commit only with the leader's next append, seconds later, unless other
// writes come: what a session on a follower's node sees at once must
// then have come from the leader.
var slowCommitTiming = raftstore.Timing{HeartbeatTimeout: 500 * time.Millisecond,
	ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 5 * time.Second}

// startWithFollower starts a cluster with slowCommitTiming and the user
// address (password "password-1"), waits until the user's shard n is led
// from its home region, and returns the shard's leader and a node
// outside that region, whose replica then follows throughout.
func startWithFollower(t *testing.T, address string) (c *clustertest.Cluster, n uint32, leader, follower *clustertest.Node) {
	t.Helper()
	c = clustertest.Start(t, clustertest.Options{MailShards: 2, Timing: slowCommitTiming})
	c.AddUser(address, "password-1")
	n = shardOf(t, c, address)
	regions := regionOf(c)
	c.Eventually(time.Minute, "the user's shard led from its home region", func() error {
		for _, st := range c.Running()[0].Cluster().Status().Shards {
			if st.Shard != n {
				continue
			}
			if st.Leader == "" || regions[st.Leader] != st.Home {
				return fmt.Errorf("shard %d: leader %q, home %s", n, st.Leader, st.Home)
			}
			for _, x := range c.Running() {
				if x.ID == st.Leader {
					leader = x
				}
				if x.Region != st.Home {
					follower = x
				}
			}
			return nil
		}
		return fmt.Errorf("shard %d not in the status", n)
	})
	return c, n, leader, follower
}

// TestOtherSessionsChangesAtTheNextCommand: what one session writes shows
// in another session of the same user at that session's next command
// (Account.Refresh), although the other's node keeps a replica that
// follows and would learn of the commit seconds later: at once for
// writes through the same node (another session's, and a delivery), and
// for writes through another node when the session asks the leader (an
// IMAP NOOP).
func TestOtherSessionsChangesAtTheNextCommand(t *testing.T) {
	_, _, leader, node := startWithFollower(t, "ida@example.test")
	ctx := testCtx(t)
	writer := node.Login("ida@example.test", "password-1")
	reader := node.Login("ida@example.test", "password-1")
	elsewhere := leader.Login("ida@example.test", "password-1")
	inbox, err := reader.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	changes, stop := reader.Watch(inbox.ID)
	defer stop()

	res, err := writer.Append(ctx, inbox.ID, []byte("Subject: by the other session\r\n\r\nx\r\n"), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	reader.Refresh(ctx, inbox.ID, false)
	if !drainFor(changes, schema.ChangeAdded, res.UID) {
		t.Fatal("another session's append on the same node was not on the watcher after Refresh")
	}
	if _, err := writer.StoreFlags(ctx, inbox.ID, []schema.UID{res.UID}, schema.FlagsAdd, []string{`\Flagged`}); err != nil {
		t.Fatal(err)
	}
	reader.Refresh(ctx, inbox.ID, false)
	if !drainFor(changes, schema.ChangeFlags, res.UID) {
		t.Fatal("another session's flag change on the same node was not on the watcher after Refresh")
	}
	if err := deliver(ctx, node, "ida@example.test", "delivered"); err != nil {
		t.Fatal(err)
	}
	reader.Refresh(ctx, inbox.ID, false)
	if !drainFor(changes, schema.ChangeAdded, res.UID+1) {
		t.Fatal("a delivery through the same node was not on the watcher after Refresh")
	}

	res, err = elsewhere.Append(ctx, inbox.ID, []byte("Subject: through the leader's node\r\n\r\nx\r\n"), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	reader.Refresh(ctx, inbox.ID, true)
	if !drainFor(changes, schema.ChangeAdded, res.UID) {
		t.Fatal("an append through another node was not on the watcher after Refresh from the leader")
	}

	// A session in IDLE calls nothing: another session's write through
	// the node has its watcher take the leader's events, so the change
	// comes long before the replica would learn of it (CommitTimeout).
	idler := node.Login("ida@example.test", "password-1")
	idle, stopIdle := idler.Watch(inbox.ID)
	defer stopIdle()
	res, err = writer.Append(ctx, inbox.ID, []byte("Subject: while idle\r\n\r\nx\r\n"), nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// The new watcher first replays the account's earlier events.
	deadline := time.After(slowCommitTiming.CommitTimeout / 2)
	for {
		select {
		case ch := <-idle:
			if ch.Kind == schema.ChangeAdded && ch.UID == res.UID || ch.Kind == schema.ChangeResync {
				return
			}
		case <-deadline:
			t.Fatalf("the idle session was not told of UID %d within %s", res.UID, slowCommitTiming.CommitTimeout/2)
		}
	}
}

// TestFollowerSessionsFirstWrites opens many sessions on a node whose
// replica follows, each writing once: the first write that waits starts
// the stream of the leader's events just as the replica hands out that
// write's events, and neither may stall the other (the replica's event
// lock is held while it calls the subscriptions).
func TestFollowerSessionsFirstWrites(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	c.AddUser("hal@example.test", "password-1")
	n := shardOf(t, c, "hal@example.test")
	var node *clustertest.Node
	c.Eventually(time.Minute, "a leader of the user's shard", func() error {
		leader := c.Leader(n)
		if leader == nil {
			return errors.New("no leader")
		}
		for _, x := range c.Running() {
			if x.ID != leader.ID {
				node = x
			}
		}
		return nil
	})
	ctx := testCtx(t)
	acct := node.Login("hal@example.test", "password-1")
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	const sessions = 4
	uids := make([]schema.UID, sessions)
	for w := range uids {
		res, err := acct.Append(ctx, inbox.ID, []byte(fmt.Sprintf("Subject: toggled %d\r\n\r\nx\r\n", w)), nil, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		uids[w] = res.UID
	}
	const rounds = 60
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for w := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid := uids[w]
			for i := range rounds {
				changes, stop := acct.Watch(inbox.ID)
				op := schema.FlagsAdd
				if i%2 == 1 {
					op = schema.FlagsRemove
				}
				if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{uid}, op, []string{`\Flagged`}); err != nil {
					errs <- fmt.Errorf("session %d round %d: %w", w, i, err)
					stop()
					return
				}
				// The write returned: its change is queued, and the
				// watcher stops at once.
				if !drainFor(changes, schema.ChangeFlags, uid) {
					errs <- fmt.Errorf("session %d round %d: the write's change was not queued when it returned", w, i)
				}
				stopped := make(chan struct{})
				go func() { stop(); close(stopped) }()
				select {
				case <-stopped:
				case <-time.After(30 * time.Second):
					errs <- fmt.Errorf("session %d round %d: the watcher did not stop in 30 s", w, i)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		// A deadlock would also hang the cluster's shutdown in the
		// test's cleanup: end the test binary here, with every stack.
		buf := make([]byte, 1<<22)
		t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		panic("the sessions' writes are stuck (a lock-order deadlock between the replica and its subscriptions?)")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
