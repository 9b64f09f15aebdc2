package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Top-level buckets of state.db.
var (
	bucketSys         = []byte("sys")
	bucketReqs        = []byte("reqs")    // request id -> encoded result
	bucketReqLog      = []byte("reqlog")  // sequence -> request id, for eviction
	bucketDomains     = []byte("domains") // domain id -> DomainRecord
	bucketDomainNames = []byte("domain_names")
	bucketUsers       = []byte("users") // user id -> UserRecord (meta shard)
	bucketUserNames   = []byte("user_names")
	bucketSettings    = []byte("settings")
	bucketMail        = []byte("mail")   // user id -> per-user bucket (mail shards)
	bucketStaged      = []byte("staged") // user|blob|index -> time|sealed chunk
	bucketLeases      = []byte("leases") // key -> holder|expiry
	bucketSpool       = []byte("spool")  // spool id -> Spool without chunks
	bucketSpoolChunks = []byte("spool_chunks")
	bucketOutbound    = []byte("outbound") // queue entry id -> OutboundRecord without chunks
	bucketOutChunks   = []byte("outbound_chunks")

	topBuckets = [][]byte{bucketSys, bucketReqs, bucketReqLog, bucketDomains, bucketDomainNames,
		bucketUsers, bucketUserNames, bucketSettings, bucketMail, bucketStaged, bucketLeases,
		bucketSpool, bucketSpoolChunks, bucketOutbound, bucketOutChunks}

	keyApplied     = []byte("applied")
	keyAppliedTerm = []byte("applied_term")
	keyReqSeq      = []byte("reqseq")
)

// maxRequestIDs bounds the table of applied request ids. A retry arrives
// within seconds of its first attempt; this keeps tens of thousands.
const maxRequestIDs = 50000

// fsm is the shard's state machine over a bbolt file.
type fsm struct {
	path   string
	log    *slog.Logger
	events *notifier
	// onRestore, if set, is called after a successful Restore.
	onRestore func()

	mu sync.RWMutex // guards db against Restore swapping it
	db *bbolt.DB
}

func openState(path string) (*bbolt.DB, error) {
	// The freelist is synced (no NoFreelistSync): a file without one is
	// rescanned on open by a bbolt goroutine that panics on corruption,
	// and snapshot files copied from this one are opened to be checked.
	return openBolt(path, &bbolt.Options{
		Timeout:         5 * time.Second,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: 1 << 30, // keep long snapshot reads from blocking writers on remap
	}, topBuckets)
}

// openBolt opens (creating) the bbolt file at path and its top-level
// buckets.
func openBolt(path string, opts *bbolt.Options, buckets [][]byte) (*bbolt.DB, error) {
	db, err := bbolt.Open(path, 0o600, opts)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return db, nil
}

func openFSM(path string, log *slog.Logger) (*fsm, error) {
	db, err := openState(path)
	if err != nil {
		return nil, err
	}
	var applied uint64
	_ = db.View(func(tx *bbolt.Tx) error { applied = getU64(tx.Bucket(bucketSys), keyApplied); return nil })
	return &fsm{path: path, log: log, events: newNotifier(applied), db: db}, nil
}

func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Close()
	f.db = nil
	return err
}

func (f *fsm) view(fn func(*Reader) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return f.db.View(func(tx *bbolt.Tx) error { return fn(&Reader{tx: tx}) })
}

// Apply applies one entry; hashicorp/raft calls ApplyBatch instead because
// fsm implements raft.BatchingFSM, but Apply must exist.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in one bbolt transaction (one
// fsync for the batch), then hands out their change events.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	results := make([]any, len(logs))
	var events []Event
	var through uint64
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		for i := range results {
			results[i] = ErrClosed
		}
		return results
	}
	err := f.db.Update(func(tx *bbolt.Tx) error {
		sys := tx.Bucket(bucketSys)
		applied := getU64(sys, keyApplied)
		last, lastTerm := applied, uint64(0)
		defer func() { through = last }()
		for i, l := range logs {
			if l.Index <= applied {
				// Replayed after a restart: already in this state.
				results[i] = &schema.Result{}
				continue
			}
			last, lastTerm = l.Index, l.Term
			if l.Type != raft.LogCommand {
				results[i] = &schema.Result{}
				continue
			}
			res, evs := f.applyOne(tx, l)
			results[i] = res
			events = append(events, evs...)
		}
		if last > applied {
			if err := putU64(sys, keyAppliedTerm, lastTerm); err != nil {
				return err
			}
			return putU64(sys, keyApplied, last)
		}
		return nil
	})
	if err != nil {
		// A bbolt write failure (disk full, I/O error) leaves this replica
		// unable to follow the log; report it to every proposer.
		f.log.Error("apply batch failed", "err", err, "first", logs[0].Index, "count", len(logs))
		for i := range results {
			results[i] = fmt.Errorf("apply: %w", err)
		}
		return results
	}
	f.events.publish(events, through)
	return results
}

// applyOne decodes and applies one command inside tx, consulting and
// filling the request-id table.
func (f *fsm) applyOne(tx *bbolt.Tx, l *raft.Log) (*schema.Result, []Event) {
	cmd, err := schema.DecodeCommand(l.Data)
	if err != nil {
		f.log.Error("undecodable log entry", "index", l.Index, "err", err)
		return &schema.Result{Code: schema.CodeInvalid}, nil
	}
	reqs := tx.Bucket(bucketReqs)
	if !cmd.ReqID.IsZero() {
		if prev := reqs.Get(cmd.ReqID[:]); prev != nil {
			var r schema.Result
			if err := r.Unmarshal(prev); err == nil {
				r.Index = l.Index
				return &r, nil
			}
		}
	}
	a := &applier{tx: tx, cmd: cmd, index: l.Index}
	res := a.apply()
	res.Index = l.Index
	if !cmd.ReqID.IsZero() {
		if err := rememberRequest(tx, cmd.ReqID, res); err != nil {
			f.log.Error("remember request id", "index", l.Index, "err", err)
		}
	}
	return res, a.events
}

func rememberRequest(tx *bbolt.Tx, id schema.ID, res *schema.Result) error {
	reqs, reqLog, sys := tx.Bucket(bucketReqs), tx.Bucket(bucketReqLog), tx.Bucket(bucketSys)
	if err := reqs.Put(id[:], res.Marshal()); err != nil {
		return err
	}
	seq := getU64(sys, keyReqSeq) + 1
	if err := putU64(sys, keyReqSeq, seq); err != nil {
		return err
	}
	if err := reqLog.Put(u64Key(seq), id[:]); err != nil {
		return err
	}
	if seq > maxRequestIDs {
		old := u64Key(seq - maxRequestIDs)
		if oldID := reqLog.Get(old); oldID != nil {
			if err := reqs.Delete(oldID); err != nil {
				return err
			}
		}
		return reqLog.Delete(old)
	}
	return nil
}

// Snapshot returns a consistent view of the state; Persist streams it
// while new entries keep being applied.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &fsmSnapshot{tx: tx}, nil
}

type fsmSnapshot struct{ tx *bbolt.Tx }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, ok := sink.(*snapshotSink); ok {
		// The shard's own snapshot store: the live state stands for this
		// snapshot, so nothing is copied (see stateSnapshots).
		return sink.Close()
	}
	if _, err := s.tx.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.tx.Rollback() }

// Restore replaces the whole state with a snapshot: the bbolt file is
// written beside the live one, synced, checked and swapped in.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore"
	if err := writeFileSync(tmp, rc); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := checkState(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			f.mu.Unlock()
			return fmt.Errorf("restore: close state: %w", err)
		}
		f.db = nil
	}
	err := os.Rename(tmp, f.path)
	if err == nil {
		err = syncDir(filepath.Dir(f.path))
	}
	db, openErr := openState(f.path)
	f.db = db
	f.mu.Unlock()
	if err = errors.Join(err, openErr); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if f.onRestore != nil {
		f.onRestore()
	}
	var applied uint64
	_ = db.View(func(tx *bbolt.Tx) error { applied = getU64(tx.Bucket(bucketSys), keyApplied); return nil })
	f.events.resyncAll(applied)
	return nil
}

func writeFileSync(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		os.Remove(path)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(path)
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkState opens a state file read-only and runs bbolt's consistency
// check over it. bbolt asserts with panics on some corrupt pages; those
// are turned into errors here.
func checkState(path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("snapshot state corrupt: %v", r)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open snapshot state: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("snapshot state inconsistent: %w", err)
		}
		if tx.Bucket(bucketSys) == nil {
			return errors.New("snapshot state has no sys bucket")
		}
		return nil
	})
}

func getU64(b *bbolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(b *bbolt.Bucket, k []byte, v uint64) error {
	return b.Put(k, u64Key(v))
}

func u64Key(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func u32Key(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
