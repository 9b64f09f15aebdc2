package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// place is run by the meta leader: it keeps every mail shard's placement
// sound. A shard's home is a region that has nodes, homes are spread over
// the regions (a shard whose users' domain is pinned to its home stays),
// each shard has min(R, nodes) replicas, one of them in its home region,
// spread over regions, and a replica on a removed node or one dead for
// DeadAfter is replaced by a live node when there is one.
func (c *Cluster) place(v *metaView) {
	nodes := v.activeNodes()
	if len(nodes) == 0 {
		return
	}
	regionNodes := map[string][]NodeRecord{}
	for _, n := range nodes {
		regionNodes[n.Region] = append(regionNodes[n.Region], n)
	}
	regions := make([]string, 0, len(regionNodes))
	for r := range regionNodes {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	shards := c.mailShardCount()
	want := min(c.cfg.Replicas, len(nodes))

	next := map[uint32]Placement{}
	homes := map[string]int{}
	load := map[string]int{}
	for n := uint32(1); int(n) <= shards; n++ {
		p := v.placements[n]
		p.Shard = n
		p.Replicas = append([]string(nil), p.Replicas...)
		if _, ok := regionNodes[p.Home]; !ok {
			p.Home = ""
		}
		next[n] = p
		if p.Home != "" {
			homes[p.Home]++
		}
	}
	// Homes: every shard has one, and regions get their share.
	for n := uint32(1); int(n) <= shards; n++ {
		p := next[n]
		if p.Home == "" {
			p.Home = leastOf(regions, homes)
			homes[p.Home]++
			next[n] = p
		}
	}
	floor := shards / len(regions)
	for moved := 0; moved < 2; moved++ {
		low := leastOf(regions, homes)
		high := mostOf(regions, homes)
		if homes[low] >= floor || homes[high]-homes[low] < 2 {
			break
		}
		for n := uint32(1); int(n) <= shards; n++ {
			p := next[n]
			if p.Home != high || v.pinned[n][high] {
				continue
			}
			p.Home = low
			homes[high]--
			homes[low]++
			next[n] = p
			break
		}
	}
	// Replicas.
	for _, p := range next {
		for _, id := range p.Replicas {
			load[id]++
		}
	}
	for n := uint32(1); int(n) <= shards; n++ {
		p := next[n]
		p.Replicas = c.chooseReplicas(p, v, nodes, want, load)
		next[n] = p
	}
	c.rebalance(next, v, nodes, load)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for n := uint32(1); int(n) <= shards; n++ {
		old, had := v.placements[n]
		p := next[n]
		var prev []byte
		if had {
			prev = encodeJSON(old)
		}
		nb := encodeJSON(p)
		if bytes.Equal(prev, nb) {
			continue
		}
		if err := c.swapSetting(ctx, placementKey(n), prev, nb); err != nil {
			if !errors.Is(err, schema.ErrConflict) {
				c.log.Warn("update placement", "shard", n, "err", err)
			}
			return
		}
		c.log.Info("placement changed", "shard", n, "home", p.Home, "replicas", fmt.Sprint(p.Replicas))
	}
}

// chooseReplicas picks a shard's replicas: the live ones it has, a node
// of its home region if it has none there, more live nodes (new regions
// first, then the least loaded) up to want, and dead ones kept only while
// nobody can replace them.
func (c *Cluster) chooseReplicas(p Placement, v *metaView, nodes []NodeRecord, want int, load map[string]int) []string {
	var keep, deadOnes []string
	for _, id := range p.Replicas {
		rec, ok := v.nodes[id]
		switch {
		case !ok || rec.Removed:
			load[id]--
		case c.dead(id):
			deadOnes = append(deadOnes, id)
		default:
			keep = append(keep, id)
		}
	}
	inKeep := func(id string) bool {
		for _, k := range keep {
			if k == id {
				return true
			}
		}
		return false
	}
	hasRegion := func(region string) bool {
		for _, id := range keep {
			if v.nodes[id].Region == region {
				return true
			}
		}
		return false
	}
	candidates := func() []NodeRecord {
		var out []NodeRecord
		for _, n := range nodes {
			if !inKeep(n.ID) && !c.dead(n.ID) {
				out = append(out, n)
			}
		}
		sort.SliceStable(out, func(i, j int) bool {
			a, b := out[i], out[j]
			if ah, bh := a.Region == p.Home, b.Region == p.Home; ah != bh && !hasRegion(p.Home) {
				return ah
			}
			if ar, br := hasRegion(a.Region), hasRegion(b.Region); ar != br {
				return !ar
			}
			return load[a.ID] < load[b.ID]
		})
		return out
	}
	add := func(n NodeRecord) {
		keep = append(keep, n.ID)
		load[n.ID]++
	}
	if !hasRegion(p.Home) {
		for _, n := range candidates() {
			if n.Region == p.Home {
				add(n)
				break
			}
		}
	}
	for len(keep) < want {
		cs := candidates()
		if len(cs) == 0 {
			break
		}
		add(cs[0])
	}
	for _, id := range deadOnes {
		if len(keep) >= want {
			load[id]--
			continue
		}
		keep = append(keep, id)
	}
	// Too many (a home-region replica was added, or R shrank): drop the
	// replicas of the most represented regions, never the home's last.
	for len(keep) > want {
		drop := -1
		count := map[string]int{}
		for _, id := range keep {
			count[v.nodes[id].Region]++
		}
		for i := len(keep) - 1; i >= 0; i-- {
			r := v.nodes[keep[i]].Region
			if r == p.Home && count[r] == 1 {
				continue
			}
			if drop < 0 || count[r] > count[v.nodes[keep[drop]].Region] {
				drop = i
			}
		}
		if drop < 0 {
			break
		}
		load[keep[drop]]--
		keep = append(keep[:drop], keep[drop+1:]...)
	}
	return keep
}

// rebalanceEvery paces the moves that spread replicas over nodes that
// joined after the shards were placed: one move at a time, and the next
// only once every group matches its placement (the new replica caught up
// and votes, the old one left).
const rebalanceEvery = time.Second

// rebalance moves one replica from a more loaded live node to a less
// loaded one when their loads differ by more than one, keeping each
// shard's home region and its spread over regions (so a swap often stays
// within a region).
func (c *Cluster) rebalance(next map[uint32]Placement, v *metaView, nodes []NodeRecord, load map[string]int) {
	if time.Since(c.lastRebalance) < rebalanceEvery || !c.settled(v) {
		return
	}
	var live []NodeRecord
	for _, n := range nodes {
		if !c.dead(n.ID) {
			live = append(live, n)
		}
	}
	type pair struct{ heavy, light NodeRecord }
	var pairs []pair
	for _, h := range live {
		for _, l := range live {
			if load[h.ID]-load[l.ID] > 1 {
				pairs = append(pairs, pair{h, l})
			}
		}
	}
	sort.SliceStable(pairs, func(i, j int) bool {
		di := load[pairs[i].heavy.ID] - load[pairs[i].light.ID]
		dj := load[pairs[j].heavy.ID] - load[pairs[j].light.ID]
		if di != dj {
			return di > dj
		}
		if pairs[i].heavy.ID != pairs[j].heavy.ID {
			return pairs[i].heavy.ID < pairs[j].heavy.ID
		}
		return pairs[i].light.ID < pairs[j].light.ID
	})
	for _, pr := range pairs {
		heavy, light := pr.heavy, pr.light
		for n := uint32(1); int(n) <= len(next); n++ {
			p := next[n]
			if !p.has(heavy.ID) || p.has(light.ID) {
				continue
			}
			regions := map[string]int{}
			for _, id := range p.Replicas {
				regions[v.nodes[id].Region]++
			}
			if heavy.Region == p.Home && regions[p.Home] == 1 && light.Region != p.Home {
				continue // the home region's only replica stays
			}
			if light.Region != heavy.Region && regions[light.Region] > 0 {
				continue // would put two replicas in one region
			}
			for i, id := range p.Replicas {
				if id == heavy.ID {
					p.Replicas[i] = light.ID
				}
			}
			next[n] = p
			load[heavy.ID]--
			load[light.ID]++
			c.lastRebalance = time.Now()
			return
		}
	}
}

// settled reports whether every mail shard's group, as its leader last
// reported, has exactly its placed replicas, all voting.
func (c *Cluster) settled(v *metaView) bool {
	for n, p := range v.placements {
		id, _ := c.leaderOf(n)
		if id == "" {
			return false
		}
		st, ok := c.health.shardStatus(id, n)
		if !ok || st.State != "leader" || len(st.Servers) != len(p.Replicas) {
			return false
		}
		for _, srv := range st.Servers {
			if !srv.Voter || !p.has(srv.ID) {
				return false
			}
		}
	}
	return true
}

func leastOf(regions []string, count map[string]int) string {
	best := regions[0]
	for _, r := range regions[1:] {
		if count[r] < count[best] {
			best = r
		}
	}
	return best
}

func mostOf(regions []string, count map[string]int) string {
	best := regions[0]
	for _, r := range regions[1:] {
		if count[r] > count[best] {
			best = r
		}
	}
	return best
}

// PlaceUser picks the mail shard of a new user: among the shards whose
// home is region (any shard when region is "" or no shard is homed there
// yet), the one with the fewest users.
func (c *Cluster) PlaceUser(region string) (uint32, error) {
	if err := c.refreshView(); err != nil {
		return 0, err
	}
	v := c.currentView()
	pick := func(match func(n uint32) bool) uint32 {
		best := uint32(0)
		for n := uint32(1); int(n) <= c.mailShardCount(); n++ {
			if match(n) && (best == 0 || v.users[n] < v.users[best]) {
				best = n
			}
		}
		return best
	}
	if region != "" {
		if n := pick(func(n uint32) bool { return v.placements[n].Home == region }); n != 0 {
			return n, nil
		}
	}
	if n := pick(func(uint32) bool { return true }); n != 0 {
		return n, nil
	}
	return 0, fmt.Errorf("no mail shard to place a user on: %w", schema.ErrUnavailable)
}

// HasRegion reports whether an active node is in region.
func (c *Cluster) HasRegion(region string) bool {
	v := c.currentView()
	if v == nil {
		return false
	}
	for _, n := range v.activeNodes() {
		if n.Region == region {
			return true
		}
	}
	return false
}
