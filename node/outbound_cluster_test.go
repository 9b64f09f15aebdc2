package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestOutboundLeaderChange: in a three-node cluster every node runs a
// deliverer, and only the leader of the sender's shard delivers. A
// message the remote defers stays queued while that leader is killed;
// the new leader picks the queue up and the message arrives once.
func TestOutboundLeaderChange(t *testing.T) {
	port := mtatest.FreePort(t)
	refusing := mtatest.StartSink(t, port, "-r", "RCPT")
	dns := dnstest.StartNSD(t, outboundZones())
	r := DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}.resolver()
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, MailShards: 2})
	c.WaitConverged(time.Minute)
	c.AddUser("alice@example.test", "alice-password")

	deliverers := map[string]*outbound.Deliverer{}
	for _, n := range c.Nodes {
		d := outbound.New(n.Store(), outbound.Config{Hostname: n.ID + ".example.test", Resolver: r, Port: port,
			RetryBase: 300 * time.Millisecond, Poll: 200 * time.Millisecond,
			// A leader killed during an attempt leaves its claim behind
			// for this long. A finished entry stays long enough for the
			// check below to see it: one look at the queue during the
			// election can take seconds on a loaded machine, and with 1 s
			// the entry was once delivered and gone between two looks.
			AttemptTimeout: 5 * time.Second, Retain: 10 * time.Second})
		deliverers[n.ID] = d
		t.Cleanup(d.Close)
	}
	ctx := context.Background()
	first := c.Nodes[0]
	u, err := first.Directory().UserByAddress(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	sub := schema.Submission{User: "alice@example.test", From: "alice@example.test", Recipients: []string{"bob@remote.test"},
		Message: []byte("From: <alice@example.test>\r\nSubject: failover\r\n\r\nbody\r\n")}
	if err := first.Store().Submit(ctx, sub); err != nil {
		t.Fatal(err)
	}
	entries := func() ([]schema.OutboundEntry, error) {
		for _, n := range c.Running() {
			es, err := n.Store().OutboundEntries(ctx)
			if err == nil {
				return es, nil
			}
		}
		return nil, fmt.Errorf("no node answers")
	}
	c.Eventually(time.Minute, "a deferred attempt", func() error {
		es, err := entries()
		if err != nil {
			return err
		}
		if len(es) != 1 || es[0].State.Recipients[0].Code != 450 {
			return fmt.Errorf("queue %+v", es)
		}
		return nil
	})
	leader := c.Leader(u.Shard)
	if leader == nil {
		t.Fatal("no leader of the sender's shard")
	}
	// The node dies with its deliverer (a node closes its deliverer
	// before its store, which the deliverer uses).
	deliverers[leader.ID].Close()
	leader.Kill()
	refusing.Stop()
	accepting := mtatest.StartSink(t, port)
	c.Eventually(time.Minute, "delivery by the new leader", func() error {
		es, err := entries()
		if err != nil {
			return err
		}
		if len(es) != 1 || es[0].Finished.IsZero() {
			return fmt.Errorf("queue %+v", es)
		}
		return nil
	})
	if nl := c.Leader(u.Shard); nl == nil || nl.ID == leader.ID {
		t.Fatalf("shard %d led by %v after the kill", u.Shard, nl)
	}
	if got := accepting.Messages(t); len(got) != 1 {
		t.Fatalf("remote got %d copies, want 1", len(got))
	}
	// A finished entry is removed after its retention.
	c.Eventually(time.Minute, "the finished entry removed", func() error {
		es, err := entries()
		if err != nil {
			return err
		}
		if len(es) != 0 {
			return fmt.Errorf("queue %+v", es)
		}
		return nil
	})
}
