package cluster_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestNoPlaintextOnAnyReplica: mail sealed on the node that received it
// reaches every replica as ciphertext: no file of any node (Raft logs,
// snapshots, state, cluster identity) holds the message's words, the
// user's address or the domain name.
func TestNoPlaintextOnAnyReplica(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	canary := "CANARY-cluster-" + schema.NewID().String()
	addr := "canary@secret-domain.test"
	c.AddUser(addr, "password-1")
	ctx := testCtx(t)
	msg := "From: " + canary + "@remote.test\r\nSubject: " + canary + "\r\n\r\n" + canary + " body\r\n"
	if err := c.Nodes[1].Store().Deliver(ctx, schema.Delivery{From: canary + "@remote.test", Recipients: []string{addr}, Message: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
	acct := c.Nodes[2].Login(addr, "password-1")
	if err := acct.CreateMailbox(ctx, "Folder "+canary, ""); err != nil {
		t.Fatal(err)
	}
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsAdd, []string{"$" + canary}); err != nil {
		t.Fatal(err)
	}
	// Every replica has applied it all, then snapshots and truncates.
	n := shardOf(t, c, addr)
	c.Eventually(time.Minute, "replicas caught up", func() error { return sameApplied(c, n) })
	for _, node := range c.Nodes {
		if err := node.Cluster().Compact(ctx); err != nil {
			t.Fatal(err)
		}
	}
	needles := [][]byte{[]byte(canary), []byte(addr), []byte("secret-domain")}
	files := 0
	for _, node := range c.Nodes {
		err := filepath.WalkDir(node.Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() || d.Type()&fs.ModeSocket != 0 {
				return nil
			}
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			files++
			for _, needle := range needles {
				if bytes.Contains(b, needle) {
					t.Errorf("%s holds %q in the clear", path, needle)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files < 3*4 {
		t.Fatalf("scanned only %d files", files)
	}
}

// TestPasswordChangeAndDeletionReachEveryNode: a password changed or a
// user deleted through one node stops working on every node.
func TestPasswordChangeAndDeletionReachEveryNode(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	c.AddUser("hal@example.test", "old-password")
	ctx := testCtx(t)
	for _, n := range c.Nodes {
		n.Login("hal@example.test", "old-password")
	}
	if err := c.Nodes[0].Directory().SetPassword(ctx, "hal@example.test", "new-password"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		c.Eventually(30*time.Second, "old password refused on "+n.ID, func() error {
			if _, err := n.Store().Authenticate(ctx, schema.Credentials{Username: "hal@example.test", Password: "old-password"}); !errors.Is(err, schema.ErrAuthFailed) {
				return fmt.Errorf("old password: %v", err)
			}
			return nil
		})
		n.Login("hal@example.test", "new-password")
	}
	if err := c.Nodes[1].Directory().DeleteUser(ctx, "hal@example.test"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		c.Eventually(30*time.Second, "deleted user refused on "+n.ID, func() error {
			if _, err := n.Store().Authenticate(ctx, schema.Credentials{Username: "hal@example.test", Password: "new-password"}); !errors.Is(err, schema.ErrAuthFailed) {
				return fmt.Errorf("deleted user: %v", err)
			}
			return nil
		})
	}
}
