package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Meta-shard settings the cluster keeps. Their values are not user data:
// node addresses, regions and placement are in the clear; the CA key and
// join tokens are sealed under keys derived from the master key.
const (
	settingMailShards = "mail_shards"
	settingClusterID  = "cluster_id"
	settingCACert     = "cluster/ca_cert"
	settingCAKey      = "cluster/ca_key"
	nodePrefix        = "node/"
	placementPrefix   = "placement/"
	tokenPrefix       = "token/"
	domainRegionPfx   = "domain_region/" // written by package directory
)

// NodeRecord is a member node as the meta shard records it.
type NodeRecord struct {
	ID      string `json:"id"`
	Region  string `json:"region"`
	Address string `json:"address"`
	Version string `json:"version,omitempty"`
	// Commands is the command level the node's software applies
	// (schema.CommandLevel); absent, schema.LevelBase. Proposers write
	// only the forms every active member applies.
	Commands int       `json:"commands,omitempty"`
	Joined   time.Time `json:"joined"`
	// Removed nodes keep their record so that their id is never reused
	// and their certificate is refused.
	Removed bool `json:"removed,omitempty"`
}

// Placement says where one mail shard lives: its home region (where its
// leader should be) and the nodes that keep its replicas.
type Placement struct {
	Shard    uint32   `json:"shard"`
	Home     string   `json:"home"`
	Replicas []string `json:"replicas"`
}

func (p Placement) has(node string) bool {
	for _, r := range p.Replicas {
		if r == node {
			return true
		}
	}
	return false
}

// metaView is what this node's meta replica says about the cluster.
type metaView struct {
	mailShards int
	nodes      map[string]NodeRecord
	placements map[uint32]Placement
	// users per mail shard, and per shard the regions its users' domains
	// are pinned to.
	users  map[uint32]int
	pinned map[uint32]map[string]bool
	// commandLevel is the lowest command level of the active members.
	commandLevel int
}

// lowestCommandLevel returns the command level every active node applies.
func lowestCommandLevel(nodes map[string]NodeRecord) int {
	level := -1
	for _, n := range nodes {
		if !n.Removed && (level < 0 || n.Commands < level) {
			level = n.Commands
		}
	}
	return max(level, schema.LevelBase)
}

func (v *metaView) activeNodes() []NodeRecord {
	var out []NodeRecord
	for _, n := range v.nodes {
		if !n.Removed {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Joined.Equal(out[j].Joined) {
			return out[i].Joined.Before(out[j].Joined)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// readMeta reads the cluster's records from this node's meta replica.
func readMeta(meta *raftstore.Shard) (*metaView, error) {
	v := &metaView{
		nodes:      map[string]NodeRecord{},
		placements: map[uint32]Placement{},
		users:      map[uint32]int{},
		pinned:     map[uint32]map[string]bool{},
	}
	err := meta.View(func(r *raftstore.Reader) error {
		if b := r.Setting(settingMailShards); len(b) == 4 {
			v.mailShards = int(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		}
		for k, b := range r.Settings(nodePrefix) {
			var n NodeRecord
			if err := json.Unmarshal(b, &n); err != nil {
				return fmt.Errorf("node record %s: %w", k, err)
			}
			v.nodes[n.ID] = n
		}
		v.commandLevel = lowestCommandLevel(v.nodes)
		for k, b := range r.Settings(placementPrefix) {
			var p Placement
			if err := json.Unmarshal(b, &p); err != nil {
				return fmt.Errorf("placement %s: %w", k, err)
			}
			v.placements[p.Shard] = p
		}
		regions := map[schema.ID]string{}
		for k, b := range r.Settings(domainRegionPfx) {
			id, err := schema.ParseID(strings.TrimPrefix(k, domainRegionPfx))
			if err == nil {
				regions[id] = string(b)
			}
		}
		users, err := r.Users()
		if err != nil {
			return err
		}
		for _, u := range users {
			v.users[u.Shard]++
			if reg := regions[u.Domain]; reg != "" {
				if v.pinned[u.Shard] == nil {
					v.pinned[u.Shard] = map[string]bool{}
				}
				v.pinned[u.Shard][reg] = true
			}
		}
		return nil
	})
	return v, err
}

func nodeKey(id string) string     { return nodePrefix + id }
func placementKey(n uint32) string { return placementPrefix + strconv.FormatUint(uint64(n), 10) }
func encodeJSON(v any) []byte      { b, _ := json.Marshal(v); return b }
func mailShardsValue(n int) []byte {
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// metaSetting returns a setting of this node's meta replica; nil while
// the replica is not open (it is closed for a repair).
func (c *Cluster) metaSetting(key string) []byte {
	m := c.meta()
	if m == nil {
		return nil
	}
	var v []byte
	_ = m.Read(func(r *raftstore.Reader) error { v = r.Setting(key); return nil })
	return v
}

// swapSetting is a compare-and-set of a meta setting through its leader.
func (c *Cluster) swapSetting(ctx context.Context, key string, old, new []byte) error {
	_, err := c.Apply(ctx, 0, &schema.SwapSetting{Key: key, OldAbsent: old == nil, Old: old, New: new})
	return err
}

// putNode records or updates a node (compare-and-set on its old record).
func (c *Cluster) putNode(ctx context.Context, old *NodeRecord, rec NodeRecord) error {
	var prev []byte
	if old != nil {
		prev = encodeJSON(*old)
	}
	return c.swapSetting(ctx, nodeKey(rec.ID), prev, encodeJSON(rec))
}

// RemoveNode removes a node from the cluster, alive or dead: its
// replicas are replaced on other nodes, it leaves every Raft group, and
// its certificate is refused from then on. Its id cannot join again.
func (c *Cluster) RemoveNode(ctx context.Context, id string) error {
	m := c.meta()
	if m == nil {
		return fmt.Errorf("remove node %s: meta replica not open: %w", id, schema.ErrUnavailable)
	}
	v, err := readMeta(m)
	if err != nil {
		return err
	}
	rec, ok := v.nodes[id]
	if !ok {
		return fmt.Errorf("remove node %s: %w", id, ErrNoSuchNode)
	}
	if rec.Removed {
		return nil
	}
	if len(v.activeNodes()) == 1 {
		return fmt.Errorf("remove node %s: it is the last node of the cluster: %w", id, schema.ErrInvalid)
	}
	next := rec
	next.Removed = true
	if err := c.putNode(ctx, &rec, next); err != nil {
		if errors.Is(err, schema.ErrConflict) {
			return fmt.Errorf("remove node %s: its record changed meanwhile, try again: %w", id, err)
		}
		return fmt.Errorf("remove node %s: %w", id, err)
	}
	c.log.Info("node removed from the cluster", "removed", id)
	c.kick()
	return nil
}

// ErrNoSuchNode is returned for a node id the cluster does not know.
var ErrNoSuchNode = errors.New("no such node")
