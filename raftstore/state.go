package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// StateInfo describes a copy of a shard's state.
type StateInfo struct {
	Index uint64 // last applied Raft index in the copy
	Term  uint64 // term of that entry
	Size  int64  // bytes written
	Stats Stats  // record counts in the copy
}

// WriteState writes a consistent copy of the shard's state file to w
// while the shard keeps applying writes: a bbolt read transaction pins
// one version of the file for as long as the copy takes.
func (s *Shard) WriteState(w io.Writer) (StateInfo, error) {
	var info StateInfo
	err := s.View(func(r *Reader) error {
		info.Index = r.AppliedIndex()
		info.Term = getU64(r.tx.Bucket(bucketSys), keyAppliedTerm)
		info.Stats = r.Stats()
		n, err := r.tx.WriteTo(w)
		info.Size = n
		return err
	})
	if err != nil {
		return info, fmt.Errorf("shard %d: write state: %w", s.cfg.Shard, err)
	}
	return info, nil
}

// InspectStateFile checks a state file (a copy written by WriteState) with
// bbolt's consistency check and returns what it holds. It never panics on
// a corrupt file.
func InspectStateFile(path string) (info StateInfo, err error) {
	if err := checkState(path); err != nil {
		return info, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("state file corrupt: %v", r)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return info, fmt.Errorf("open state file: %w", err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		r := &Reader{tx: tx}
		info.Index = r.AppliedIndex()
		info.Term = getU64(tx.Bucket(bucketSys), keyAppliedTerm)
		info.Stats = r.Stats()
		info.Size = tx.Size()
		return nil
	})
	return info, err
}

// InstallState prepares dir as a fresh replica of a shard whose state is
// the state file at path (a restored backup): it copies the file in as the
// state, records a Raft snapshot at the file's index and term with a
// one-voter configuration of nodeID, and sets the current term, so that
// the replica's log resumes after the restored state. dir must not hold a
// replica yet.
func InstallState(dir, path, nodeID string) (StateInfo, error) {
	info, err := InspectStateFile(path)
	if err != nil {
		return info, err
	}
	if info.Index == 0 {
		return info, errors.New("install state: the state file has never applied an entry")
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
		return info, fmt.Errorf("install state: %s already holds a replica", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "snapshots"), 0o700); err != nil {
		return info, err
	}
	src, err := os.Open(path)
	if err != nil {
		return info, err
	}
	err = writeFileSync(filepath.Join(dir, "state.db"), src)
	src.Close()
	if err != nil {
		return info, fmt.Errorf("install state: %w", err)
	}

	// The snapshot is only metadata: the installed state file stands for
	// it (see stateSnapshots).
	snaps, err := newStateSnapshots(filepath.Join(dir, "snapshots"), nil)
	if err != nil {
		return info, fmt.Errorf("install state: %w", err)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(nodeID), Address: raft.ServerAddress(nodeID)}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, info.Index, info.Term, conf, info.Index, nil)
	if err != nil {
		return info, fmt.Errorf("install state: create snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return info, fmt.Errorf("install state: record snapshot: %w", err)
	}

	stable, err := openStableStore(dir)
	if err != nil {
		return info, fmt.Errorf("install state: stable store: %w", err)
	}
	defer stable.Close()
	// hashicorp/raft keeps the current term under this key of its stable
	// store; starting below the snapshot's term would break log matching.
	if err := stable.SetUint64([]byte("CurrentTerm"), info.Term); err != nil {
		return info, fmt.Errorf("install state: set term: %w", err)
	}
	// An empty log, which resumes after the snapshot: a replica without
	// its log counts as one that lost its Raft state (HasRaftState).
	logs, err := openRaftLog(dir, stable, hclog.NewNullLogger())
	if err != nil {
		return info, fmt.Errorf("install state: %w", err)
	}
	if err := logs.Close(); err != nil {
		return info, fmt.Errorf("install state: close log: %w", err)
	}
	return info, syncDir(dir)
}

// markRebuilt records in the state file at path that it was copied in at
// index, so the replica's log may end before it (keyAheadOfLog).
func markRebuilt(path string, index uint64) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("mark the copy: %w", err)
	}
	err = markAheadOfLog(db, index)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// RebuildState replaces the state file of a closed replica in dir, one
// that bbolt found corrupt (ErrCorrupt), with a copy of another
// replica's state that fetch writes (WriteState on that replica, through
// its node). The copy must be sound and at least as new as the replica's
// newest snapshot: the replica's log resumes after that snapshot, and
// the entries up to the copy's index are skipped as already applied, so
// an older copy would leave a gap. The replica's log, term and vote stay
// as they are. The damaged file is kept beside, as state.db.corrupt
// (replacing an older one), for the operator to look at or delete.
func RebuildState(ctx context.Context, dir string, fetch func(context.Context, io.Writer) (StateInfo, error)) (StateInfo, error) {
	var info StateInfo
	snaps, err := newStateSnapshots(filepath.Join(dir, "snapshots"), nil)
	if err != nil {
		return info, fmt.Errorf("rebuild state: %w", err)
	}
	metas, err := snaps.metas()
	if err != nil {
		return info, fmt.Errorf("rebuild state: %w", err)
	}
	var newest uint64
	if len(metas) > 0 {
		newest = metas[0].Index
	}
	tmp := filepath.Join(dir, "state.db.rebuild")
	defer os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return info, fmt.Errorf("rebuild state: %w", err)
	}
	sent, err := fetch(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return info, fmt.Errorf("rebuild state: copy: %w", err)
	}
	if info, err = InspectStateFile(tmp); err != nil {
		return info, fmt.Errorf("rebuild state: the copy: %w", err)
	}
	if info.Index != sent.Index {
		return info, fmt.Errorf("rebuild state: the copy holds index %d, its sender said %d", info.Index, sent.Index)
	}
	if info.Index < newest {
		return info, fmt.Errorf("rebuild state: the copy (index %d) is older than this replica's snapshot (%d)", info.Index, newest)
	}
	if err := markRebuilt(tmp, info.Index); err != nil {
		return info, fmt.Errorf("rebuild state: %w", err)
	}
	live := filepath.Join(dir, "state.db")
	if err := os.Rename(live, live+".corrupt"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("rebuild state: set the damaged file aside: %w", err)
	}
	if err := os.Rename(tmp, live); err != nil {
		return info, fmt.Errorf("rebuild state: %w", err)
	}
	return info, syncDir(dir)
}
