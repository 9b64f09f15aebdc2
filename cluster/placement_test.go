package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// regionOf maps node ids to regions.
func regionOf(c *clustertest.Cluster) map[string]string {
	out := map[string]string{}
	for _, n := range c.Nodes {
		out[n.ID] = n.Region
	}
	return out
}

// TestFiveNodesPlacement: five nodes in three regions. The meta shard has
// five voters; every mail shard has three voting replicas in three
// regions, one of them in its home region, and its leader there.
func TestFiveNodesPlacement(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 5, MailShards: 6})
	regions := regionOf(c)
	c.Eventually(time.Minute, "placement spread over regions with leaders at home", func() error {
		st := c.Nodes[0].Cluster().Status()
		homes := map[string]int{}
		for _, s := range st.Shards {
			voters, seen := 0, map[string]bool{}
			for _, r := range s.Replicas {
				if r.Voter {
					voters++
					seen[regions[r.Node]] = true
				}
			}
			if s.Shard == 0 {
				if voters != cluster.MaxMetaVoters {
					return fmt.Errorf("meta shard has %d voters, want %d", voters, cluster.MaxMetaVoters)
				}
				continue
			}
			homes[s.Home]++
			if voters != 3 || len(seen) != 3 {
				return fmt.Errorf("shard %d: %d voters in %d regions", s.Shard, voters, len(seen))
			}
			if regions[s.Leader] != s.Home {
				return fmt.Errorf("shard %d: leader %s is in %s, home is %s", s.Shard, s.Leader, regions[s.Leader], s.Home)
			}
		}
		for _, r := range []string{"r1", "r2", "r3"} {
			if homes[r] != 2 {
				return fmt.Errorf("homes per region %v, want 2 each", homes)
			}
		}
		return nil
	})
}

// TestRegionPinnedDomain: a domain pinned to a region puts its users on
// shards homed there, whose leaders move there; the pin is listed and a
// region without nodes is refused.
func TestRegionPinnedDomain(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, MailShards: 6})
	d := c.Nodes[0].Directory()
	ctx := testCtx(t)
	if err := d.AddDomain(ctx, "nowhere.test", "", "mars"); err == nil {
		t.Fatal("a domain was pinned to a region without nodes")
	}
	if err := d.AddDomain(ctx, "eu.test", directory.KeyModeUser, "r2"); err != nil {
		t.Fatal(err)
	}
	doms, err := c.Nodes[2].Directory().Domains(ctx)
	if err != nil || len(doms) != 1 || doms[0].Region != "r2" {
		t.Fatalf("domains as another node lists them: %+v, %v", doms, err)
	}
	// Homes are spread before users arrive.
	c.Eventually(time.Minute, "homes spread", func() error {
		for _, s := range c.Nodes[0].Cluster().Status().Shards {
			if s.Shard != 0 && s.Home == "r2" {
				return nil
			}
		}
		return fmt.Errorf("no shard homed in r2")
	})
	for i := 0; i < 4; i++ {
		if err := d.AddUser(ctx, fmt.Sprintf("u%d@eu.test", i), "password-1"); err != nil {
			t.Fatal(err)
		}
	}
	regions := regionOf(c)
	c.Eventually(time.Minute, "pinned users' shards led from r2", func() error {
		st := c.Nodes[1].Cluster().Status()
		for i := 0; i < 4; i++ {
			u, err := c.Nodes[1].Directory().ResolveRecipient(ctx, fmt.Sprintf("u%d@eu.test", i))
			if err != nil {
				return err
			}
			s := st.Shards[u.Shard]
			if s.Home != "r2" {
				return fmt.Errorf("user %d on shard %d homed in %s", i, u.Shard, s.Home)
			}
			if regions[s.Leader] != "r2" {
				return fmt.Errorf("shard %d led from %s", u.Shard, regions[s.Leader])
			}
		}
		return nil
	})
	// Mail for them arrives through any node.
	for _, n := range c.Nodes {
		if err := n.Store().Deliver(ctx, schema.Delivery{Recipients: []string{"u0@eu.test"}, Message: []byte("Subject: x\r\n\r\ny\r\n")}); err != nil {
			t.Fatalf("deliver via %s: %v", n.ID, err)
		}
	}
}

// transferLog counts, from every node's log, the attempts to hand a
// shard's leadership to one node.
type transferLog struct {
	to       atomic.Value // string
	attempts atomic.Int32
}

func (l *transferLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *transferLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *transferLog) WithGroup(string) slog.Handler            { return l }
func (l *transferLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "move leadership to the home region" && r.Message != "leadership moved to the home region" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if to, _ := l.to.Load().(string); a.Key == "to" && a.Value.String() == to {
			l.attempts.Add(1)
		}
		return true
	})
	return nil
}

// TestNoLeadershipHandedToADeadHome: when the node that leads a shard
// from its home region dies, the leader elected elsewhere does not hand
// the shard back to it while the dead node's last report is still fresh
// (five seconds): such a transfer cannot succeed, and it holds the
// shard's writes for an election timeout right after the failover.
func TestNoLeadershipHandedToADeadHome(t *testing.T) {
	t.Parallel()
	log := &transferLog{}
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, MailShards: 3, Logger: slog.New(log)})
	regions := regionOf(c)
	var victim string
	c.Eventually(time.Minute, "shard 1 led from its home region", func() error {
		for _, s := range c.Nodes[0].Cluster().Status().Shards {
			if s.Shard == 1 {
				if s.Leader == "" || regions[s.Leader] != s.Home {
					return fmt.Errorf("leader %q, home %q", s.Leader, s.Home)
				}
				victim = s.Leader
				return nil
			}
		}
		return fmt.Errorf("no shard 1 in the status")
	})
	log.to.Store(victim)
	c.Node(victim).Kill()
	killed := time.Now()
	c.Eventually(30*time.Second, "another leader of shard 1", func() error {
		if l := c.Leader(1); l == nil || l.ID == victim {
			return fmt.Errorf("no new leader yet")
		}
		return nil
	})
	// The dead node's last report stays fresh for five seconds; a control
	// round (half a second) later nothing could pick it any more.
	time.Sleep(time.Until(killed.Add(6 * time.Second)))
	if n := log.attempts.Load(); n > 0 {
		t.Errorf("%d attempts to hand shard 1 to %s, which is dead", n, victim)
	}
}
