//go:build linux

package cluster_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// fullDisk mounts a small tmpfs for the first node's data directory and
// returns its path and a function that fills it up to about 1 MiB of
// room with a ballast file and one that frees it. A full disk needs the
// mount (root); the test is skipped where it cannot.
func fullDisk(t *testing.T) (dir string, fill, free func()) {
	t.Helper()
	dir = t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("a full disk is simulated with a tmpfs mount, which needs root: %v", err)
	}
	ballast := filepath.Join(dir, "ballast")
	fill = func() {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		room := int64(st.Bavail) * st.Bsize
		if err := os.WriteFile(ballast, make([]byte, max(room-1<<20, 0)), 0o600); err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Fatal(err)
		}
	}
	free = func() {
		if err := os.Remove(ballast); err != nil {
			t.Fatal(err)
		}
	}
	return dir, fill, free
}

// deliverRandom delivers message i of 48 KiB of random bytes in base64
// lines (nothing to compress) to rcpt through n.
func deliverRandom(n *clustertest.Node, rcpt string, i int) error {
	raw := make([]byte, 48<<10)
	rand.Read(raw)
	b64 := base64.StdEncoding.EncodeToString(raw)
	var body strings.Builder
	for len(b64) > 76 {
		body.WriteString(b64[:76] + "\r\n")
		b64 = b64[76:]
	}
	body.WriteString(b64 + "\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return n.Store().Deliver(ctx, schema.Delivery{From: "bob@example.net", Recipients: []string{rcpt},
		Message: []byte(fmt.Sprintf("Subject: m%d\r\nMessage-ID: <m%d@test>\r\n\r\n%s", i, i, body.String()))})
}

// checkAcked fails the test unless every acknowledged message is in the
// user's INBOX, read through n, once.
func checkAcked(t *testing.T, n *clustertest.Node, user string, acked []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acct := n.Login(user, "password-1")
	msgs := inboxMessages(t, acct)
	found := map[string]int{}
	for _, m := range msgs {
		h, err := acct.Header(ctx, m.Blob)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(h), "\r\n") {
			if v, ok := strings.CutPrefix(line, "Subject: "); ok {
				found[v]++
			}
		}
	}
	for _, k := range acked {
		if c := found[fmt.Sprintf("m%d", k)]; c != 1 {
			t.Errorf("acknowledged message m%d found %d times", k, c)
		}
	}
	t.Logf("%d acknowledged, %d in the mailbox", len(acked), len(msgs))
}

// TestNodeRecoversFromAFullDisk fills a node's disk until deliveries
// fail, then frees room: deliveries must work again without a restart
// (a replica whose state file failed a write is reopened and replays its
// log), and every acknowledged message must be there.
func TestNodeRecoversFromAFullDisk(t *testing.T) {
	dir, fill, free := fullDisk(t)
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Replicas: 1, MailShards: 2, FirstDir: filepath.Join(dir, "n1")})
	// Unmounted after the cluster stops (cleanups run last first).
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	const user = "full@example.test"
	c.AddUser(user, "password-1")
	n := c.Nodes[0]
	fill()

	var acked []int
	var failures int
	i := 0
	for ; i < 400 && failures < 3; i++ {
		if err := deliverRandom(n, user, i); err != nil {
			failures++
			continue
		}
		acked = append(acked, i)
	}
	if failures < 3 {
		t.Fatalf("%d deliveries of 64 KiB into 1 MiB of room did not fail", i)
	}
	t.Logf("disk full after %d deliveries, %d acknowledged", i, len(acked))

	free()
	// Room again: deliveries succeed without a restart.
	c.Eventually(90*time.Second, "a delivery after the disk has room again", func() error {
		err := deliverRandom(n, user, i)
		if err == nil {
			acked = append(acked, i)
		}
		i++
		return err
	})
	for k := 0; k < 5; k++ {
		if err := deliverRandom(n, user, i); err != nil {
			t.Fatalf("delivery %d after the recovery: %v", i, err)
		}
		acked = append(acked, i)
		i++
	}
	checkAcked(t, n, user, acked)
}

// TestReplicaOnAFullDiskCatchesUp: one node of three runs out of disk
// while mail comes in through another. The other two replicas carry
// every shard, so mail is still acknowledged (a delivery may need a
// retry while a group leading on the full node moves); once the node
// has room again, its replicas, reopened where a state write failed,
// catch up with the log without a restart.
func TestReplicaOnAFullDiskCatchesUp(t *testing.T) {
	dir, fill, free := fullDisk(t)
	c := clustertest.Start(t, clustertest.Options{MailShards: 2, FirstDir: filepath.Join(dir, "n1")})
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	const user = "full3@example.test"
	c.AddUser(user, "password-1")
	full, via := c.Nodes[0], c.Nodes[1]
	fill()

	stopped := func() error {
		for _, s := range full.Cluster().Shards() {
			if s.Status().Stopped != "" {
				return nil
			}
		}
		return errors.New("every replica on the full node applies")
	}
	// 60 × 48 KiB do not fit into the full node's 1 MiB: a replica there
	// stops. It is reopened now and then (and stops again at once while
	// the disk is full), so it is watched after every delivery.
	var acked []int
	hit := false
	for i := 0; i < 60; i++ {
		c.Eventually(time.Minute, fmt.Sprintf("delivery %d with one node's disk full", i), func() error {
			return deliverRandom(via, user, i)
		})
		acked = append(acked, i)
		hit = hit || stopped() == nil
	}
	if !hit {
		c.Eventually(30*time.Second, "a replica on the full node stops", stopped)
	}
	// The cluster's status, as another node sees it, says so.
	markedStopped := func() bool {
		for _, sh := range via.Cluster().Status().Shards {
			for _, r := range sh.Replicas {
				if r.Node == full.ID && r.Stopped {
					return true
				}
			}
		}
		return false
	}
	c.Eventually(30*time.Second, "cluster status marks a replica on the full node stopped", func() error {
		if !markedStopped() {
			return errors.New("no replica marked stopped")
		}
		return nil
	})

	// Caught up: no replica stopped, and each has applied, as it reports
	// now, what its group's leader has committed.
	caughtUp := func() error {
		// A replica whose reopen failed is closed until its next attempt.
		if got := len(full.Cluster().Shards()); got != 3 {
			return fmt.Errorf("%d of 3 replicas open", got)
		}
		if markedStopped() {
			return errors.New("cluster status still marks a replica stopped")
		}
		for _, s := range full.Cluster().Shards() {
			if err := s.Broken(); err != nil {
				return err
			}
			leader := c.Leader(s.ID())
			if leader == nil {
				return fmt.Errorf("shard %d has no leader", s.ID())
			}
			commit := uint64(0)
			for _, ls := range leader.Cluster().Shards() {
				if ls.ID() == s.ID() {
					commit = ls.Status().CommitIndex
				}
			}
			if applied := s.Status().AppliedIndex; applied < commit {
				return fmt.Errorf("shard %d: applied %d of %d", s.ID(), applied, commit)
			}
		}
		return nil
	}
	free()
	c.Eventually(2*time.Minute, full.ID+" caught up after its disk has room again", caughtUp)
	c.WaitConverged(time.Minute)
	checkAcked(t, full, user, acked)
}
