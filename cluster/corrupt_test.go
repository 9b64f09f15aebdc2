package cluster_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/logdamage"
	"go.etcd.io/bbolt"
)

// damageStateFile overwrites every page of a state file after bbolt's two
// meta pages with random bytes, as a disk that returns other bytes than
// were written would leave it: the meta pages still point into the tree,
// whose pages bbolt then finds are not what they should be. bbolt reads
// the freelist as it opens the file, so the damage is found then.
func damageStateFile(t *testing.T, path string) {
	t.Helper()
	damagePages(t, path, nil)
}

// damageSettingsOfStateFile damages the root page of a state file's
// settings bucket, where the cluster's records are: the file opens, and
// the damage is found by the first read of those records.
func damageSettingsOfStateFile(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var root int64
	err = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket([]byte("settings")); b != nil {
			root = int64(b.Root())
		}
		return nil
	})
	db.Close()
	if err != nil || root == 0 {
		t.Fatalf("no settings bucket of its own in %s (root %d): %v", path, root, err)
	}
	keep := map[int64]bool{}
	for p := int64(2); p*int64(os.Getpagesize()) < fileSize(t, path); p++ {
		keep[p] = p != root
	}
	damagePages(t, path, keep)
}

// fileSize returns the size of the file at path.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// damagePages overwrites the pages of a state file after its two meta
// pages, but for those in keep, with random bytes.
func damagePages(t *testing.T, path string, keep map[int64]bool) {
	t.Helper()
	size := fileSize(t, path)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := int64(os.Getpagesize())
	junk := make([]byte, page)
	for p := int64(2); p*page < size; p++ {
		if keep[p] {
			continue
		}
		rand.Read(junk)
		if _, err := f.WriteAt(junk, p*page); err != nil {
			t.Fatal(err)
		}
	}
}

// otherThan returns the first of the cluster's nodes that is not n.
func otherThan(c *clustertest.Cluster, n *clustertest.Node) *clustertest.Node {
	for _, o := range c.Nodes {
		if o != n {
			return o
		}
	}
	return nil
}

// homeLeader waits for shard's leader to be the node in the shard's home
// region, where it stays (leadership elsewhere moves home), as that node
// sees it too, and returns it.
func homeLeader(t *testing.T, c *clustertest.Cluster, shard uint32) *clustertest.Node {
	t.Helper()
	regions := regionOf(c)
	var leader *clustertest.Node
	c.Eventually(time.Minute, "the shard's leader in its home region", func() error {
		for _, s := range c.Running()[0].Cluster().Status().Shards {
			if s.Shard == shard && s.Leader != "" && regions[s.Leader] == s.Home {
				if leader = c.Node(s.Leader); leader == nil || !leader.Running() {
					return fmt.Errorf("leader %s is not running here", s.Leader)
				}
				if r := replicaOf(leader, shard); r == nil || !r.IsLeader() {
					return fmt.Errorf("%s does not lead the shard yet", s.Leader)
				}
				return nil
			}
		}
		return errors.New("not yet")
	})
	return leader
}

// replicaOf returns node n's open replica of shard, or nil.
func replicaOf(n *clustertest.Node, shard uint32) *raftstore.Shard {
	for _, s := range n.Cluster().Shards() {
		if s.ID() == shard {
			return s
		}
	}
	return nil
}

// metaHolds checks that node n's meta replica is open, sound and holds
// users users.
func metaHolds(n *clustertest.Node, users int) error {
	s := replicaOf(n, 0)
	if s == nil {
		return errors.New("the meta replica is not open")
	}
	if err := s.Broken(); err != nil {
		return err
	}
	var got int
	if err := s.View(func(r *raftstore.Reader) error { got = r.Stats().Users; return nil }); err != nil {
		return err
	}
	if got != users {
		return fmt.Errorf("%d users in the meta replica, want %d", got, users)
	}
	return nil
}

// TestCorruptStateFileIsRebuilt damages the state file of one node's
// replica of a shard, first under the running node (the replica leads
// the shard), then while the node is down. Each time the node must go on
// serving (no panic ends the process), the shard must take mail through
// the other two replicas, and the node must rebuild the damaged replica
// from another replica's copy, by itself, until it holds every
// acknowledged message and follows the group's new writes.
func TestCorruptStateFileIsRebuilt(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	const user = "rot@example.test"
	c.AddUser(user, "password-1")
	shard := shardOf(t, c, user)
	victim := c.WaitLeader(shard, 30*time.Second)
	via := otherThan(c, victim)
	path := filepath.Join(raftstore.ReplicaDir(victim.Dir, shard), "state.db")

	var acked []int
	next := 0
	deliverSome := func(count int) {
		t.Helper()
		for k := 0; k < count; k++ {
			i := next
			next++
			c.Eventually(time.Minute, fmt.Sprintf("delivery of m%d through %s", i, via.ID), func() error {
				return deliverRandom(via, user, i)
			})
			acked = append(acked, i)
		}
	}
	// rebuilt waits until the victim's replica is open and sound again,
	// holds what the leader's does, and has set the damaged file aside.
	rebuilt := func(what string) {
		t.Helper()
		c.Eventually(2*time.Minute, what, func() error {
			s, ls, err := replicaCaughtUp(c, victim, shard)
			if err != nil {
				return err
			}
			var mine, theirs raftstore.Stats
			if err := s.View(func(r *raftstore.Reader) error { mine = r.Stats(); return nil }); err != nil {
				return err
			}
			if err := ls.View(func(r *raftstore.Reader) error { theirs = r.Stats(); return nil }); err != nil {
				return err
			}
			if mine != theirs {
				return fmt.Errorf("the rebuilt replica holds %+v, the leader's %+v", mine, theirs)
			}
			if mine.Messages != len(acked) {
				return fmt.Errorf("%d messages, %d acknowledged", mine.Messages, len(acked))
			}
			if _, err := os.Stat(path + ".corrupt"); err != nil {
				return fmt.Errorf("the damaged file is not kept: %w", err)
			}
			return nil
		})
	}

	deliverSome(5)
	c.Eventually(time.Minute, "every replica applied the first mail", func() error {
		for _, n := range c.Nodes {
			s := replicaOf(n, shard)
			if s == nil || s.Status().AppliedIndex < replicaOf(victim, shard).Status().CommitIndex {
				return fmt.Errorf("%s behind", n.ID)
			}
		}
		return nil
	})

	// Under the running node: bbolt maps the file, so the next read or
	// apply of the shard meets the damage.
	damageStateFile(t, path)
	deliverSome(5)
	rebuilt("the damaged leader's replica rebuilt while its node runs")
	if !victim.Running() {
		t.Fatal("the node whose state file was damaged stopped")
	}
	deliverSome(3)
	rebuilt("the rebuilt replica following new writes")
	checkAcked(t, victim, user, acked)

	// While the node is down: found as it starts.
	victim.Stop()
	if err := os.Remove(path + ".corrupt"); err != nil {
		t.Fatal(err)
	}
	damageStateFile(t, path)
	deliverSome(3)
	if err := victim.Start(); err != nil {
		t.Fatalf("a node with one damaged replica did not start: %v", err)
	}
	deliverSome(3)
	rebuilt("the replica found damaged at start rebuilt")
	checkAcked(t, victim, user, acked)
}

// TestReplicaWithoutRaftStateRejoinsAsNonvoter: a node's replica
// directory, or only its log, is deleted while the node is down. Its
// group still counts the node as a voter, and a replica with an empty
// log that votes could elect a leader without acknowledged writes; so the
// node keeps the replica closed until the leader has made it a
// non-voter, then the replica catches up, is promoted again and holds
// every acknowledged message.
func TestReplicaWithoutRaftStateRejoinsAsNonvoter(t *testing.T) {
	remove := func(path func(dir string) string) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			if _, err := os.Stat(path(dir)); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(path(dir)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("replica deleted", func(t *testing.T) {
		testReplicaWithoutRaftState(t, remove(func(dir string) string { return dir }))
	})
	t.Run("log deleted", func(t *testing.T) {
		// raft.db keeps the term and vote, state.db and the snapshots stay.
		testReplicaWithoutRaftState(t, remove(func(dir string) string { return filepath.Join(dir, "wal") }))
	})
	t.Run("log damaged", func(t *testing.T) {
		// An entry's checksum no longer matches: the node sets the log
		// aside (wal.damaged).
		testReplicaWithoutRaftState(t, func(t *testing.T, dir string) {
			wal := filepath.Join(dir, "wal")
			if _, err := logdamage.Command(wal, 0); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func testReplicaWithoutRaftState(t *testing.T, harm func(t *testing.T, replicaDir string)) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	const user = "wiped@example.test"
	c.AddUser(user, "password-1")
	shard := shardOf(t, c, user)
	leader := c.WaitLeader(shard, 30*time.Second)
	victim := otherThan(c, leader)
	var acked []int
	for i := 0; i < 6; i++ {
		if i == 3 {
			victim.Stop()
			harm(t, raftstore.ReplicaDir(victim.Dir, shard))
		}
		c.Eventually(time.Minute, fmt.Sprintf("delivery of m%d", i), func() error { return deliverRandom(leader, user, i) })
		acked = append(acked, i)
	}
	// votes reports how the shard's leader counts the victim now.
	votes := func() (voter, member bool) {
		l := c.Leader(shard)
		if l == nil {
			return false, false
		}
		servers, err := replicaOf(l, shard).Servers()
		if err != nil {
			return false, false
		}
		for _, srv := range servers {
			if srv.ID == victim.ID {
				return srv.Voter, true
			}
		}
		return false, false
	}
	if voter, _ := votes(); !voter {
		t.Fatal("the victim was not a voter of the shard before it restarted")
	}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	// The replica must not open while the group counts the victim as a
	// voter: poll closely for the moment it opens.
	deadline := time.Now().Add(time.Minute)
	for replicaOf(victim, shard) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the replica without Raft state never opened")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if voter, member := votes(); voter || !member {
		t.Fatalf("the empty replica opened while its group counts it as voter=%v member=%v", voter, member)
	}
	c.Eventually(2*time.Minute, "the rebuilt replica promoted to voter and caught up", func() error {
		if voter, _ := votes(); !voter {
			return errors.New("not a voter yet")
		}
		s, l := replicaOf(victim, shard), c.Leader(shard)
		if s == nil || l == nil {
			return errors.New("replica or leader missing")
		}
		var mine, theirs raftstore.Stats
		if err := s.View(func(r *raftstore.Reader) error { mine = r.Stats(); return nil }); err != nil {
			return err
		}
		if err := replicaOf(l, shard).View(func(r *raftstore.Reader) error { theirs = r.Stats(); return nil }); err != nil {
			return err
		}
		if mine != theirs || mine.Messages != len(acked) {
			return fmt.Errorf("the replica holds %+v, the leader's %+v, %d acknowledged", mine, theirs, len(acked))
		}
		return nil
	})
	checkAcked(t, victim, user, acked)
}

// TestCorruptMetaStateIsRebuilt damages the meta shard's state file
// under its running leader: the directory goes on taking users through
// the other nodes, and the node rebuilds its meta replica, after which a
// user added meanwhile logs in through it.
func TestCorruptMetaStateIsRebuilt(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	c.AddUser("first@example.test", "password-1")
	victim := c.WaitLeader(0, 30*time.Second)
	via := otherThan(c, victim)
	path := filepath.Join(raftstore.ReplicaDir(victim.Dir, 0), "state.db")
	damageStateFile(t, path)
	// A read of the directory on the victim meets the damage.
	victim.Directory().ResolveRecipient(testCtx(t), "first@example.test")
	c.Eventually(time.Minute, "a user added through "+via.ID, func() error {
		return via.Directory().AddUser(testCtx(t), "second@example.test", "password-2")
	})
	c.Eventually(2*time.Minute, "the victim's meta replica rebuilt", func() error {
		if _, err := os.Stat(path + ".corrupt"); err != nil {
			return fmt.Errorf("the damaged file is not kept: %w", err)
		}
		return metaHolds(victim, 2)
	})
	if !victim.Running() {
		t.Fatal("the node whose meta state file was damaged stopped")
	}
	victim.Login("second@example.test", "password-2")
}

// TestCorruptMetaStateAtStartIsRebuilt damages a node's meta state file
// while the node is down. The records of the other nodes are in that
// file, so the node must find them in its Raft state, copy the state
// from one of them and start; a user added while it was down then logs in
// through it.
func TestCorruptMetaStateAtStartIsRebuilt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(*testing.T, string)
	}{
		{"found as the file opens", damageStateFile},
		{"found by the first read of the records", damageSettingsOfStateFile},
	} {
		t.Run(tc.name, func(t *testing.T) { testCorruptMetaStateAtStart(t, tc.damage) })
	}
}

func testCorruptMetaStateAtStart(t *testing.T, damage func(*testing.T, string)) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	c.AddUser("first@example.test", "password-1")
	victim := c.Nodes[len(c.Nodes)-1]
	via := otherThan(c, victim)
	path := filepath.Join(raftstore.ReplicaDir(victim.Dir, 0), "state.db")
	victim.Stop()
	damage(t, path)
	c.Eventually(time.Minute, "a user added through "+via.ID, func() error {
		return via.Directory().AddUser(testCtx(t), "second@example.test", "password-2")
	})
	if err := victim.Start(); err != nil {
		t.Fatalf("a node with a damaged meta state file did not start: %v", err)
	}
	if _, err := os.Stat(path + ".corrupt"); err != nil {
		t.Fatalf("the damaged file is not kept: %v", err)
	}
	c.Eventually(time.Minute, "the rebuilt meta replica holding both users", func() error {
		return metaHolds(victim, 2)
	})
	victim.Login("second@example.test", "password-2")
	victim.Login("first@example.test", "password-1")
}

// openWatch is a log handler that calls onOpen, on the opening node's
// own goroutine, when node's replica of shard opens ("replica opened"),
// so that a test sees the cluster as it is at that moment. Records go
// nowhere else.
type openWatch struct {
	node   string
	shard  int64
	attrs  []slog.Attr
	onOpen func()
}

func (h *openWatch) Enabled(context.Context, slog.Level) bool { return true }

func (h *openWatch) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "replica opened" {
		return nil
	}
	node, shard := "", int64(-1)
	check := func(a slog.Attr) bool {
		switch a.Key {
		case "node":
			node = a.Value.String()
		case "shard":
			if a.Value.Kind() == slog.KindUint64 {
				shard = int64(a.Value.Uint64())
			} else if a.Value.Kind() == slog.KindInt64 {
				shard = a.Value.Int64()
			}
		}
		return true
	}
	for _, a := range h.attrs {
		check(a)
	}
	r.Attrs(check)
	if node == h.node && shard == h.shard {
		h.onOpen()
	}
	return nil
}

func (h *openWatch) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clone(h.attrs), attrs...)
	return &c
}

func (h *openWatch) WithGroup(string) slog.Handler { return h }

// TestMetaReplicaWithoutRaftStateRejoinsAsNonvoter deletes a stopped
// node's meta replica directory, or its log, or all of its replicas. The meta group still counts the node as a voter, so the node
// must not open an empty meta replica, which would vote for anyone, until
// the group's leader has made it a non-voter; then the replica catches
// up, is promoted, and a user added while the node was down logs in
// through it.
func TestMetaReplicaWithoutRaftStateRejoinsAsNonvoter(t *testing.T) {
	members := func(dir string) string { return filepath.Join(dir, "cluster", "members.json") }
	remove := func(paths func(dir string) []string) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			for _, path := range paths(dir) {
				if _, err := os.Stat(path); err != nil {
					t.Fatal(err)
				}
				if err := os.RemoveAll(path); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	t.Run("shards/0 deleted", func(t *testing.T) {
		testMetaWithoutRaftState(t, remove(func(dir string) []string { return []string{raftstore.ReplicaDir(dir, 0)} }))
	})
	t.Run("shards/0 and the members file deleted", func(t *testing.T) {
		// The members come from a mail replica's Raft state.
		testMetaWithoutRaftState(t, remove(func(dir string) []string { return []string{raftstore.ReplicaDir(dir, 0), members(dir)} }))
	})
	t.Run("shards/0/wal deleted", func(t *testing.T) {
		// raft.db keeps the term and vote, state.db the records.
		testMetaWithoutRaftState(t, remove(func(dir string) []string { return []string{filepath.Join(raftstore.ReplicaDir(dir, 0), "wal")} }))
	})
	t.Run("shards/0/wal damaged", func(t *testing.T) {
		testMetaWithoutRaftState(t, func(t *testing.T, dir string) {
			wal := filepath.Join(raftstore.ReplicaDir(dir, 0), "wal")
			if _, err := logdamage.Command(wal, 0); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("shards deleted", func(t *testing.T) {
		testMetaWithoutRaftState(t, remove(func(dir string) []string { return []string{raftstore.ReplicasRoot(dir)} }))
	})
}

func testMetaWithoutRaftState(t *testing.T, harm func(t *testing.T, dataDir string)) {
	const victimID = "n3"
	var c *clustertest.Cluster
	// votes reports how the meta group's leader counts the victim now; it
	// looks only at the other nodes, since the victim may be starting.
	votes := func() (voter, member, known bool) {
		for _, n := range c.Nodes {
			if n.ID == victimID || !n.Running() {
				continue
			}
			s := replicaOf(n, 0)
			if s == nil || !s.IsLeader() {
				continue
			}
			servers, err := s.Servers()
			if err != nil {
				return false, false, false
			}
			for _, srv := range servers {
				if srv.ID == victimID {
					return srv.Voter, true, true
				}
			}
			return false, false, true
		}
		return false, false, false
	}
	var armed atomic.Bool   // set for the restart
	var atOpen atomic.Value // string: how the leader counted the victim as its meta replica opened
	watch := &openWatch{node: victimID, shard: 0, onOpen: func() {
		if !armed.Load() {
			return
		}
		voter, member, known := votes()
		atOpen.Store(fmt.Sprintf("voter=%v member=%v leader known=%v", voter, member, known))
	}}
	c = clustertest.Start(t, clustertest.Options{MailShards: 2, Logger: slog.New(watch)})
	c.AddUser("first@example.test", "password-1")
	victim := c.Nodes[len(c.Nodes)-1]
	if victim.ID != victimID {
		t.Fatalf("the last node is %s, not %s", victim.ID, victimID)
	}
	via := otherThan(c, victim)
	c.Eventually(time.Minute, "the victim a voter of the meta group", func() error {
		if voter, _, _ := votes(); !voter {
			return errors.New("not a voter")
		}
		return nil
	})
	victim.Stop()
	harm(t, victim.Dir)
	c.Eventually(time.Minute, "a user added through "+via.ID, func() error {
		return via.Directory().AddUser(testCtx(t), "second@example.test", "password-2")
	})
	atOpen.Store("never opened")
	armed.Store(true)
	if err := victim.Start(); err != nil {
		t.Fatalf("the node without a meta replica did not start: %v", err)
	}
	if got := atOpen.Load().(string); got != "voter=false member=false leader known=true" && got != "voter=false member=true leader known=true" {
		t.Fatalf("the empty meta replica opened while its group's leader counted it as %s", got)
	}
	c.Eventually(2*time.Minute, "the new meta replica promoted to voter with both users", func() error {
		if voter, _, _ := votes(); !voter {
			return errors.New("not a voter yet")
		}
		if n := len(victim.Cluster().Shards()); n != 3 {
			return fmt.Errorf("%d of 3 replicas open", n)
		}
		return metaHolds(victim, 2)
	})
	victim.Login("second@example.test", "password-2")
	victim.Login("first@example.test", "password-1")
}

// TestLostIdentityIsRefused: a member whose cluster identity folder is
// lost must not start as the first node of a new cluster, with a new CA,
// over replicas that belong to the old one; it refuses with what to do.
func TestLostIdentityIsRefused(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	victim := c.Nodes[len(c.Nodes)-1]
	victim.Stop()
	identity := filepath.Join(victim.Dir, "cluster")
	if err := os.RemoveAll(identity); err != nil {
		t.Fatal(err)
	}
	err := victim.Start()
	if err == nil {
		t.Fatal("a member without its cluster identity started")
	}
	if !strings.Contains(err.Error(), "cluster identity") || !strings.Contains(err.Error(), "mailnode cluster remove "+victim.ID) {
		t.Fatalf("the refusal does not say what is missing and what to do: %v", err)
	}
	if _, err := os.Stat(identity); err == nil {
		if entries, _ := os.ReadDir(identity); len(entries) > 0 {
			t.Fatalf("the refused start made a new identity: %d files in %s", len(entries), identity)
		}
	}
}

// TestSoleVoterKeepsItsDamagedLog: a single node has no other replica to
// refill a damaged log from, so it does not set it aside (its shard
// would stay closed for good) but opens it as it is, and serves the mail
// its state file holds.
func TestSoleVoterKeepsItsDamagedLog(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Replicas: 1, MailShards: 2})
	const user = "alone@example.test"
	c.AddUser(user, "password-1")
	n := c.Nodes[0]
	shard := shardOf(t, c, user)
	var acked []int
	for i := 0; i < 3; i++ {
		c.Eventually(time.Minute, fmt.Sprintf("delivery of m%d", i), func() error { return deliverRandom(n, user, i) })
		acked = append(acked, i)
	}
	n.Stop()
	wal := filepath.Join(raftstore.ReplicaDir(n.Dir, shard), "wal")
	if _, err := logdamage.Command(wal, 0); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(raftstore.ReplicaDir(n.Dir, shard), "wal.damaged")); !os.IsNotExist(err) {
		t.Fatalf("a sole voter set its damaged log aside (%v)", err)
	}
	checkAcked(t, n, user, acked)
	c.Eventually(time.Minute, "a delivery after the restart", func() error { return deliverRandom(n, user, 3) })
	checkAcked(t, n, user, append(acked, 3))
}

// TestLogDamagedWhileRunningIsSetAside: an entry of a running leader's
// log is damaged on disk, and a follower that was away needs it, so the
// leader reads it back from its files: it reads as missing, the node
// closes its replica, whose reopen finds the damage and sets the log
// aside, and the replica rejoins as a new member. Every acknowledged
// message stays, on every replica.
func TestLogDamagedWhileRunningIsSetAside(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 2})
	const user = "rot@example.test"
	c.AddUser(user, "password-1")
	shard := shardOf(t, c, user)
	// The leader that reads the damaged entry must stay the leader until
	// then: the one in the shard's home region.
	leader := homeLeader(t, c, shard)
	away := otherThan(c, leader)
	var acked []int
	deliver := func(i int) {
		c.Eventually(time.Minute, fmt.Sprintf("delivery of m%d", i), func() error { return deliverRandom(leader, user, i) })
		acked = append(acked, i)
	}
	deliver(0)
	c.Eventually(time.Minute, "m0 applied on "+away.ID, func() error {
		if st := replicaOf(away, shard).Status(); st.AppliedIndex < replicaOf(leader, shard).Status().CommitIndex {
			return fmt.Errorf("applied %d", st.AppliedIndex)
		}
		return nil
	})
	away.Stop()
	// Written after the stop: the away node lacks it.
	needs := replicaOf(leader, shard).Status().LastIndex + 1
	// Past the leader's cache of recent entries (8 MiB): 48 KiB messages.
	for i := 1; i <= 400; i++ {
		deliver(i)
	}
	wal := filepath.Join(raftstore.ReplicaDir(leader.Dir, shard), "wal")
	// Not among the first entries the leader sends: it may have read
	// those before the damage, for a request that waited for the node.
	if _, err := logdamage.Command(wal, needs+100); err != nil {
		t.Fatal(err)
	}
	if err := away.Start(); err != nil {
		t.Fatal(err)
	}
	c.Eventually(2*time.Minute, "the damaged log set aside", func() error {
		_, err := os.Stat(filepath.Join(raftstore.ReplicaDir(leader.Dir, shard), "wal.damaged"))
		return err
	})
	c.Eventually(2*time.Minute, "every replica a voter again, with every acknowledged message", func() error {
		l := c.Leader(shard)
		if l == nil {
			return errors.New("no leader")
		}
		servers, err := replicaOf(l, shard).Servers()
		if err != nil {
			return err
		}
		for _, srv := range servers {
			if !srv.Voter {
				return fmt.Errorf("%s not a voter yet", srv.ID)
			}
		}
		for _, n := range c.Nodes {
			s := replicaOf(n, shard)
			if s == nil {
				return fmt.Errorf("no replica open on %s", n.ID)
			}
			var st raftstore.Stats
			if err := s.View(func(r *raftstore.Reader) error { st = r.Stats(); return nil }); err != nil {
				return err
			}
			if st.Messages != len(acked) {
				return fmt.Errorf("%s holds %d messages, %d acknowledged", n.ID, st.Messages, len(acked))
			}
		}
		return nil
	})
	checkAcked(t, leader, user, acked)
}
