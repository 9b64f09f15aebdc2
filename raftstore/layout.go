package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// replicasDir is the folder of a data directory that holds one folder per
// shard replica the node keeps: DATA/shards/<n>/.
const replicasDir = "shards"

// ReplicaDir returns the folder of shard n's replica in a node's data
// directory. It is the one place that layout is spelled out.
func ReplicaDir(dataDir string, n uint32) string {
	return filepath.Join(dataDir, replicasDir, strconv.FormatUint(uint64(n), 10))
}

// ReplicasRoot returns the folder holding every replica of a data
// directory.
func ReplicasRoot(dataDir string) string { return filepath.Join(dataDir, replicasDir) }

// Replicas lists the shards a data directory holds a replica of, in
// order. Folders that are not shard numbers are ignored.
func Replicas(dataDir string) ([]uint32, error) {
	entries, err := os.ReadDir(ReplicasRoot(dataDir))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	var out []uint32
	for _, e := range entries {
		n, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || !e.IsDir() || strconv.FormatUint(n, 10) != e.Name() {
			continue
		}
		out = append(out, uint32(n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// RemoveReplica deletes shard n's replica from a data directory. The
// replica must be closed; the group must no longer count it as a member.
func RemoveReplica(dataDir string, n uint32) error {
	if err := os.RemoveAll(ReplicaDir(dataDir, n)); err != nil {
		return fmt.Errorf("remove replica of shard %d: %w", n, err)
	}
	return nil
}

// HasRaftState reports whether the data directory holds shard n's Raft
// state (its term and vote), which a replica keeps from its first start:
// a replica opened without it starts as a new member of its group.
func HasRaftState(dataDir string, n uint32) bool {
	_, err := os.Stat(filepath.Join(ReplicaDir(dataDir, n), "raft.db"))
	return err == nil
}
