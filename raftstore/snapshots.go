package raftstore

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// stateSnapshots is a shard's raft.SnapshotStore. Its snapshots keep no
// copy of the state.
//
// The FSM's state file is durable and records the index it has applied, so
// the live state, which is always at or after the newest snapshot's index,
// can stand for that snapshot: a follower given a state newer than the
// snapshot's index skips the entries it already holds, exactly as after a
// restart. A local snapshot is therefore only its metadata (index, term,
// configuration) and costs nothing however large the shard is; Open
// streams a consistent copy of the live state when a follower needs one.
//
// A snapshot received from a leader is different: until the FSM has
// restored it, its data exists nowhere else. It is kept as a file beside
// its metadata and deleted once restored; Shard.Open restores one left
// behind by a crash before Raft starts, because Raft (with
// NoSnapshotRestoreOnStart) trusts the newest snapshot's index at boot.
type stateSnapshots struct {
	dir string
	fsm *fsm

	mu     sync.Mutex // serialises changes to the directory
	opened string     // the received snapshot being read for a restore
}

const (
	snapMetaSuffix = ".meta.json"
	snapDataSuffix = ".data"
	snapTmpSuffix  = ".tmp"
)

var _ raft.SnapshotStore = (*stateSnapshots)(nil)

func newStateSnapshots(dir string, f *fsm) (*stateSnapshots, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &stateSnapshots{dir: dir, fsm: f}, nil
}

func snapshotID(term, index uint64) string {
	return fmt.Sprintf("%d-%d-%d", term, index, time.Now().UnixMilli())
}

// Create starts a snapshot. A local snapshot writes nothing to the sink
// (fsmSnapshot.Persist only closes it); a snapshot received from a leader
// writes the state, which is kept until restored.
func (s *stateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	if version < raft.SnapshotVersionMin || version > raft.SnapshotVersionMax {
		return nil, fmt.Errorf("unsupported snapshot version %d", version)
	}
	meta := raft.SnapshotMeta{
		Version: version, ID: snapshotID(term, index), Index: index, Term: term,
		Configuration: configuration, ConfigurationIndex: configurationIndex,
	}
	return &snapshotSink{store: s, meta: meta}, nil
}

// List returns the newest snapshot's metadata, if any.
func (s *stateSnapshots) List() ([]*raft.SnapshotMeta, error) {
	metas, err := s.metas()
	if err != nil || len(metas) == 0 {
		return nil, err
	}
	return metas[:1], nil
}

// metas returns every stored snapshot's metadata, newest first.
func (s *stateSnapshots) metas() ([]*raft.SnapshotMeta, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []*raft.SnapshotMeta
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), snapMetaSuffix) {
			continue
		}
		m, err := s.readMeta(strings.TrimSuffix(e.Name(), snapMetaSuffix))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Term != out[j].Term {
			return out[i].Term > out[j].Term
		}
		if out[i].Index != out[j].Index {
			return out[i].Index > out[j].Index
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

func (s *stateSnapshots) readMeta(id string) (*raft.SnapshotMeta, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, id+snapMetaSuffix))
	if err != nil {
		return nil, fmt.Errorf("read snapshot %s: %w", id, err)
	}
	var m raft.SnapshotMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode snapshot %s: %w", id, err)
	}
	return &m, nil
}

// Open returns a snapshot's metadata and data: the received state while it
// waits to be restored, otherwise a consistent copy of the live state.
func (s *stateSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, err := s.readMeta(id)
	if err != nil {
		return nil, nil, err
	}
	if f, err := os.Open(filepath.Join(s.dir, id+snapDataSuffix)); err == nil {
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		meta.Size = st.Size()
		s.mu.Lock()
		s.opened = id
		s.mu.Unlock()
		return meta, f, nil
	}
	// A copy of the live state, which is at or after every snapshot
	// (recoverPending makes sure of that at start-up). It goes to a
	// temporary file first, because InstallSnapshot sends the size before
	// the data.
	tmp, err := os.CreateTemp(s.dir, "open-*"+snapTmpSuffix)
	if err != nil {
		return nil, nil, err
	}
	os.Remove(tmp.Name()) // gone when closed, even after a crash
	err = s.fsm.view(func(r *Reader) error {
		_, err := r.tx.WriteTo(tmp)
		return err
	})
	if err == nil {
		meta.Size, err = tmp.Seek(0, io.SeekCurrent)
	}
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		tmp.Close()
		return nil, nil, fmt.Errorf("open snapshot %s: %w", id, err)
	}
	return meta, tmp, nil
}

// restored is called by the FSM after it restored a state successfully:
// the received snapshot it was reading is no longer needed.
func (s *stateSnapshots) restored() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opened == "" {
		return
	}
	os.Remove(filepath.Join(s.dir, s.opened+snapDataSuffix))
	s.opened = ""
}

// recoverPending restores into the FSM a received snapshot that a crash
// left unrestored (its data file is still there), so that Raft's trust in
// the newest snapshot's index at start-up is justified. Restoring one
// twice is harmless: nothing is applied between a restore and the
// deletion of its data.
func (s *stateSnapshots) recoverPending() error {
	metas, err := s.metas()
	if err != nil || len(metas) == 0 {
		return err
	}
	_, rc, err := s.Open(metas[0].ID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	pending := s.opened == metas[0].ID
	s.mu.Unlock()
	if !pending {
		return rc.Close()
	}
	if err := s.fsm.Restore(rc); err != nil {
		return fmt.Errorf("restore received snapshot %s: %w", metas[0].ID, err)
	}
	return nil
}

// reap deletes every snapshot but keep, with the data of those that are
// not waiting to be restored.
func (s *stateSnapshots) reap(keep string) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, keep+".") || strings.HasSuffix(name, snapTmpSuffix) {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// snapshotSink collects a snapshot. Bytes written to it are a received
// state; a local snapshot writes none.
type snapshotSink struct {
	store *stateSnapshots
	meta  raft.SnapshotMeta
	data  *os.File
	done  bool
}

func (k *snapshotSink) ID() string { return k.meta.ID }

func (k *snapshotSink) Write(p []byte) (int, error) {
	if k.data == nil {
		f, err := os.OpenFile(filepath.Join(k.store.dir, k.meta.ID+snapDataSuffix+snapTmpSuffix), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return 0, err
		}
		k.data = f
	}
	n, err := k.data.Write(p)
	k.meta.Size += int64(n)
	return n, err
}

// Close records the snapshot: the data (if any) first, synced, then the
// metadata, whose appearance makes the snapshot exist; older snapshots go.
func (k *snapshotSink) Close() error {
	if k.done {
		return nil
	}
	k.done = true
	s := k.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.data != nil {
		err := k.data.Sync()
		if cerr := k.data.Close(); err == nil {
			err = cerr
		}
		tmp := filepath.Join(s.dir, k.meta.ID+snapDataSuffix+snapTmpSuffix)
		if err == nil {
			err = os.Rename(tmp, filepath.Join(s.dir, k.meta.ID+snapDataSuffix))
		}
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("snapshot %s: %w", k.meta.ID, err)
		}
	}
	b, err := json.Marshal(&k.meta)
	if err != nil {
		return err
	}
	metaTmp := filepath.Join(s.dir, k.meta.ID+snapMetaSuffix+snapTmpSuffix)
	if err := writeFileSync(metaTmp, strings.NewReader(string(b))); err != nil {
		return fmt.Errorf("snapshot %s: %w", k.meta.ID, err)
	}
	if err := os.Rename(metaTmp, filepath.Join(s.dir, k.meta.ID+snapMetaSuffix)); err != nil {
		os.Remove(metaTmp)
		return fmt.Errorf("snapshot %s: %w", k.meta.ID, err)
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	return s.reap(k.meta.ID)
}

func (k *snapshotSink) Cancel() error {
	if k.done {
		return nil
	}
	k.done = true
	if k.data != nil {
		k.data.Close()
		os.Remove(filepath.Join(k.store.dir, k.meta.ID+snapDataSuffix+snapTmpSuffix))
	}
	return nil
}
