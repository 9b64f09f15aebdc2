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

// TestNodeRecoversFromAFullDisk fills a node's disk until deliveries
// fail, then frees room: deliveries must work again without a restart
// (a replica whose state file failed a write is reopened and replays its
// log), and every acknowledged message must be there. The data directory
// is a small tmpfs, so the test needs to mount one (root); it is skipped
// where it cannot.
func TestNodeRecoversFromAFullDisk(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("a full disk is simulated with a tmpfs mount, which needs root: %v", err)
	}
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Replicas: 1, MailShards: 2, FirstDir: filepath.Join(dir, "n1")})
	// Unmounted after the cluster stops (cleanups run last first).
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	c.AddUser("full@example.test", "password-1")
	n := c.Nodes[0]

	// All but about 1 MiB goes to a ballast file.
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	ballast := filepath.Join(dir, "ballast")
	if err := os.WriteFile(ballast, make([]byte, max(free-1<<20, 0)), 0o600); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}

	// 64 KiB of random bytes in base64 lines: nothing to compress.
	deliver := func(i int) error {
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
		return n.Store().Deliver(ctx, schema.Delivery{From: "bob@example.net", Recipients: []string{"full@example.test"},
			Message: []byte(fmt.Sprintf("Subject: m%d\r\nMessage-ID: <m%d@test>\r\n\r\n%s", i, i, body.String()))})
	}
	var acked []int
	var failures int
	i := 0
	for ; i < 400 && failures < 3; i++ {
		if err := deliver(i); err != nil {
			failures++
			continue
		}
		acked = append(acked, i)
	}
	if failures < 3 {
		t.Fatalf("%d deliveries of 64 KiB into 1 MiB of room did not fail", i)
	}
	t.Logf("disk full after %d deliveries, %d acknowledged", i, len(acked))

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	// Room again: deliveries succeed without a restart.
	c.Eventually(90*time.Second, "a delivery after the disk has room again", func() error {
		err := deliver(i)
		if err == nil {
			acked = append(acked, i)
		}
		i++
		return err
	})
	for k := 0; k < 5; k++ {
		if err := deliver(i); err != nil {
			t.Fatalf("delivery %d after the recovery: %v", i, err)
		}
		acked = append(acked, i)
		i++
	}

	// Every acknowledged message is there, once.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acct := n.Login("full@example.test", "password-1")
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acct.Snapshot(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]int{}
	for _, m := range snap.Messages {
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
	t.Logf("%d acknowledged, %d in the mailbox", len(acked), len(snap.Messages))
}
