package directory_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
)

// TestDeliveryRecords: a delivery is recorded for each local recipient
// (with the recipients that reached it) and for the submitter, read back
// through another node, sealed under the user's key (no address in the
// clear), pruned by age, and deleted with the user.
func TestDeliveryRecords(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2})
	c.AddUser("ann@example.test", "ann-password")
	c.AddUser("ben@example.test", "ben-password")
	ctx := testCtx(t)
	d0, d1 := c.Nodes[0].Directory(), c.Nodes[1].Directory()
	now := time.Now().UTC()
	rec := func(ago time.Duration, rcpts ...string) directory.DeliveryRecord {
		return directory.DeliveryRecord{Time: now.Add(-ago), Node: "n1", Port: "submission", Remote: "192.0.2.9",
			From: "ann@example.test", Recipients: rcpts, MessageID: "<id-canary-77@example.test>", TLS: "TLS 1.3",
			Result: "accepted", Reply: "250 2.0.0"}
	}
	n, err := d0.RecordDelivery(ctx, rec(48*time.Hour, "Ben@example.test", "far@remote.test"), "ann@example.test")
	if err != nil || n != 2 {
		t.Fatalf("record: %d, %v; want 2 records", n, err)
	}
	if n, err := d0.RecordDelivery(ctx, rec(time.Minute, "ben@example.test"), ""); err != nil || n != 1 {
		t.Fatalf("record an MX delivery: %d, %v", n, err)
	}
	ben, err := d1.Deliveries(ctx, "ben@example.test", time.Time{})
	if err != nil || len(ben) != 2 {
		t.Fatalf("ben's deliveries through node 1: %+v, %v", ben, err)
	}
	if ben[0].Direction != "in" || len(ben[0].Recipients) != 1 || ben[0].MessageID != "<id-canary-77@example.test>" || ben[0].TLS != "TLS 1.3" {
		t.Fatalf("ben's first record %+v", ben[0])
	}
	ann, _ := d1.Deliveries(ctx, "ann@example.test", time.Time{})
	if len(ann) != 1 || ann[0].Direction != "out" || len(ann[0].Recipients) != 2 {
		t.Fatalf("ann's records %+v", ann)
	}
	// Nothing of a record is in the clear in the meta shard.
	_ = c.Nodes[0].Cluster().ViewMeta(func(r *raftstore.Reader) error {
		for k, v := range r.Settings("deliveries/") {
			if bytes.Contains(v, []byte("id-canary-77")) || bytes.Contains([]byte(k), []byte("ben")) {
				t.Errorf("a delivery record in the clear: %s", k)
			}
		}
		return nil
	})
	if k, err := d0.PruneDeliveries(ctx, now.Add(-24*time.Hour)); err != nil || k != 2 {
		t.Fatalf("prune by age: %d, %v; want 2", k, err)
	}
	if ben, _ := d0.Deliveries(ctx, "ben@example.test", time.Time{}); len(ben) != 1 {
		t.Fatalf("ben's records after the prune: %+v", ben)
	}
	rep, err := d0.EraseUser(ctx, "ben@example.test")
	if err != nil || rep.Removed["delivery_records"] != 1 {
		t.Fatalf("delete ben: %+v, %v", rep, err)
	}
}
