package cluster_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
)

// TestBroadcastReachesEveryNode: a message broadcast on one node reaches
// the handler of its topic on every other node, once and in order, with
// the sender named, and not the sender itself.
func TestBroadcastReachesEveryNode(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 1})
	nodes := c.Running()
	var mu sync.Mutex
	got := map[string][]string{}
	for _, n := range nodes {
		id := n.ID
		n.Cluster().HandleBroadcast("test", func(from string, msg []byte) {
			mu.Lock()
			got[id] = append(got[id], from+":"+string(msg))
			mu.Unlock()
		})
	}
	received := func(id string) []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got[id]...)
	}
	nodes[0].Cluster().Broadcast("test", []byte(`"one"`))
	nodes[0].Cluster().Broadcast("test", []byte(`"two"`))
	for _, n := range nodes[1:] {
		c.Eventually(10*time.Second, "broadcast on "+n.ID, func() error {
			if r := received(n.ID); len(r) != 2 || r[0] != nodes[0].ID+`:"one"` || r[1] != nodes[0].ID+`:"two"` {
				return fmt.Errorf("%s received %q", n.ID, r)
			}
			return nil
		})
	}
	if r := received(nodes[0].ID); len(r) != 0 {
		t.Errorf("the sender received its own broadcast: %q", r)
	}
}
