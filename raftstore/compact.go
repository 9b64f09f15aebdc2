package raftstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// CompactResult reports what compacting a replica's files reclaimed.
type CompactResult struct {
	Before, After int64 // bytes of the replica's bbolt files
}

// replicaFiles are the bbolt files of a replica directory.
var replicaFiles = []string{"state.db", "raft.db"}

// CompactReplica rewrites the bbolt files of a stopped replica in dir
// without their free pages (bbolt files never shrink on their own). Each
// file is copied to a temporary file, synced, and renamed over the
// original, so a crash leaves either the old or the new file. The replica
// must not be open: the caller holds the data directory's lock.
func CompactReplica(dir string) (CompactResult, error) {
	var res CompactResult
	for _, name := range replicaFiles {
		path := filepath.Join(dir, name)
		before, after, err := compactFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("compact %s: %w", path, err)
		}
		res.Before += before
		res.After += after
	}
	return res, syncDir(dir)
}

func compactFile(path string) (before, after int64, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	src, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	tmp := path + ".compact"
	os.Remove(tmp)
	dst, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return 0, 0, err
	}
	if err := bbolt.Compact(dst, src, 64<<20); err != nil {
		dst.Close()
		os.Remove(tmp)
		return 0, 0, err
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		os.Remove(tmp)
		return 0, 0, err
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}
	nst, err := os.Stat(tmp)
	if err != nil {
		return 0, 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}
	return st.Size(), nst.Size(), nil
}

// Compact snapshots the shard and removes its whole Raft log up to that
// snapshot, keeping no trailing entries (normally Timing.TrailingLogs are
// kept for followers that fall a little behind). Snapshots hold no copy
// of the state, so this costs a barrier and a metadata write. On a
// leader only: a follower's log follows its own snapshots.
func (s *Shard) Compact(ctx context.Context) error {
	t := s.cfg.Timing
	rc := raft.ReloadableConfig{
		TrailingLogs:      0,
		SnapshotInterval:  t.SnapshotInterval,
		SnapshotThreshold: t.SnapshotThreshold,
		HeartbeatTimeout:  t.HeartbeatTimeout,
		ElectionTimeout:   t.ElectionTimeout,
	}
	if err := s.raft.ReloadConfig(rc); err != nil {
		return fmt.Errorf("shard %d: compact: %w", s.cfg.Shard, err)
	}
	defer func() {
		rc.TrailingLogs = t.TrailingLogs
		if err := s.raft.ReloadConfig(rc); err != nil {
			s.log.Error("restore trailing logs after compaction", "err", err)
		}
	}()
	if err := s.compactBarrier(ctx); err != nil {
		return fmt.Errorf("shard %d: compact: %w", s.cfg.Shard, err)
	}
	return s.Snapshot()
}

// compactBarrier commits a barrier while this replica leads: it gives an
// idle shard a new index, so the snapshot is never "nothing new" while
// old entries are still kept. A leadership transfer under way (the
// leader balancer's, say) refuses the barrier until it ends, so it waits
// that out; a replica that has stopped leading compacts as a follower.
func (s *Shard) compactBarrier(ctx context.Context) error {
	for {
		if !s.IsLeader() {
			return nil
		}
		err := s.await(ctx, s.raft.Barrier(time.Until(deadline(ctx, 30*time.Second))))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
			return nil
		case !errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closed:
			return ErrClosed
		case <-time.After(50 * time.Millisecond):
		}
	}
}
