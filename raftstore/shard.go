package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// ErrNotLeader is returned by Apply on a replica that is not the leader.
var ErrNotLeader = errors.New("raftstore: not the leader")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("raftstore: shard closed")

// ErrStuck answers a read of a replica whose write to its disk has hung
// (see Shard.Stuck): the read would wait for the disk. It is a temporary
// failure; another node, or this one once its disk answers, serves it.
var ErrStuck = errors.New("raftstore: a write to the disk has not returned")

// ErrCorrupt marks a state file in which bbolt met a page that is not
// what the page that refers to it says (a disk or file system that
// returned other bytes than were written): bbolt asserts with a panic,
// which the replica turns into this error. The replica then applies and
// serves nothing, like a replica whose write failed (Shard.Broken), but
// replaying its log cannot mend the file: its node rebuilds the state
// from another replica's copy (see RebuildState).
var ErrCorrupt = errors.New("raftstore: state file corrupt")

// Timing holds the Raft timeouts of a shard. Zero fields take defaults
// suited to a LAN or a single node.
type Timing struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot.
	SnapshotThreshold uint64
	// SnapshotBytes is how many bytes of entries, stored since the
	// replica's last snapshot by size, trigger one as well: entries carry
	// whole messages, and the count alone let a shard of large mail keep
	// gigabytes of log.
	SnapshotBytes uint64
	// SnapshotInterval is how often raft checks SnapshotThreshold; the
	// size is checked at least every snapshotSizeCheck.
	SnapshotInterval time.Duration
	TrailingLogs     uint64
	// StuckWriteAfter is how long a write to the disk (the Raft log, a
	// commit of the state file) may go on before the replica, if it
	// leads, stops sending appends and heartbeats so that another
	// replica is elected (see quietTransport.holdWhileStuck).
	StuckWriteAfter time.Duration
}

func (t Timing) withDefaults() Timing {
	if t.HeartbeatTimeout == 0 {
		t.HeartbeatTimeout = 500 * time.Millisecond
	}
	if t.ElectionTimeout == 0 {
		t.ElectionTimeout = 500 * time.Millisecond
	}
	if t.LeaderLeaseTimeout == 0 {
		t.LeaderLeaseTimeout = t.HeartbeatTimeout / 2
	}
	if t.CommitTimeout == 0 {
		t.CommitTimeout = 25 * time.Millisecond
	}
	if t.SnapshotThreshold == 0 {
		t.SnapshotThreshold = 8192
	}
	if t.SnapshotBytes == 0 {
		t.SnapshotBytes = 256 << 20
	}
	if t.SnapshotInterval == 0 {
		t.SnapshotInterval = 2 * time.Minute
	}
	if t.TrailingLogs == 0 {
		// Entries carry whole messages, so trailing logs cost disk in
		// proportion; a follower further behind gets the state instead.
		t.TrailingLogs = 1024
	}
	if t.StuckWriteAfter == 0 {
		// Far above a slow disk's fsync under load (hundreds of
		// milliseconds), so that load alone never moves a leader.
		t.StuckWriteAfter = max(5*time.Second, 4*t.HeartbeatTimeout)
	}
	return t
}

// Config describes one shard replica.
type Config struct {
	// Shard is the shard number (0 is the meta shard).
	Shard uint32
	// Dir holds this replica's files: wal/ (the Raft log), raft.db (the
	// Raft stable store), state.db (the FSM) and snapshots/.
	Dir string
	// NodeID is this node's stable Raft server id.
	NodeID string
	// Address is this node's Raft address: its cluster address, which
	// Stream dials for every group.
	Address string
	// Stream carries the group's Raft RPCs over the node's cluster port.
	// With neither Stream nor Transport, an in-memory transport serves a
	// single-node group.
	Stream StreamLayer
	// Transport replaces Stream with a ready Raft transport (tests
	// connect in-memory transports with it).
	Transport raft.Transport
	// Bootstrap makes a fresh replica bootstrap a group of which it is
	// the only voter. A replica that joins an existing group leaves it
	// false and waits for the group's leader to add it.
	Bootstrap bool
	// KeepDamagedLog opens a replica whose log is damaged (ErrLogDamaged)
	// anyway, logging the damage: for a group with no other voter that
	// could refill the replica. Raft then reads a damaged entry as it is,
	// as it did before entries had checksums.
	KeepDamagedLog bool
	// GroupLeaderCommits lets the group's leader, like a follower,
	// commit what it applies to the state file in groups (up to 50 ms or
	// 4 MiB of entries) rather than before it answers each batch: answers
	// then wait for the log's sync on a quorum and the apply only.
	// Queries read inside the pending group and its change events go out
	// as it is applied, so reads see every acknowledged write without
	// waiting for the state file; View and copies of the state commit
	// the group first. Without it a leader commits every batch (see
	// fsm.ApplyBatch).
	GroupLeaderCommits bool
	Timing             Timing
	Logger             *slog.Logger

	// beforeLogWrite and beforeStateCommit, when set, run before every
	// write to the Raft log and every commit of the state file: tests
	// hold one of them to make that write hang.
	beforeLogWrite, beforeStateCommit func()
	// beforeStableWrite, when set, runs before every write of the term
	// or vote to raft.db, for the same purpose.
	beforeStableWrite func()
	// clock, when set, replaces the wall clock a leader times lease
	// commands with (leasetime.go).
	clock func() time.Time
}

// Shard is one replica of a Raft group and its state machine.
type Shard struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	fsm    *fsm
	stable *logStore
	logs   *checkedLog
	cache  *logCache
	snaps  raft.SnapshotStore
	trans  raft.Transport
	closed chan struct{}
	once   sync.Once
	err    error

	reads readLease
	// writes holds the replica's disk writes while StallWrites is on.
	writes writeGate
	// skipped is the count of skipped entries Status read last.
	skipped atomic.Uint64
	// applies times the commands this replica proposed (Times).
	applies timeHist
	// terms is the clock this replica times lease commands with when it
	// leads (leasetime.go).
	terms termClock
}

// Open opens (and on first use, creates and bootstraps) a shard replica.
func Open(cfg Config) (*Shard, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeID == "" {
		return nil, fmt.Errorf("open shard %d: node id is required", cfg.Shard)
	}
	if cfg.Address == "" {
		cfg.Address = cfg.NodeID
	}
	cfg.Timing = cfg.Timing.withDefaults()
	logger := cfg.Logger.With("component", "raftstore", "shard", cfg.Shard)
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "snapshots"), 0o700); err != nil {
		return nil, fmt.Errorf("open shard %d: %w", cfg.Shard, err)
	}
	f, err := openFSM(filepath.Join(cfg.Dir, "state.db"), logger)
	if err != nil {
		return nil, fmt.Errorf("open shard %d: %w", cfg.Shard, err)
	}
	f.groupOnLeader = cfg.GroupLeaderCommits
	s := &Shard{cfg: cfg, log: logger, fsm: f, closed: make(chan struct{})}
	s.terms.now = cfg.clock
	f.writes, f.beforeCommit = &s.writes, cfg.beforeStateCommit
	if err := s.openRaft(); err != nil {
		f.close()
		if s.logs != nil {
			s.logs.Close()
		}
		if s.stable != nil {
			s.stable.Close()
		}
		return nil, fmt.Errorf("open shard %d: %w", cfg.Shard, err)
	}
	s.watchLeadership()
	go s.snapshotBySize()
	return s, nil
}

func (s *Shard) openRaft() error {
	cfg := s.cfg
	hl := newHclog(s.log, hclog.Warn)
	stable, err := openStableStore(cfg.Dir)
	if err != nil {
		return fmt.Errorf("stable store: %w", err)
	}
	s.stable = stable
	stable.writes, stable.before = &s.writes, cfg.beforeStableWrite
	w, err := openRaftLog(cfg.Dir, stable, hl)
	if err != nil {
		return err
	}
	logs := &checkedLog{WAL: w, log: s.log}
	s.logs = logs
	cache := newLogCache(logs, logCacheEntries, logCacheBytes)
	cache.writes, cache.before = &s.writes, cfg.beforeLogWrite
	s.cache = cache
	snaps, err := newStateSnapshots(filepath.Join(cfg.Dir, "snapshots"), s.fsm)
	if err != nil {
		return fmt.Errorf("snapshot store: %w", err)
	}
	s.fsm.onRestore = snaps.restored
	if err := snaps.recoverPending(); err != nil {
		return fmt.Errorf("snapshot store: %w", err)
	}
	s.snaps = snaps
	logs.afterSnapshot = func(idx uint64) bool {
		metas, err := snaps.metas()
		return err != nil || len(metas) == 0 || idx > metas[0].Index
	}
	if err := s.checkLog(snaps); err != nil {
		if !cfg.KeepDamagedLog || !errors.Is(err, ErrLogDamaged) {
			return err
		}
		s.log.Error("raft log damaged; opened as it is, since no other voter of the group holds it", "err", err)
		logs.keepDamaged = true
	}
	trans := cfg.Transport
	switch {
	case trans != nil:
	case cfg.Stream != nil:
		// No pipelining: with pipelined AppendEntries a failed response
		// can leave a replication goroutine blocked for ever, which hangs
		// shutdown and stalls followers (hashicorp/raft#612). quietTransport
		// counts on it too: only then does every append go through
		// AppendEntries.
		trans = newQuietTransport(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:          streamAdapter{cfg.Stream},
			MaxPool:         3,
			Timeout:         10 * time.Second,
			MaxRPCsInFlight: 1,
			Logger:          hl,
		}), cfg.Timing.HeartbeatTimeout)
	default:
		_, trans = raft.NewInmemTransport(raft.ServerAddress(cfg.Address))
	}
	if q, ok := trans.(*quietTransport); ok {
		q.holdWhileStuck(s.Stuck, s.log)
	}
	s.trans = trans

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout = cfg.Timing.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Timing.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Timing.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Timing.CommitTimeout
	rc.SnapshotThreshold = cfg.Timing.SnapshotThreshold
	rc.SnapshotInterval = cfg.Timing.SnapshotInterval
	rc.TrailingLogs = cfg.Timing.TrailingLogs
	rc.MaxAppendEntries = 64
	// Proposals queue while the leader writes the previous batch, so
	// concurrent writers share one log write (and one fsync).
	rc.BatchApplyCh = true
	// The FSM state is durable in bbolt and records its applied index, so
	// a restart need not rebuild it from the last snapshot.
	rc.NoSnapshotRestoreOnStart = true

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(cache, stable, snaps)
		if err != nil {
			return fmt.Errorf("check state: %w", err)
		}
		if !has {
			peers := []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(cfg.Address)}}
			if err := raft.BootstrapCluster(rc, cache, stable, snaps, trans, raft.Configuration{Servers: peers}); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
		}
	}
	if l, ok := trans.(commitLimiter); ok {
		q := newLogQueue()
		cache.queue = q
		l.limitCommit(q.writtenThrough)
		s.fsm.logWritten = q.waitWritten
		go q.run(cache.write, cache.cache, s.fsm.breakFor)
	}
	r, err := raft.NewRaft(rc, s.fsm, cache, stable, snaps, trans)
	if err != nil {
		if cache.queue != nil {
			cache.queue.close(false)
		}
		return fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
	leads := func() bool { return r.State() == raft.Leader }
	s.fsm.isLeader.Store(&leads)
	self := raft.ServerID(cfg.NodeID)
	beside := func() bool {
		if r.State() != raft.Leader {
			return false
		}
		// The latest configuration, read without the main loop.
		for _, srv := range r.GetConfiguration().Configuration().Servers {
			if srv.Suffrage == raft.Voter && srv.ID != self {
				return true
			}
		}
		return false
	}
	cache.beside.Store(&beside)
	return nil
}

// checkLog checks, before raft starts, the entries raft reads back as it
// starts and applies: those after the newest snapshot. It also fails when
// the log ends before what the state file has applied, with no snapshot
// to cover the gap: raft-wal drops a last batch whose CRC does not match
// as a write that a crash cut short, but an applied entry was synced
// first, so a damaged byte took it. A state file may be ahead of its log
// by right: copied in from another replica (RebuildState), or kept by a
// replica whose log starts over empty, which its node opens only as a
// new member of its group (HasRaftState); that gap is recorded, and
// excused from then on.
func (s *Shard) checkLog(snaps *stateSnapshots) error {
	metas, err := snaps.metas()
	if err != nil {
		return fmt.Errorf("snapshot store: %w", err)
	}
	var snapshot uint64
	if len(metas) > 0 {
		snapshot = metas[0].Index
	}
	last, err := s.logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	if applied, ahead := s.fsm.appliedIndexes(); applied > max(last, snapshot) && applied != ahead {
		if last != 0 {
			return fmt.Errorf("%w: it ends at entry %d, but the state file has applied entry %d", ErrLogDamaged, last, applied)
		}
		if err := markAheadOfLog(s.fsm.db, applied); err != nil {
			return err
		}
	}
	return s.logs.checkEntries(snapshot + 1)
}

// openStableStore opens (creating) a replica directory's raft.db.
func openStableStore(dir string) (*logStore, error) {
	return openLogStore(filepath.Join(dir, "raft.db"), &bbolt.Options{
		Timeout:        5 * time.Second,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
}

// commitLimiter is a transport that can keep the commit index it tells
// followers at or below a bound; a replica whose transport is one writes
// its log beside replication while it leads (leaderlog.go).
type commitLimiter interface {
	limitCommit(writtenThrough func() uint64)
}

// ID returns the shard number.
func (s *Shard) ID() uint32 { return s.cfg.Shard }

// IsLeader reports whether this replica leads its group and can act as
// its leader: one whose write to its disk has hung (Stuck) does not,
// although Raft has not stepped it down yet; it sends nothing meanwhile
// so that another is elected.
func (s *Shard) IsLeader() bool { return s.raft.State() == raft.Leader && s.Stuck() == nil }

// WaitForLeader blocks until the group has a leader (and, if this replica
// is the leader, until it has applied everything committed before its
// term), or ctx ends.
func (s *Shard) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := s.raft.LeaderWithID(); addr != "" {
			if s.raft.State() != raft.Leader {
				return nil
			}
			// A barrier makes the new leader's state current before it
			// serves reads.
			bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.await(bctx, s.raft.Barrier(time.Until(deadline(bctx, 10*time.Second))))
			cancel()
			if err == nil {
				// What it applied as a follower may not be committed yet.
				err = s.fsm.flush()
			}
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("shard %d: wait for leader: %w", s.cfg.Shard, ctx.Err())
		case <-s.closed:
			return ErrClosed
		case <-t.C:
		}
	}
}

func deadline(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}

// Apply proposes cmd, waits until it is committed and applied, and returns
// its result. A result carrying an error code is returned as that
// schema sentinel error together with the result. If ctx ends first the
// command may still be applied later; callers retry with the same ReqID.
// A Lease or StageChunk is timed by this leader's clock, not cmd.Time
// (leasetime.go).
func (s *Shard) Apply(ctx context.Context, cmd schema.Command) (*schema.Result, error) {
	select {
	case <-s.closed:
		return nil, ErrClosed
	default:
	}
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	switch p := cmd.Payload.(type) {
	case *schema.Lease:
		if res, err := s.timeLease(ctx, &cmd, p); res != nil || err != nil {
			return res, err
		}
	case *schema.StageChunk:
		// A staged piece expires by the leader's clock (LeaderTime), so
		// it is stamped by it: a proposer whose clock is behind cannot
		// make a piece of a message still being received look expired.
		cmd.Time = s.LeaderTime().UnixNano()
	}
	data := schema.EncodeCommand(cmd)
	proposed := time.Now()
	f := s.raft.Apply(data, time.Until(deadline(ctx, 30*time.Second)))
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
				errors.Is(err, raft.ErrLeadershipTransferInProgress) {
				return nil, fmt.Errorf("%s: %w", cmd.Payload.Op(), ErrNotLeader)
			}
			if errors.Is(err, raft.ErrRaftShutdown) {
				return nil, fmt.Errorf("%s: %w", cmd.Payload.Op(), ErrClosed)
			}
			return nil, fmt.Errorf("apply %s: %w", cmd.Payload.Op(), err)
		}
		s.applies.observe(time.Since(proposed))
	case <-ctx.Done():
		return nil, fmt.Errorf("apply %s: %w", cmd.Payload.Op(), ctx.Err())
	case <-s.closed:
		return nil, ErrClosed
	}
	switch r := f.Response().(type) {
	case *schema.Result:
		return r, r.Err()
	case error:
		return nil, fmt.Errorf("apply %s: %w", cmd.Payload.Op(), r)
	default:
		return nil, fmt.Errorf("apply %s: unexpected response %T", cmd.Payload.Op(), r)
	}
}

// View runs fn with a read-only view of the shard's state as of the last
// applied entry, committing a pending group first: fn may take its time
// (a copy of the whole state) without holding off applies.
func (s *Shard) View(fn func(*Reader) error) error { return s.fsm.view(fn) }

// Read runs fn on the shard's state as of the last applied entry without
// committing a pending group: fn reads inside the group's transaction
// and holds off applies while it runs, so it must be short (a lookup)
// and keep only copies (every Reader method returns copies). A lookup
// on a hot path reads this way: through View it would pay the group's
// commit, two syncs of the state file, whenever applies are pending.
func (s *Shard) Read(fn func(*Reader) error) error { return s.fsm.read(fn) }

// ReadCommitted runs fn on the state file as last committed, neither
// committing the pending group nor holding off applies: it may miss the
// entries of the group under way (up to a group's time), for a caller
// that walks much of the state and can do without them (a scrub).
func (s *Shard) ReadCommitted(fn func(*Reader) error) error { return s.fsm.readCommitted(fn) }

// Subscribe registers fn to receive the change events of user's data
// applied after index from, in log order: recent events this replica
// still remembers are replayed first, and if it no longer knows them fn
// first receives a ChangeResync. fn runs on the FSM's goroutine and must
// not block. The returned function unsubscribes.
func (s *Shard) Subscribe(user schema.ID, from uint64, fn func([]Event)) (cancel func()) {
	return s.fsm.events.subscribe(user, from, fn)
}

// Broken returns why this replica applies and serves nothing more, or
// nil: a write to its state file failed (disk full, I/O error) and lost
// entries Raft counts as applied. Closing and opening the replica again
// replays them from the log; the cluster does so (see
// cluster.repairReplicas).
func (s *Shard) Broken() error { return s.fsm.brokenErr() }

// LogDamaged returns the first damage found while the replica runs in an
// entry of its Raft log after its newest snapshot (ErrLogDamaged), or
// nil. Raft reads such an entry as missing; its next open finds it again
// and fails, so that the log is set aside (see ErrLogDamaged): the
// cluster closes and reopens the replica for that (see
// cluster.repairReplicas).
func (s *Shard) LogDamaged() error {
	if p := s.logs.damaged.Load(); p != nil {
		return *p
	}
	return nil
}

// CommitIndex returns the highest log index this replica knows to be
// committed: on a leader that writes its log beside replication, no
// higher than what it has written (leaderlog.go).
func (s *Shard) CommitIndex() uint64 {
	c := s.raft.CommitIndex()
	if q := s.cache.queue; q != nil {
		c = min(c, q.writtenThrough())
	}
	return c
}

// PublishedIndex returns the highest log index whose change events this
// replica has handed to its subscribers.
func (s *Shard) PublishedIndex() uint64 { return s.fsm.events.publishedIndex() }

// WaitApplied blocks until this replica has applied index and handed out
// its change events, or ctx ends.
func (s *Shard) WaitApplied(ctx context.Context, index uint64) error {
	if err := s.fsm.events.wait(ctx, index, s.closed); err != nil {
		return fmt.Errorf("shard %d: wait for index %d: %w", s.cfg.Shard, index, err)
	}
	return nil
}

// Snapshot forces a Raft snapshot now (which also truncates the log).
func (s *Shard) Snapshot() error {
	if err := s.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("shard %d: snapshot: %w", s.cfg.Shard, err)
	}
	return nil
}

// snapshotSizeCheck is how often, at the most, a replica compares the
// log it stored since its last snapshot by size with
// Timing.SnapshotBytes.
const snapshotSizeCheck = 5 * time.Second

// snapshotBySize snapshots the replica whenever the entries it stored
// since its last snapshot by size reach Timing.SnapshotBytes, so that
// raft removes the log behind the snapshot (but Timing.TrailingLogs
// entries). A snapshot costs a state file commit and a metadata write
// (stateSnapshots). It returns when the shard closes.
func (s *Shard) snapshotBySize() {
	every := min(snapshotSizeCheck, s.cfg.Timing.SnapshotInterval)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var mark uint64 // storedBytes at the last snapshot by size
	for {
		select {
		case <-s.closed:
			return
		case <-tick.C:
		}
		stored := s.cache.storedBytes()
		if stored-mark < s.cfg.Timing.SnapshotBytes {
			continue
		}
		if err := s.Snapshot(); err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			s.log.Warn("snapshot by log size", "stored_bytes", stored-mark, "err", err)
			continue
		}
		mark = stored
	}
}

// Close shuts the replica down: Raft first, then its stores.
func (s *Shard) Close() error {
	return s.close()
}

// Abort stops the replica as a crash would leave its files: what it
// applied and had not committed to the state file yet is dropped, for
// its log to replay at the next open. Tests crash a node in-process with
// it (cluster.Cluster.Abort); a Close after it does nothing more.
func (s *Shard) Abort() error {
	s.fsm.dropOnClose.Store(true)
	return s.close()
}

func (s *Shard) close() error {
	s.once.Do(func() {
		close(s.closed)
		var errs []error
		q := s.cache.queue
		if q != nil && s.fsm.dropOnClose.Load() {
			// A crash loses what the leader had not written yet.
			q.close(true)
		}
		if err := s.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		if q != nil {
			q.close(false)
		}
		if c, ok := s.trans.(raft.WithClose); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("transport: %w", err))
			}
		}
		if err := s.logs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft log: %w", err))
		}
		if err := s.stable.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stable store: %w", err))
		}
		if err := s.fsm.close(); err != nil {
			errs = append(errs, fmt.Errorf("state: %w", err))
		}
		s.err = errors.Join(errs...)
	})
	return s.err
}
