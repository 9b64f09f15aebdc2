package backup

import (
	"reflect"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
)

// TestClusterBackupRestore: a backup taken through a node that keeps only
// some of the shards still holds every shard once (the others are copied
// from the nodes that keep them); restored, it starts as a one-node
// cluster that another node joins, and every user finds the same mail.
func TestClusterBackupRestore(t *testing.T) {
	tc := clustertest.Start(t, clustertest.Options{Nodes: 3, MailShards: 3, Replicas: 2})
	id, rcpt, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	first := tc.Nodes[0]
	tc.Eventually(30*time.Second, "directory ready", func() error { return first.Directory().Init(testCtx(t)) })
	if err := first.Directory().SetBackupRecipient(testCtx(t), rcpt); err != nil {
		t.Fatal(err)
	}
	// Pick the node that keeps the fewest replicas to take the backup.
	via := tc.Nodes[0]
	for _, n := range tc.Nodes {
		if len(n.Cluster().Shards()) < len(via.Cluster().Shards()) {
			via = n
		}
	}
	if len(via.Cluster().Shards()) == 4 {
		t.Fatal("every node keeps every shard: the remote copy is not exercised")
	}
	n := &node{c: &testCluster{n: via}, identity: id, master: first.MasterKey}
	users := []string{"ida@example.test", "jon@example.test", "kim@example.test", "lea@example.test"}
	for _, u := range users {
		tc.AddUser(u, "password-"+u)
		n.deliver(t, u, "hello "+u, canary+" for "+u)
	}
	before := map[string]mailState{}
	for _, u := range users {
		before[u] = readState(t, n.login(t, n.c, u))
	}
	targets := fileTargets(t, "eu", "us")
	r := newRunner(t, Config{Targets: targets, Cluster: n.c})
	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res.Manifest.Shards); got != 4 {
		t.Fatalf("backup holds %d shards, want meta and 3 mail shards", got)
	}
	msgs := 0
	for _, s := range res.Manifest.Shards {
		msgs += s.Counts.Messages
	}
	if msgs != len(users) {
		t.Fatalf("backup counts %d messages, want %d (each shard once)", msgs, len(users))
	}

	// Restore on a new machine and start a new cluster from it.
	dir := t.TempDir() + "/restored"
	rr := newRunner(t, Config{Targets: targets})
	if _, err := rr.Restore(testCtx(t), RestoreOptions{Identity: id, Dir: dir, NodeID: "n1"}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	key := first.MasterKey
	restored := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 3, FirstDir: dir, FirstKey: &key})
	rn := restored.Nodes[0]
	restored.Eventually(30*time.Second, "directory ready", func() error { return rn.Directory().Init(testCtx(t)) })
	// The old cluster's nodes are gone from the restored one.
	if nodes := rn.Cluster().Status().Nodes; len(nodes) != 1 || nodes[0].ID != "n1" {
		t.Fatalf("restored cluster counts nodes %+v", nodes)
	}
	joined := restored.AddNode("r2")
	restored.WaitConverged(time.Minute)
	rc := &testCluster{n: joined}
	for _, u := range users {
		after := readState(t, n.login(t, rc, u))
		if !reflect.DeepEqual(before[u], after) {
			t.Fatalf("%s after restore differs:\nbefore %+v\nafter  %+v", u, summary(before[u]), summary(after))
		}
	}
	if doms, err := joined.Directory().Domains(testCtx(t)); err != nil || len(doms) != 1 || doms[0].KeyMode != directory.KeyModeUser {
		t.Fatalf("domains after restore: %+v, %v", doms, err)
	}
}
