package raftstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
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
// state: its term and vote (raft.db), which a replica keeps from its
// first start, and its log. A replica opened without them starts as a new
// member of its group. One whose raft.db stayed while its log went
// (wal/ deleted) counts as without: with its term but an empty log it
// would grant its vote as if it had acknowledged nothing.
func HasRaftState(dataDir string, n uint32) bool {
	return raftStateIn(ReplicaDir(dataDir, n))
}

// raftStateIn reports whether the replica directory dir holds a Raft
// term and vote and a log: the log's files (wal/), or, in a replica from
// before the log had files of its own, entries still in raft.db
// (openRaftLog moves them). A file it cannot read counts as present, so
// that opening the replica reports what is wrong with it.
func raftStateIn(dir string) bool {
	if !exists(filepath.Join(dir, "raft.db")) {
		return false
	}
	if exists(filepath.Join(dir, walDir, metadb.FileName)) {
		return true
	}
	return legacyLogHeld(filepath.Join(dir, "raft.db"))
}

// exists reports whether path exists, or may: an error other than its
// absence says yes.
func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// legacyLogHeld reports whether the raft.db at path still holds log
// entries, reading it without writing; true when it cannot tell.
func legacyLogHeld(path string) (held bool) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return true
	}
	defer db.Close()
	defer func() {
		if recover() != nil { // a damaged page: let opening report it
			held = true
		}
	}()
	err = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketLogs); b != nil {
			k, _ := b.Cursor().First()
			held = k != nil
		}
		return nil
	})
	return held || err != nil
}

// damagedLogDir is where SetAsideLog puts a replica's damaged log.
const damagedLogDir = "wal.damaged"

// SetAsideLog moves the Raft log of a closed replica of shard n, found
// damaged (ErrLogDamaged), out of the way, to shards/<n>/wal.damaged
// (replacing an older one) for the operator to look at or delete. The
// replica then has no Raft state (HasRaftState): its node opens it once
// its group no longer counts it as a voter, and it refills from the
// others.
func SetAsideLog(dataDir string, n uint32) error {
	dir := ReplicaDir(dataDir, n)
	aside := filepath.Join(dir, damagedLogDir)
	if err := os.RemoveAll(aside); err != nil {
		return fmt.Errorf("set aside the log of shard %d: %w", n, err)
	}
	if err := os.Rename(filepath.Join(dir, walDir), aside); err != nil {
		return fmt.Errorf("set aside the log of shard %d: %w", n, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("set aside the log of shard %d: %w", n, err)
	}
	return nil
}
