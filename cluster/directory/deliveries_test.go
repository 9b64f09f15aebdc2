package directory_test

import (
	"bytes"
	"fmt"
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

// TestRecordDeliveriesInBatches: many deliveries are written in a few
// meta-shard commands (more than one command's bound of records, so the
// batch is split), each reaches its users' records as RecordDelivery's
// would, a delivery whose submitter is unknown fails alone, and the
// records are pruned by age as before.
func TestRecordDeliveriesInBatches(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	c.AddUser("ann@example.test", "ann-password")
	c.AddUser("ben@example.test", "ben-password")
	ctx := testCtx(t)
	d := c.Nodes[0].Directory()
	now := time.Now().UTC()
	const n = 300
	var ds []directory.Delivery
	for i := range n {
		ds = append(ds, directory.Delivery{Record: directory.DeliveryRecord{
			Time: now.Add(-time.Duration(n-i) * time.Minute), Node: "n1", Port: "mx", Remote: "192.0.2.9",
			From: "far@remote.test", Recipients: []string{"ben@example.test"}, MessageID: fmt.Sprintf("<m%d@remote.test>", i),
			Result: "accepted", Reply: "250 2.0.0"}})
	}
	ds[7].Submitter = "nobody@example.test" // its recipient's record is written, the submitter's is not
	ds[8].Submitter = "ann@example.test"
	applied := func() (i uint64) {
		_ = c.Nodes[0].Cluster().ViewMeta(func(r *raftstore.Reader) error { i = r.AppliedIndex(); return nil })
		return i
	}
	before := applied()
	errs := d.RecordDeliveries(ctx, ds)
	for i, err := range errs {
		if (err != nil) != (i == 7) {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	// 301 records, at most 256 to a command: two commands (a few more
	// entries may be the cluster's own).
	if k := applied() - before; k > 10 {
		t.Fatalf("%d meta entries for %d records, want about 2", k, n+1)
	}
	ben, err := d.Deliveries(ctx, "ben@example.test", time.Time{})
	if err != nil || len(ben) != n {
		t.Fatalf("ben's records: %d, %v; want %d", len(ben), err, n)
	}
	for i, r := range ben {
		if r.MessageID != fmt.Sprintf("<m%d@remote.test>", i) || r.Direction != "in" {
			t.Fatalf("ben's record %d: %+v", i, r)
		}
	}
	if ann, _ := d.Deliveries(ctx, "ann@example.test", time.Time{}); len(ann) != 1 || ann[0].Direction != "out" {
		t.Fatalf("ann's records %+v", ann)
	}
	// Records older than 100 minutes go (200 of ben's, ann's one), the
	// rest stay.
	if k, err := d.PruneDeliveries(ctx, now.Add(-100*time.Minute-time.Second)); err != nil || k != 201 {
		t.Fatalf("prune: %d, %v; want 201", k, err)
	}
	if ben, _ := d.Deliveries(ctx, "ben@example.test", time.Time{}); len(ben) != 100 {
		t.Fatalf("ben's records after the prune: %d", len(ben))
	}
}
