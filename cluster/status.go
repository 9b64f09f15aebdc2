package cluster

import (
	"slices"
	"sort"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
)

// Status is the cluster as one node sees it: every node and every
// shard's replicas. Its JSON form is stable for scripts.
type Status struct {
	ClusterID string        `json:"cluster_id"`
	Node      string        `json:"node"` // the node that answered
	Nodes     []NodeStatus  `json:"nodes"`
	Shards    []ShardStatus `json:"shards"`
}

// NodeStatus is one member node.
type NodeStatus struct {
	ID      string `json:"id"`
	Region  string `json:"region"`
	Address string `json:"address"`
	Version string `json:"version"`
	// Commands is the command level the node's software applies
	// (schema.CommandLevel): the cluster uses the lowest of its members.
	Commands int `json:"commands"`
	// Health is "up" (answered within the last few seconds), "unreachable",
	// "dead" (unreachable for longer than the dead-after period: its
	// replicas are being replaced) or "removed".
	Health   string    `json:"health"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Joined   time.Time `json:"joined"`
	// ClockOffset is how far the node's clock was ahead of the answering
	// node's at its last answer, in seconds (negative: behind), to within
	// ClockUncertainty; both are absent for a node not up, and 0 for the
	// answering node itself.
	ClockOffset      *float64 `json:"clock_offset_seconds,omitempty"`
	ClockUncertainty *float64 `json:"clock_uncertainty_seconds,omitempty"`
}

// ShardStatus is one shard's group.
type ShardStatus struct {
	Shard       uint32          `json:"shard"`
	Home        string          `json:"home,omitempty"` // mail shards only
	Leader      string          `json:"leader"`
	Term        uint64          `json:"term"`
	CommitIndex uint64          `json:"commit_index"`
	Replicas    []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one replica of a shard.
type ReplicaStatus struct {
	Node  string `json:"node"`
	Voter bool   `json:"voter"`
	// State is the replica's Raft state as its node last reported it
	// ("leader", "follower", "candidate"); "rebuilding" or "reopening"
	// while its node has it closed for a repair (PingResponse.Repairing);
	// "withheld" while its node keeps it closed for want of Raft state
	// (PingResponse.Withheld); or "unknown".
	State        string `json:"state"`
	AppliedIndex uint64 `json:"applied_index"`
	// Lag is how many committed entries the replica has not applied yet.
	Lag uint64 `json:"lag"`
	// Placed is false for a member the placement no longer wants (it is
	// being removed) and true otherwise.
	Placed bool `json:"placed"`
	// Stopped is true while the replica applies nothing after a failed
	// write to its state file (a full disk); its node reopens it.
	Stopped bool `json:"stopped,omitempty"`
	// Stuck is true while a write of the replica to its disk hangs
	// (raftstore.Status.Stuck); a leader steps aside meanwhile.
	Stuck bool `json:"stuck,omitempty"`
	// Skipped counts the log entries the replica could not decode and
	// skipped: above zero, it may lack what they wrote (see
	// raftstore.Status.Skipped).
	Skipped uint64 `json:"skipped_entries,omitempty"`
	// DamagedReads counts the damaged entries of the replica's Raft log
	// read since it opened (raftstore.Status.DamagedReads).
	DamagedReads uint64 `json:"damaged_log_reads,omitempty"`
	// Repaired counts the pieces of messages in the replica's state file
	// put back from another replica's copy since it opened
	// (raftstore.Status.Repaired).
	Repaired uint64 `json:"repaired_pieces,omitempty"`
}

const upWithin = 3 * time.Second

// Status reports the cluster as this node sees it now.
func (c *Cluster) Status() Status {
	_ = c.refreshView()
	v := c.currentView()
	st := Status{ClusterID: string(c.metaSetting(settingClusterID)), Node: c.cfg.NodeID}
	if v == nil {
		return st
	}
	ids := make([]string, 0, len(v.nodes))
	for id := range v.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	reports := map[string]PingResponse{c.cfg.NodeID: c.selfReport()}
	for _, id := range ids {
		rec := v.nodes[id]
		ns := NodeStatus{ID: rec.ID, Region: rec.Region, Address: rec.Address, Version: rec.Version, Commands: rec.Commands, Joined: rec.Joined}
		switch p, seen := c.health.peer(id); {
		case rec.Removed:
			ns.Health = "removed"
		case id == c.cfg.NodeID:
			ns.Health, ns.LastSeen = "up", time.Now().UTC()
			ns.ClockOffset, ns.ClockUncertainty = new(float64), new(float64)
		case seen && time.Since(p.lastSeen) < upWithin:
			ns.Health, ns.LastSeen = "up", p.lastSeen.UTC()
			reports[id] = p.report
			if p.clock.Known {
				off, unc := p.clock.Offset.Seconds(), (p.clock.RTT / 2).Seconds()
				ns.ClockOffset, ns.ClockUncertainty = &off, &unc
			}
		case c.dead(id):
			ns.Health = "dead"
			if seen {
				ns.LastSeen = p.lastSeen.UTC()
			}
		default:
			ns.Health = "unreachable"
			if seen && !p.lastSeen.IsZero() {
				ns.LastSeen = p.lastSeen.UTC()
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	for n := uint32(0); int(n) <= c.mailShardCount(); n++ {
		st.Shards = append(st.Shards, shardStatus(n, v, reports))
	}
	return st
}

func shardStatus(n uint32, v *metaView, reports map[string]PingResponse) ShardStatus {
	ss := ShardStatus{Shard: n}
	byNode := map[string]raftstore.Status{}
	var leader raftstore.Status
	for id, rep := range reports {
		for _, s := range rep.Shards {
			if s.Shard != n {
				continue
			}
			byNode[id] = s
			if s.Leads() && s.Term >= leader.Term {
				leader = s
				ss.Leader = id
			}
		}
	}
	ss.Term, ss.CommitIndex = leader.Term, leader.CommitIndex
	placed := map[string]bool{}
	if n == 0 {
		for _, rec := range v.activeNodes() {
			placed[rec.ID] = true
		}
	} else {
		p := v.placements[n]
		ss.Home = p.Home
		for _, id := range p.Replicas {
			placed[id] = true
		}
	}
	// Who votes is the leader's configuration; without a leader (an
	// election, a transfer under way), the newest one a replica reports,
	// so a moment without a leader does not show every replica as a
	// non-voter.
	conf := leader
	if ss.Leader == "" {
		for _, s := range byNode {
			if s.Term > conf.Term || s.Term == conf.Term && s.LastIndex > conf.LastIndex {
				conf = s
			}
		}
	}
	members := map[string]bool{}
	for _, srv := range conf.Servers {
		members[srv.ID] = srv.Voter
	}
	for id := range placed {
		if _, ok := members[id]; !ok {
			members[id] = false
		}
	}
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r := ReplicaStatus{Node: id, Voter: members[id], Placed: placed[id], State: "unknown"}
		if why := reports[id].Repairing[n]; why != "" {
			r.State = why
		}
		if slices.Contains(reports[id].Withheld, n) {
			r.State = "withheld"
		}
		if s, ok := byNode[id]; ok {
			r.State, r.AppliedIndex, r.Stopped, r.Stuck, r.Skipped = s.State, s.AppliedIndex, s.Stopped != "", s.Stuck != "", s.Skipped
			r.DamagedReads, r.Repaired = s.DamagedReads, s.Repaired
			if ss.CommitIndex > s.AppliedIndex {
				r.Lag = ss.CommitIndex - s.AppliedIndex
			}
		}
		ss.Replicas = append(ss.Replicas, r)
	}
	return ss
}
