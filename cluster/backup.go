package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/mailcluster/mailcluster/raftstore"
)

// BackupShards returns every shard of the cluster, meta first.
func (c *Cluster) BackupShards() []uint32 {
	out := []uint32{0}
	for n := uint32(1); int(n) <= c.mailShardCount(); n++ {
		out = append(out, n)
	}
	return out
}

// WriteShardState writes a consistent copy of shard n's state to w: from
// this node's replica when it keeps one, else from the shard's leader or
// another replica. A copy is one replica's state at one applied index,
// which holds every write acknowledged before the copy began (the replica
// first catches up with its leader).
func (c *Cluster) WriteShardState(ctx context.Context, n uint32, w io.Writer) (raftstore.StateInfo, error) {
	if s := c.replica(n); s != nil {
		if err := c.catchUp(ctx, n); err != nil {
			return raftstore.StateInfo{}, fmt.Errorf("shard %d: %w", n, err)
		}
		return s.WriteState(w)
	}
	var tried []error
	for _, addr := range c.replicaAddrs(n) {
		// A partial copy cannot be taken back from w: only the first
		// source may be tried once bytes have been written.
		cw := &countingWriter{w: w}
		info, err := c.rpc.state(ctx, addr, n, cw)
		if err == nil {
			return info, nil
		}
		tried = append(tried, err)
		if cw.n > 0 {
			break
		}
	}
	if len(tried) == 0 {
		return raftstore.StateInfo{}, fmt.Errorf("shard %d: no node keeps a replica", n)
	}
	return raftstore.StateInfo{}, fmt.Errorf("shard %d: copy state: %w", n, errors.Join(tried...))
}

// replicaAddrs lists the addresses of the nodes that keep shard n, the
// leader first.
func (c *Cluster) replicaAddrs(n uint32) []string {
	var out []string
	if id, addr := c.leaderOf(n); id != "" && id != c.cfg.NodeID {
		out = append(out, addr)
	}
	v := c.currentView()
	if v == nil {
		return out
	}
	for _, id := range v.placements[n].Replicas {
		rec, ok := v.nodes[id]
		if ok && !rec.Removed && id != c.cfg.NodeID && (len(out) == 0 || rec.Address != out[0]) {
			out = append(out, rec.Address)
		}
	}
	return out
}

// LeadsMeta reports whether this node leads the meta shard: the node that
// takes the cluster's scheduled backups and drills.
func (c *Cluster) LeadsMeta() bool { return c.LeadsShard(0) }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
