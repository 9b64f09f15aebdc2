package cluster

import (
	"context"
	"errors"
	"fmt"
)

// Compact snapshots every shard this node holds and removes each Raft log
// up to its snapshot, so the log pages are reused. (The files keep their
// size; raftstore.CompactReplica shrinks them while the node is stopped.)
func (c *Cluster) Compact(ctx context.Context) error {
	var errs []error
	for _, s := range c.Shards() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.Compact(ctx); err != nil {
			errs = append(errs, fmt.Errorf("compact: %w", err))
		}
	}
	return errors.Join(errs...)
}
