package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/raftstore"
)

// Cluster is what a backup needs from the cluster (the node composes it
// from package cluster and the directory).
type Cluster interface {
	// BackupShards returns every shard of the cluster, meta first: one
	// backup covers each once, whatever the number of replicas.
	BackupShards() []uint32
	// WriteShardState writes a consistent copy of shard n's state to w,
	// from this node's replica or from one on another node.
	WriteShardState(ctx context.Context, n uint32, w io.Writer) (raftstore.StateInfo, error)
	// ClusterID returns the cluster's stable id.
	ClusterID(ctx context.Context) (string, error)
	// BackupRecipient returns the backup public key ("" if none).
	BackupRecipient(ctx context.Context) (string, error)
	// BackupManifestKey returns the key that authenticates manifests.
	BackupManifestKey() [32]byte
}

// Config configures a Runner.
type Config struct {
	// Targets are where backups go; at least one (two or more regions are
	// what geo-distribution means).
	Targets []Target
	// Cluster is the node's cluster; only Backup needs it, so a runner
	// for restoring on a new machine leaves it nil.
	Cluster Cluster
	// NodeID is recorded in manifests and is the default Raft id of
	// restored replicas.
	NodeID string
	// TempDir holds the encrypted copies being uploaded and the state
	// files being checked; "" means the system's temporary directory.
	TempDir string
	// DataDir and Files name small files of the node's data directory
	// (node state, key salt) backed up with the shards and put back by a
	// restore. Missing files are skipped. Never list keys here.
	DataDir string
	Files   []string
	// Retention says which backups to keep.
	Retention Retention
	// DrillCheck, if set, is run by Drill on the restored data directory
	// (for example: open it as a cluster and check it serves).
	DrillCheck func(ctx context.Context, dir, nodeID string) error
	Clock      Clock
	Logger     *slog.Logger
	// Registry receives the backup metrics; nil keeps them unregistered.
	Registry prometheus.Registerer
	// Progress reports long transfers; nil is silent.
	Progress *Progress
	// ManifestKey authenticates manifests (cluster.BackupManifestKey of
	// the master key). A runner with a Cluster takes it from there; a
	// runner without one (restoring on a new machine) gets it from the
	// master key when the operator gives it. With a key, a manifest
	// without a valid MAC is refused everywhere; without one, manifests
	// are read unauthenticated.
	ManifestKey *[32]byte
	// KeyStore, if set, keeps the key store out of the backups' history
	// (keystore.go): left out of its shard's copies, written as one
	// current copy per target.
	KeyStore *KeyStore
}

// Runner takes, lists, verifies, restores, drills and prunes backups.
// Its methods are safe for concurrent use; they run one at a time.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	metrics *metrics
	sem     chan struct{}

	mu        sync.Mutex
	lastDrill *Verification
	lastErr   error     // of the last backup run
	lastTime  time.Time // creation time of the last backup taken here

	// ksMu serialises writes of the key store, each reading the entries
	// under it, so an older read never overwrites a newer one (a backup's
	// copy written after a deletion's).
	ksMu sync.Mutex
}

// New returns a Runner.
func New(cfg Config) (*Runner, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("backup: no targets configured")
	}
	seen := map[string]bool{}
	for _, t := range cfg.Targets {
		if seen[t.Region()] {
			return nil, fmt.Errorf("backup: region label %q used by two targets", t.Region())
		}
		seen[t.Region()] = true
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	for _, f := range cfg.Files {
		if !validFileName(f) {
			return nil, fmt.Errorf("backup: %q is not a plain file name", f)
		}
	}
	cfg.Retention = cfg.Retention.withDefaults()
	if cfg.ManifestKey == nil && cfg.Cluster != nil {
		k := cfg.Cluster.BackupManifestKey()
		cfg.ManifestKey = &k
	}
	m, err := newMetrics(cfg.Registry, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("backup: register metrics: %w", err)
	}
	return &Runner{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "backup"),
		clock:   cfg.Clock,
		metrics: m,
		sem:     make(chan struct{}, 1),
	}, nil
}

// Targets returns the configured targets.
func (r *Runner) Targets() []Target { return append([]Target(nil), r.cfg.Targets...) }

func (r *Runner) acquire(ctx context.Context) error {
	select {
	case r.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runner) release() { <-r.sem }

// BackupResult describes a finished backup run.
type BackupResult struct {
	Manifest *Manifest
	Duration time.Duration
	// Pruned lists the backups (and partial backups) retention deleted.
	Pruned []string
}

// Backup backs up every shard of this node to every target, then deletes
// older partial backups and applies retention. It fails unless every
// target received the whole backup; then it removes what it uploaded.
func (r *Runner) Backup(ctx context.Context) (*BackupResult, error) {
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	start := r.clock.Now()
	created := start.UTC().Truncate(time.Millisecond)
	r.mu.Lock()
	// Ids order backups; two runs within a millisecond (or a clock that
	// stepped back) must still get increasing ones.
	if !created.After(r.lastTime) {
		created = r.lastTime.Add(time.Millisecond)
	}
	r.lastTime = created
	r.mu.Unlock()
	res, err := r.backup(ctx, created)
	r.metrics.runs.WithLabelValues(result(err)).Inc()
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	if err != nil {
		r.log.Error("backup failed", "err", err)
		return nil, err
	}
	res.Duration = r.clock.Now().Sub(start)
	r.metrics.lastDuration.Set(res.Duration.Seconds())
	r.metrics.observeBackup(res.Manifest)
	r.log.Info("backup complete", "id", res.Manifest.ID, "shards", len(res.Manifest.Shards),
		"bytes", res.Manifest.Size(), "targets", len(r.cfg.Targets), "duration", res.Duration)

	cat, err := r.list(ctx)
	if err == nil {
		res.Pruned, err = r.prune(ctx, cat)
	}
	if err != nil {
		// The backup itself is complete; cleaning up is retried next run.
		r.log.Warn("backup retention", "err", err)
	}
	return res, nil
}

func (r *Runner) backup(ctx context.Context, now time.Time) (*BackupResult, error) {
	if r.cfg.Cluster == nil {
		return nil, errors.New("backup: no cluster to back up")
	}
	rcptStr, err := r.cfg.Cluster.BackupRecipient(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	rcpt, err := ParseRecipient(rcptStr)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	clusterID, err := r.cfg.Cluster.ClusterID(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	work, err := os.MkdirTemp(r.cfg.TempDir, "backup-")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(work)

	man := &Manifest{
		Format: FormatVersion, ID: newID(now), ClusterID: clusterID, NodeID: r.cfg.NodeID,
		Created: now.UTC(), KeyID: KeyID(rcptStr), Encryption: encryptionV1, Compression: compressV1,
	}
	if ks := r.cfg.KeyStore; ks != nil {
		man.KeyStore = &KeyStoreRef{Shard: ks.Shard, Prefix: ks.Prefix}
	}
	for _, n := range r.cfg.Cluster.BackupShards() {
		entry, err := r.snapshotShard(ctx, n, rcpt, filepath.Join(work, shardObject(n)), work)
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", man.ID, err)
		}
		man.Shards = append(man.Shards, entry)
	}
	for _, name := range r.cfg.Files {
		entry, err := r.encryptFile(name, rcpt, filepath.Join(work, fileObject(name)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", man.ID, err)
		}
		man.Files = append(man.Files, entry)
	}
	if r.cfg.KeyStore != nil {
		// Before the manifest: a complete backup always finds a key store.
		if _, err := r.writeKeyStore(ctx, rcptStr, clusterID, work); err != nil {
			return nil, fmt.Errorf("backup %s: %w", man.ID, err)
		}
	}
	if r.cfg.ManifestKey != nil {
		man.MAC = man.computeMAC(*r.cfg.ManifestKey)
	}
	body, err := man.encode()
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", man.ID, err)
	}
	if err := r.upload(ctx, man, body, work); err != nil {
		return nil, fmt.Errorf("backup %s: %w", man.ID, err)
	}
	return &BackupResult{Manifest: man}, nil
}

// sealTo runs fill with a writer whose bytes are compressed with zstd and
// encrypted with age into a new file at path, and returns the encrypted
// size and SHA-256: nothing unencrypted touches the disk.
func sealTo(path string, rcpt age.Recipient, fill func(io.Writer) error) (int64, string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	aw, err := age.Encrypt(cw, rcpt)
	if err != nil {
		return 0, "", fmt.Errorf("encrypt: %w", err)
	}
	zw, err := zstd.NewWriter(aw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0, "", fmt.Errorf("compress: %w", err)
	}
	if err := fill(zw); err != nil {
		zw.Close()
		return 0, "", err
	}
	if err := zw.Close(); err != nil {
		return 0, "", fmt.Errorf("compress: %w", err)
	}
	if err := aw.Close(); err != nil {
		return 0, "", fmt.Errorf("encrypt: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, "", err
	}
	return cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

// snapshotShard streams a consistent copy of the shard, sealed, into path.
// The shard holding the key store goes through a copy in work without
// it (its bytes are the sealed records the replica's own file holds).
func (r *Runner) snapshotShard(ctx context.Context, n uint32, rcpt age.Recipient, path, work string) (ShardEntry, error) {
	entry := ShardEntry{Shard: n, Object: shardObject(n)}
	if err := ctx.Err(); err != nil {
		return entry, err
	}
	task := progressFor(ctx, r.cfg.Progress).Start(fmt.Sprintf("snapshot shard %d", n), 0)
	var info raftstore.StateInfo
	size, sum, err := sealTo(path, rcpt, func(w io.Writer) error {
		var err error
		pw := &progressWriter{ctx: ctx, w: w, t: task}
		if ks := r.cfg.KeyStore; ks == nil || ks.Shard != n {
			info, err = r.cfg.Cluster.WriteShardState(ctx, n, pw)
			return err
		}
		var state string
		if state, info, err = r.stateWithoutKeyStore(ctx, n, work); err != nil {
			return err
		}
		defer os.Remove(state)
		f, err := os.Open(state)
		if err != nil {
			return err
		}
		defer f.Close()
		info.Size, err = io.Copy(pw, f) // the file, which bbolt grows past its data
		return err
	})
	task.Finish()
	if err != nil {
		return entry, fmt.Errorf("shard %d: %w", n, err)
	}
	entry.Index, entry.Term, entry.StateSize = info.Index, info.Term, info.Size
	entry.Counts = countsOf(info.Stats)
	entry.Size, entry.SHA256 = size, sum
	return entry, nil
}

// encryptFile seals a file of the data directory into path.
func (r *Runner) encryptFile(name string, rcpt age.Recipient, path string) (FileEntry, error) {
	entry := FileEntry{Name: name, Object: fileObject(name)}
	b, err := readLimited(filepath.Join(r.cfg.DataDir, name), maxDataFile)
	if err != nil {
		return entry, err
	}
	entry.FileSize = int64(len(b))
	entry.Size, entry.SHA256, err = sealTo(path, rcpt, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	if err != nil {
		return entry, fmt.Errorf("file %s: %w", name, err)
	}
	return entry, nil
}

func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// upload sends every shard object and then the manifest to every target,
// the targets in parallel. If any target fails, the backup is removed
// from all of them (manifest first), best effort.
func (r *Runner) upload(ctx context.Context, man *Manifest, body []byte, work string) error {
	total := (man.Size() + int64(len(body))) * int64(len(r.cfg.Targets))
	task := progressFor(ctx, r.cfg.Progress).Start("upload "+man.ID, total)
	defer task.Finish()
	errs := make([]error, len(r.cfg.Targets))
	var wg sync.WaitGroup
	for i, t := range r.cfg.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.uploadTo(ctx, t, man, body, work, task)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("target %s: %w", t.Region(), errs[i])
			}
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil {
		return nil
	}
	// Use a fresh context: the run's may be what ended.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	for _, t := range r.cfg.Targets {
		if derr := deleteFrom(cctx, t, man.ID, nil); derr != nil {
			r.log.Warn("remove partial backup; the next run retries", "id", man.ID, "target", t.Region(), "err", derr)
		}
	}
	return err
}

func (r *Runner) uploadTo(ctx context.Context, t Target, man *Manifest, body []byte, work string, task *Task) error {
	type object struct {
		name string
		size int64
	}
	var objects []object
	for _, s := range man.Shards {
		objects = append(objects, object{s.Object, s.Size})
	}
	for _, f := range man.Files {
		objects = append(objects, object{f.Object, f.Size})
	}
	for _, o := range objects {
		f, err := os.Open(filepath.Join(work, o.name))
		if err != nil {
			return err
		}
		err = t.Put(ctx, objectKey(man.ID, o.name), task.Reader(f), o.size)
		f.Close()
		if err != nil {
			return err
		}
	}
	return t.Put(ctx, objectKey(man.ID, manifestName), task.Reader(bytes.NewReader(body)), int64(len(body)))
}

// deleteFrom removes a backup's objects from one target, the manifest
// first so the backup stops counting as complete before anything else
// goes. keys lists the backup's objects there; nil means list them.
func deleteFrom(ctx context.Context, t Target, id string, keys []string) error {
	if keys == nil {
		objs, err := t.List(ctx, id+"/")
		if err != nil {
			return err
		}
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
	}
	if err := t.Delete(ctx, objectKey(id, manifestName)); err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		if k == objectKey(id, manifestName) {
			continue
		}
		errs = append(errs, t.Delete(ctx, k))
	}
	return errors.Join(errs...)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progressWriter reports bytes written and stops a copy once ctx ends.
type progressWriter struct {
	ctx context.Context
	w   io.Writer
	t   *Task
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.w.Write(b)
	p.t.Add(int64(n))
	return n, err
}
