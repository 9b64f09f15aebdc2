package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/raftstore"
)

// compact runs `mailnode compact`: with a node serving the data directory
// it snapshots every shard through the admin socket, truncating the Raft
// logs; with none, it takes the directory's lock and rewrites every
// shard's bbolt files without their free pages, which shrinks them.
func (c CLI) compact(ctx context.Context, args []string) error {
	fs := newFlagSet("compact")
	data := fs.String("data", "", "data directory of the node")
	configFile := fs.String("config", "", "config file naming the data directory")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: compact takes only --data DIR (or --config FILE)", errUsage)
	}
	dir, err := dataDirArg("compact", *data, *configFile)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	client := admin.NewClient(dir)
	defer client.Close()
	err = client.Compact(actx)
	if err == nil {
		fmt.Fprintln(c.Stdout, "every shard snapshotted and its log truncated; stop the node and run compact again to shrink the files")
		return nil
	}
	if !errors.Is(err, admin.ErrNoNode) {
		return err
	}
	return c.compactOffline(dir)
}

func (c CLI) compactOffline(dir string) error {
	lock, err := lockFile(filepath.Join(dir, lockFileName))
	if err != nil {
		return err
	}
	defer lock.Close()
	shards, err := raftstore.Replicas(dir)
	if err != nil {
		return err
	}
	if len(shards) == 0 {
		return fmt.Errorf("compact: %s holds no shards", dir)
	}
	var total raftstore.CompactResult
	for _, n := range shards {
		res, err := raftstore.CompactReplica(raftstore.ReplicaDir(dir, n))
		if err != nil {
			return err
		}
		total.Before += res.Before
		total.After += res.After
	}
	fmt.Fprintf(c.Stdout, "compacted %d shards: %d -> %d bytes\n", len(shards), total.Before, total.After)
	return nil
}
