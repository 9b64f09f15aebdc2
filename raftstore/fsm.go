package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

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
	// keySkipped counts the log entries this replica could not decode
	// and skipped: each one leaves it without what the entry wrote.
	keySkipped = []byte("skipped")
	// keyAheadOfLog is the applied index at which the state file was
	// joined to a log that may not hold its entries: a copy of another
	// replica's state (RebuildState), or a log that starts over (its
	// replica rejoined as a new member). Shard.checkLog excuses exactly
	// that gap.
	keyAheadOfLog = []byte("ahead_of_log")
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

	// isLeader tells, once the group has started, whether this replica
	// leads it: a follower's applies are committed in groups (see
	// ApplyBatch), and a leader's too when groupOnLeader is set.
	isLeader      atomic.Pointer[func() bool]
	groupOnLeader bool
	wmu           sync.Mutex // guards pend and broken; taken before mu
	pend          *pendingApply
	// users are those whose mail the pending group holds changes of.
	users *groupUsers
	// pending is set while pend holds applied entries, and failed once
	// broken is, so that a read checks without taking wmu.
	pending, failed atomic.Bool
	// dropOnClose makes close drop a pending group, as a crash does
	// (Shard.Abort).
	dropOnClose atomic.Bool
	// committing times the commit under way (see Shard.stuckWrite);
	// writes holds it while the replica's disk is stalled
	// (Shard.StallWrites), and beforeCommit, if set (tests), runs as it
	// starts.
	committing   writeClock
	writes       *writeGate
	beforeCommit func()
	// broken is the failure of a commit or of an apply that lost a
	// pending group: the state file no longer holds every entry before
	// the next one, so this replica applies nothing more until it
	// restarts and replays them from its log.
	broken error

	// logWritten, when set, returns once this replica's log holds every
	// entry through an index: a leader writes its log beside replication
	// and applies nothing before its own write (leaderlog.go).
	logWritten func(index uint64) error

	// repaired counts the damaged pieces that repair entries
	// (RepairBlob, RepairRecord, RepairOutbound) wrote over in this
	// replica's state (Status.Repaired).
	repaired atomic.Uint64
}

// A follower's applies are committed together, up to followerCommitDelay
// after the first or followerCommitBytes of entries, whichever comes
// first, or when the replica snapshots, copies its state or stops; so
// are a leader's when groupOnLeader is set, and otherwise a leader
// commits every batch. A grouped entry is readable and its change events
// are out as soon as it is applied: queries read inside the pending
// transaction (fsm.read), so neither a waiter (WaitApplied) nor a read
// pays the state file's syncs. The log holds every entry a replica has
// applied (it is truncated only up to a snapshot, which commits first),
// so a crash loses nothing a replay does not bring back: a proposer's
// answer waits for the entry's commit on a quorum of logs and its apply,
// not for the state file. What grouping saves is the state file's two
// syncs per batch, where the disk's syncs bound small-message ingest and
// every write of an IMAP session, and the pages: a commit rewrites every
// page its entries touched (about ten per message, in buckets of their
// own), so a longer group rewrites the shared ones (the user's, the
// request table's, the branches) once for more messages. At 150 ms
// instead of 50 a single node's 4 KiB ingest wrote 9.3 pages an entry
// instead of 11.6 and spent 20 % of its CPU in bbolt instead of 25 %
// (docs/architecture.md, fifteenth round); a crash replays at most that
// much more of the log.
const (
	followerCommitDelay = 150 * time.Millisecond
	followerCommitBytes = 4 << 20
)

// pendingApply is a write transaction holding applied entries not yet
// committed.
type pendingApply struct {
	tx      *bbolt.Tx
	first   uint64 // first index applied in tx
	through uint64 // last index applied in tx
	bytes   int
	timer   *time.Timer
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
	err = func() (err error) {
		// A damaged root page makes bbolt panic here; the file is closed
		// below either way, so its lock and mapping go with it.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: %v", ErrCorrupt, r)
			}
		}()
		return db.Update(func(tx *bbolt.Tx) error {
			for _, b := range buckets {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return db, nil
}

func openFSM(path string, log *slog.Logger) (*fsm, error) {
	f := &fsm{path: path, log: log}
	var applied uint64
	err := func() (err error) {
		defer f.corruption(&err)
		if f.db, err = openState(path); err != nil {
			return err
		}
		return f.db.View(func(tx *bbolt.Tx) error { applied = getU64(tx.Bucket(bucketSys), keyApplied); return nil })
	}()
	if err != nil {
		if f.db != nil {
			f.db.Close()
		}
		if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) {
			// Both meta pages damaged: bbolt cannot tell where the tree is.
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		// A panic inside bbolt.Open (a damaged freelist page) leaves the
		// file open, locked and mapped with no handle to close it by,
		// until the process ends: a rebuild puts the new state file in
		// its place by name, which that lock does not hold up.
		return nil, err
	}
	f.events, f.users = newNotifier(applied), newGroupUsers(applied)
	return f, nil
}

// appliedIndexes returns the last index the state file has applied and
// the index at which it was last joined to a log that may not hold its
// entries (see keyAheadOfLog).
func (f *fsm) appliedIndexes() (applied, ahead uint64) {
	_ = f.db.View(func(tx *bbolt.Tx) error {
		sys := tx.Bucket(bucketSys)
		applied, ahead = getU64(sys, keyApplied), getU64(sys, keyAheadOfLog)
		return nil
	})
	return applied, ahead
}

// markAheadOfLog records that the state file, at applied index index, is
// joined to a log that may not hold its entries (keyAheadOfLog).
func markAheadOfLog(db *bbolt.DB, index uint64) error {
	err := db.Update(func(tx *bbolt.Tx) error { return putU64(tx.Bucket(bucketSys), keyAheadOfLog, index) })
	if err != nil {
		return fmt.Errorf("record the state ahead of the log: %w", err)
	}
	return nil
}

func (f *fsm) close() error {
	var flushErr error
	if f.dropOnClose.Load() {
		f.wmu.Lock()
		f.discardLocked()
		f.wmu.Unlock()
	} else {
		flushErr = f.flush()
	}
	// A broken replica's group was not committed by flush: roll it back,
	// or closing the file would wait for its transaction for ever.
	f.wmu.Lock()
	f.discardLocked()
	f.wmu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Close()
	f.db = nil
	return errors.Join(flushErr, err)
}

// view runs fn on the state file as committed, with every applied entry
// in it: a pending group is committed first. Copies of the whole file
// (snapshots, backups) read through view.
func (f *fsm) view(fn func(*Reader) error) error {
	if err := f.commitPending(); err != nil {
		return err
	}
	return f.readCommitted(fn)
}

// heldReadPatience is how long a commit of the state file may last before
// read fails with ErrStuck rather than wait for it. Commits take
// milliseconds, and up to a few hundred on a loaded disk (0.25-0.5 s
// seen under cluster3's 1 MiB ingest on a two-core test machine): a read
// that gave up sooner would fail what the disk only delays, a login
// first (a directory lookup has no other replica to ask), while a disk
// that hangs is still told within seconds.
const heldReadPatience = 2 * time.Second

// read runs fn on the state as of the last applied entry without
// committing a pending group: fn reads inside that group's transaction,
// holding off applies meanwhile, so fn must only copy what it needs.
// What a pending group holds is committed on a quorum of logs, so a read
// may show it before the state file has it (see followerCommitDelay).
func (f *fsm) read(fn func(*Reader) error) error {
	if !f.pending.Load() && !f.failed.Load() {
		return f.readCommitted(fn)
	}
	if d := f.committing.lasted(); d > heldReadPatience {
		// The group's commit hangs (a disk that does not answer), and the
		// read would wait for it: the caller hears so at once.
		return stuckCommit(d)
	}
	if err := f.lockForRead(); err != nil {
		return err
	}
	if f.broken != nil {
		f.wmu.Unlock()
		return f.broken
	}
	if f.pend == nil {
		f.wmu.Unlock()
		return f.readCommitted(fn)
	}
	defer f.wmu.Unlock()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	err := func() (err error) {
		defer f.corruption(&err)
		return fn(&Reader{tx: f.pend.tx})
	}()
	if errors.Is(err, ErrCorrupt) {
		f.discardLocked()
		f.breakLocked(err)
	}
	return err
}

// readUser runs fn on user's mail as of the last applied entry, and
// gives it the applied index it stands for. When no entry of the
// pending group read or wrote that mail (groupUsers), fn reads the state
// file as committed, beside the group's applies and its commit, and the
// index is the last applied one: the user's mail is the same in both.
// Otherwise it reads as read does. fn must read nothing but user's mail.
func (f *fsm) readUser(user schema.ID, fn func(r *Reader, index uint64) error) error {
	if f.failed.Load() {
		return f.read(func(r *Reader) error { return fn(r, r.AppliedIndex()) })
	}
	committed, applied, ok := f.users.untouched(user)
	if !ok {
		return f.read(func(r *Reader) error { return fn(r, r.AppliedIndex()) })
	}
	return f.readCommitted(func(r *Reader) error {
		index := r.AppliedIndex()
		if index == committed {
			// Still the file the group started from. Had a commit come
			// between, index would hold everything through applied.
			index = applied
		}
		return fn(r, index)
	})
}

// stuckCommit is read's answer while the state file's commit hangs.
func stuckCommit(d time.Duration) error {
	return fmt.Errorf("%w: the state file's commit has not returned for %s", ErrStuck, d.Round(100*time.Millisecond))
}

// lockForRead takes wmu for read. A commit holds wmu for as long as the
// disk takes, so a reader that came in the first moments of a commit that
// hangs gives up with ErrStuck once the commit has lasted
// heldReadPatience, as a reader that came later does at once, instead of
// waiting with it until the disk answers. When wmu is not free, a helper
// goroutine waits for it and hands it over; if the reader has left by
// then, the helper lets it go.
func (f *fsm) lockForRead() error {
	if f.wmu.TryLock() {
		return nil
	}
	const (
		waiting = iota
		handed
		left
	)
	var state atomic.Int32
	got := make(chan struct{})
	go func() {
		f.wmu.Lock()
		if state.CompareAndSwap(waiting, handed) {
			close(got)
			return
		}
		f.wmu.Unlock()
	}()
	tick := time.NewTicker(heldReadPatience / 5)
	defer tick.Stop()
	for {
		select {
		case <-got:
			return nil
		case <-tick.C:
			if d := f.committing.lasted(); d > heldReadPatience && state.CompareAndSwap(waiting, left) {
				return stuckCommit(d)
			}
		}
	}
}

// readCommitted runs fn in a read transaction of the state file. A page
// that bbolt finds corrupt breaks the replica (ErrCorrupt).
func (f *fsm) readCommitted(fn func(*Reader) error) error {
	err := func() (err error) {
		f.mu.RLock()
		defer f.mu.RUnlock()
		if f.db == nil {
			return ErrClosed
		}
		defer f.corruption(&err)
		return f.db.View(func(tx *bbolt.Tx) error { return fn(&Reader{tx: tx}) })
	}()
	if errors.Is(err, ErrCorrupt) {
		f.breakFor(err)
	}
	return err
}

// corruption, deferred around work on the state file's pages, turns a
// panic of bbolt's (its assertions on pages that are not what their
// parent says, or an index out of range in one) into an error wrapping
// ErrCorrupt, so that one damaged file stops its replica, not the
// process and every other replica with it. The stack goes to the log: it
// tells a damaged file from a bug, and holds code positions, no data.
func (f *fsm) corruption(err *error) {
	r := recover()
	if r == nil {
		return
	}
	*err = fmt.Errorf("%w: %v", ErrCorrupt, r)
	f.log.Error("state file corrupt: bbolt panicked on it", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
}

// Apply applies one entry; hashicorp/raft calls ApplyBatch instead because
// fsm implements raft.BatchingFSM, but Apply must exist.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in one bbolt transaction, then
// hands out their change events. A leader that does not group commits
// the transaction (one fsync pair for the batch) before it returns;
// otherwise the transaction stays open for the next batches (see
// followerCommitDelay).
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	results := make([]any, len(logs))
	fail := func(err error) []any {
		for i := range results {
			results[i] = fmt.Errorf("apply: %w", err)
		}
		return results
	}
	if f.logWritten != nil {
		if err := f.logWritten(logs[len(logs)-1].Index); err != nil {
			// Raft counts these entries applied whatever the answer.
			if !errors.Is(err, errLogAborted) {
				f.breakFor(err)
			}
			return fail(err)
		}
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		for i := range results {
			results[i] = ErrClosed
		}
		return results
	}
	if f.broken != nil {
		return fail(f.broken)
	}
	p := f.pend
	if p == nil {
		tx, err := f.db.Begin(true)
		if err != nil {
			// Raft counts these entries applied whatever the answer: the
			// replica must stop here for a reopen to replay them.
			f.log.Error("apply batch failed", "err", err, "first", logs[0].Index, "count", len(logs))
			f.breakLocked(err)
			return fail(err)
		}
		p = &pendingApply{tx: tx, first: logs[0].Index}
		f.pend = p
		f.pending.Store(true)
	}
	users := map[schema.ID]struct{}{}
	events, through, n, err := f.applyInto(p.tx, logs, results, users)
	if err != nil {
		// A bbolt write failure (disk full, I/O error) leaves this replica
		// unable to follow the log; report it to every proposer. Raft
		// counts the batch applied whatever the answer, so the replica
		// stops here (with the group before it, if any) until a reopen
		// replays them (see Shard.Broken).
		f.log.Error("apply batch failed", "err", err, "first", p.first, "last", logs[len(logs)-1].Index)
		f.discardLocked()
		f.breakLocked(err)
		return fail(err)
	}
	p.through = max(p.through, through)
	p.bytes += n
	f.users.add(users, p.through)
	if f.commitsEveryBatch() || p.bytes >= followerCommitBytes {
		if err := f.commitLocked(); err != nil {
			return fail(err)
		}
	} else if p.timer == nil {
		p.timer = time.AfterFunc(followerCommitDelay, func() { f.flush() })
	}
	// A grouped entry is readable as soon as it is applied (see read), so
	// its events go out now, committed or not.
	f.events.publish(events, through)
	return results
}

// applyInto applies logs inside tx, filling results and adding to users
// every user whose mail they read or write; it returns their change
// events, the last index applied and the bytes of the entries.
func (f *fsm) applyInto(tx *bbolt.Tx, logs []*raft.Log, results []any, users map[schema.ID]struct{}) (events []Event, through uint64, n int, err error) {
	defer f.corruption(&err)
	sys := tx.Bucket(bucketSys)
	applied := getU64(sys, keyApplied)
	last, lastTerm := applied, uint64(0)
	for i, l := range logs {
		n += len(l.Data)
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
		res, evs := f.applyOne(tx, l, users)
		results[i] = res
		events = append(events, evs...)
	}
	if last > applied {
		if err := putU64(sys, keyAppliedTerm, lastTerm); err != nil {
			return nil, 0, n, err
		}
		if err := putU64(sys, keyApplied, last); err != nil {
			return nil, 0, n, err
		}
	}
	return events, last, n, nil
}

// commitsEveryBatch reports whether a batch commits as it is applied: on
// a leader that does not group its commits, and before the group has
// started.
func (f *fsm) commitsEveryBatch() bool {
	fn := f.isLeader.Load()
	if fn == nil {
		return true
	}
	if !(*fn)() {
		return false
	}
	return !f.groupOnLeader
}

// breakLocked stops this replica applying after err lost applied
// entries of a pending group (see fsm.broken).
func (f *fsm) breakLocked(err error) {
	if f.broken != nil {
		return
	}
	if errors.Is(err, ErrCorrupt) {
		f.broken = fmt.Errorf("rebuild the replica from another replica's state: %w", err)
		f.log.Error("state machine stopped applying until the replica is rebuilt", "err", err)
	} else {
		f.broken = fmt.Errorf("state file lost applied entries, reopen the replica to replay them: %w", err)
		f.log.Error("state machine stopped applying until the replica is reopened", "err", err)
	}
	f.failed.Store(true)
}

// breakFor stops the replica's applies, as breakLocked does, for a
// failure outside an apply or a commit: a write to the Raft log that
// failed (leaderlog.go; reopening the replica replays its log), or a
// read that met a corrupt page (ErrCorrupt; the replica's state must be
// rebuilt).
func (f *fsm) breakFor(err error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.broken == nil && errors.Is(err, ErrCorrupt) {
		// A read met the damage: what the group holds cannot be
		// committed into the file either.
		f.discardLocked()
		f.breakLocked(err)
	}
	if f.broken == nil {
		f.broken = fmt.Errorf("%w; reopen the replica to replay its log", err)
		f.failed.Store(true)
		f.log.Error("state machine stopped applying until the replica is reopened", "err", err)
	}
}

// commitLocked commits the pending transaction.
func (f *fsm) commitLocked() error {
	p := f.pend
	if p == nil {
		return nil
	}
	f.pend = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	f.committing.begin()
	if f.writes != nil {
		f.writes.wait()
	}
	if f.beforeCommit != nil {
		f.beforeCommit()
	}
	err := func() (err error) {
		defer func() {
			if errors.Is(err, ErrCorrupt) {
				p.tx.Rollback() // bbolt panicked inside Commit
			}
		}()
		defer f.corruption(&err)
		return p.tx.Commit()
	}()
	f.committing.end()
	if err != nil {
		f.log.Error("apply batch failed", "err", err, "first", p.first, "last", p.through)
		f.breakLocked(err)
	} else {
		f.users.reset(p.through)
	}
	// Cleared only now: a reader that saw no pending group must find its
	// entries in the state file, so one that comes during the commit
	// waits for it (see read).
	f.pending.Store(false)
	return err
}

// discardLocked rolls the pending transaction back.
func (f *fsm) discardLocked() {
	if p := f.pend; p != nil {
		f.pend = nil
		f.users.drop()
		f.pending.Store(false)
		if p.timer != nil {
			p.timer.Stop()
		}
		p.tx.Rollback()
	}
}

// flush commits what the replica has applied and not committed yet.
func (f *fsm) flush() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.broken != nil {
		return f.broken
	}
	return f.commitLocked()
}

// brokenErr returns why this replica applies and serves nothing more
// until it restarts, or nil.
func (f *fsm) brokenErr() error {
	if !f.failed.Load() {
		return nil
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.broken
}

// commitPending commits a pending group, if there is one; it fails on a
// replica whose state file lost applied entries, which must not serve
// reads nor stand for a snapshot.
func (f *fsm) commitPending() error {
	if !f.pending.Load() && !f.failed.Load() {
		return nil
	}
	return f.flush()
}

// applyOne decodes and applies one command inside tx, consulting and
// filling the request-id table and adding the users whose mail it reads
// or writes to users.
func (f *fsm) applyOne(tx *bbolt.Tx, l *raft.Log, users map[schema.ID]struct{}) (*schema.Result, []Event) {
	cmd, err := schema.DecodeCommand(l.Data)
	if err != nil {
		// Skipped on every replica alike when no software decodes it; a
		// replica whose software is older than the entry's form is left
		// behind the others (see schema.Level), which the count shows.
		f.log.Error("undecodable log entry", "index", l.Index, "err", err)
		sys := tx.Bucket(bucketSys)
		must(putU64(sys, keySkipped, getU64(sys, keySkipped)+1))
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
	a := &applier{tx: tx, cmd: cmd, index: l.Index, users: users}
	res := a.apply()
	res.Index = l.Index
	if a.repaired > 0 {
		f.repaired.Add(uint64(a.repaired))
		f.log.Warn("damaged copy of a message or record in the state file put back from a copy that opened",
			"index", l.Index, "op", cmd.Payload.Op(), "pieces", a.repaired)
	}
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
	// The snapshot stands for the state file as committed: what a
	// follower applied must be in it first.
	if err := f.flush(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
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
	// Applied and not committed is replaced like the rest.
	f.wmu.Lock()
	f.discardLocked()
	f.wmu.Unlock()
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
	// The snapshot's state is whole: a gap left by a failed commit is gone.
	f.wmu.Lock()
	f.broken = nil
	f.failed.Store(false)
	f.wmu.Unlock()
	if f.onRestore != nil {
		f.onRestore()
	}
	var applied uint64
	_ = db.View(func(tx *bbolt.Tx) error { applied = getU64(tx.Bucket(bucketSys), keyApplied); return nil })
	f.users.reset(applied)
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
