package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/mailcluster/mailcluster/raftstore"
)

// RestoreInfoFile is written into a restored data directory: which backup
// it came from, for the operator and the node.
const RestoreInfoFile = "restored-from.json"

// checkOptions say how much of a backup to check.
type checkOptions struct {
	identity *Identity
	// allCopies downloads and hashes the copy on every target holding the
	// backup; otherwise the first good copy of each shard is enough.
	allCopies bool
	// installDir, if set, receives each shard as a fresh replica under
	// installDir/shards/<n>.
	installDir string
	nodeID     string
	label      string
}

// checkResult is what checking found.
type checkResult struct {
	// problems are every copy that failed a check; with allCopies each
	// one fails a verify.
	problems []error
	// missing are shards without a single good copy.
	missing []uint32
	// missingFiles are data-directory files without a good copy.
	missingFiles []string
	// sources maps shard to the region its good copy came from.
	sources map[uint32]string
	regions []string // regions whose copies were examined
}

func (c *checkResult) err() error {
	return errors.Join(c.problems...)
}

// check downloads the backup's objects, checks size and SHA-256 against
// the manifest, decrypts and decompresses one good copy of each shard,
// runs bbolt's consistency check on it and compares its index, term and
// counts with the manifest.
func (r *Runner) check(ctx context.Context, b *BackupInfo, opt checkOptions) (*checkResult, error) {
	man := b.Manifest
	if opt.identity == nil {
		return nil, errors.New("no backup identity given")
	}
	if !opt.identity.matches(man.KeyID) {
		return nil, fmt.Errorf("backup %s is encrypted to key id %s, the identity holds key id %v: %w",
			b.ID, man.KeyID, opt.identity.KeyIDs(), ErrWrongIdentity)
	}
	work, err := os.MkdirTemp(r.cfg.TempDir, "check-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	res := &checkResult{sources: map[uint32]string{}}
	var holders []Target
	for i, c := range b.Copies {
		if c.Manifest {
			t := r.cfg.Targets[i]
			holders = append(holders, t)
			res.regions = append(res.regions, t.Region())
			if opt.allCopies {
				if err := sameManifest(ctx, t, b, r.cfg.ManifestKey); err != nil {
					res.problems = append(res.problems, fmt.Errorf("target %s: %w", t.Region(), err))
				}
			}
		}
	}
	var total int64
	for _, s := range man.Shards {
		n := int64(1)
		if opt.allCopies {
			n = int64(len(holders))
		}
		total += s.Size * n
	}
	for _, f := range man.Files {
		total += f.Size
	}
	task := progressFor(ctx, r.cfg.Progress).Start(opt.label+" "+b.ID, total)
	defer task.Finish()

	var ks *keyStoreFile
	if man.KeyStore != nil {
		if ks, err = r.loadKeyStore(ctx, holders, man, opt.identity); err != nil {
			if errors.Is(err, ErrWrongIdentity) || opt.installDir != "" {
				return nil, err
			}
			res.problems = append(res.problems, err)
		}
	}

	for _, s := range man.Shards {
		key := objectKey(b.ID, s.Object)
		state := filepath.Join(work, "shard-"+strconv.FormatUint(uint64(s.Shard), 10)+".db")
		good := false
		for _, t := range holders {
			if good && !opt.allCopies {
				break
			}
			enc := filepath.Join(work, t.Region()+"-"+s.Object)
			err := download(ctx, t, key, enc, s.Size, s.SHA256, task)
			if err == nil && !good {
				err = decryptShard(enc, state, s, opt.identity)
				if errors.Is(err, ErrWrongIdentity) {
					return nil, fmt.Errorf("target %s: object %s: %w", t.Region(), key, err)
				}
				if err == nil {
					good = true
					res.sources[s.Shard] = t.Region()
				}
			}
			os.Remove(enc)
			if err != nil {
				res.problems = append(res.problems, fmt.Errorf("target %s: object %s: %w", t.Region(), key, err))
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if !good {
			res.missing = append(res.missing, s.Shard)
			continue
		}
		if opt.installDir != "" && ks != nil && s.Shard == man.KeyStore.Shard {
			// The current key store, not the one of the backup's time: a
			// key destroyed since stays destroyed.
			if err := raftstore.PutStateSettings(state, ks.Entries); err != nil {
				return nil, fmt.Errorf("shard %d: put the key store back: %w", s.Shard, err)
			}
		}
		if opt.installDir != "" {
			dir := raftstore.ReplicaDir(opt.installDir, s.Shard)
			if _, err := raftstore.InstallState(dir, state, opt.nodeID); err != nil {
				return nil, fmt.Errorf("install shard %d: %w", s.Shard, err)
			}
		}
		os.Remove(state)
	}
	for _, f := range man.Files {
		key := objectKey(b.ID, f.Object)
		var data []byte
		for _, t := range holders {
			if data != nil && !opt.allCopies {
				break
			}
			enc := filepath.Join(work, t.Region()+"-"+f.Object)
			err := download(ctx, t, key, enc, f.Size, f.SHA256, task)
			if err == nil && data == nil {
				data, err = decryptFile(enc, f, opt.identity)
				if errors.Is(err, ErrWrongIdentity) {
					return nil, fmt.Errorf("target %s: object %s: %w", t.Region(), key, err)
				}
			}
			os.Remove(enc)
			if err != nil {
				res.problems = append(res.problems, fmt.Errorf("target %s: object %s: %w", t.Region(), key, err))
			}
		}
		if data == nil {
			res.missingFiles = append(res.missingFiles, f.Name)
			continue
		}
		if opt.installDir != "" {
			if err := os.WriteFile(filepath.Join(opt.installDir, f.Name), data, 0o600); err != nil {
				return nil, fmt.Errorf("restore file %s: %w", f.Name, err)
			}
		}
	}
	return res, nil
}

// openSealed opens an encrypted object and returns a reader of its
// plaintext.
func openSealed(in io.Reader, id *Identity) (*zstd.Decoder, error) {
	ar, err := age.Decrypt(in, id.ids...)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return nil, ErrWrongIdentity
		}
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	zr, err := zstd.NewReader(ar, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	return zr, nil
}

// decryptFile decrypts a data-directory file and checks its size.
func decryptFile(enc string, f FileEntry, id *Identity) ([]byte, error) {
	in, err := os.Open(enc)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	zr, err := openSealed(in, id)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	b, err := io.ReadAll(io.LimitReader(zr, f.FileSize+1))
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	if int64(len(b)) != f.FileSize {
		return nil, fmt.Errorf("decrypted file is %d bytes, the manifest says %d", len(b), f.FileSize)
	}
	return b, nil
}

// sameManifest checks that a target's manifest is byte-identical to the
// one the catalog read.
func sameManifest(ctx context.Context, t Target, b *BackupInfo, key *[32]byte) error {
	_, raw, err := readManifest(ctx, t, b.ID, key)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if !bytes.Equal(raw, b.rawManifest) {
		return errors.New("manifest differs from the other targets' copy")
	}
	return nil
}

// download copies an object to path (still encrypted) and checks its size
// and SHA-256 against the manifest.
func download(ctx context.Context, t Target, key, path string, size int64, sum string, task *Task) error {
	rc, err := t.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), task.Reader(ctxReader{ctx, io.LimitReader(rc, size+1)}))
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if n != size {
		return fmt.Errorf("size %d bytes, the manifest says %d: the object was truncated or altered", n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("sha256 mismatch: the object was altered or damaged (got %s, manifest %s)", got[:16], sum[:16])
	}
	return f.Close()
}

// decryptShard decrypts and decompresses an object into a state file and
// checks it against its manifest entry.
func decryptShard(enc, state string, s ShardEntry, id *Identity) error {
	in, err := os.Open(enc)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := openSealed(in, id)
	if err != nil {
		return err
	}
	defer zr.Close()
	out, err := os.OpenFile(state, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	// The manifest bounds the output, so a hostile object cannot fill the
	// disk.
	n, err := io.Copy(out, io.LimitReader(zr, s.StateSize+1))
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	if n != s.StateSize {
		return fmt.Errorf("decrypted state is %d bytes, the manifest says %d", n, s.StateSize)
	}
	if err := out.Close(); err != nil {
		return err
	}
	info, err := raftstore.InspectStateFile(state)
	if err != nil {
		return fmt.Errorf("consistency check: %w", err)
	}
	if info.Index != s.Index || info.Term != s.Term {
		return fmt.Errorf("state is at raft index %d term %d, the manifest says %d/%d", info.Index, info.Term, s.Index, s.Term)
	}
	if got := countsOf(info.Stats); got != s.Counts {
		return fmt.Errorf("record counts %+v differ from the manifest's %+v", got, s.Counts)
	}
	return nil
}

// pick returns the backup named id, or the newest complete one for "".
// With anyRegion, and a target unreachable, "" falls back to the newest
// backup that every reachable target holds: in a disaster a region may be
// gone, and each copy with a manifest is whole.
func (r *Runner) pick(ctx context.Context, id string, anyRegion bool) (*BackupInfo, *Catalog, error) {
	if id != "" && !ValidID(id) {
		return nil, nil, fmt.Errorf("%q is not a backup id", id)
	}
	cat, err := r.list(ctx)
	if err != nil {
		return nil, nil, err
	}
	var b *BackupInfo
	if id == "" {
		b = cat.Latest()
		if b == nil && anyRegion && len(cat.Unreachable) > 0 {
			reachable := len(r.cfg.Targets) - len(cat.Unreachable)
			for _, c := range cat.Backups {
				if c.Manifest != nil && len(c.Regions()) == reachable {
					b = c
					r.log.Warn("a target is unreachable; using the newest backup the others hold", "id", c.ID, "unreachable", cat.Unreachable[0].Region)
					break
				}
			}
		}
		if b == nil {
			for _, c := range cat.Backups {
				if strings.Contains(c.Problem, errNotAuthentic.Error()) {
					return nil, cat, fmt.Errorf("no complete backup found: backup %s has a manifest that does not authenticate under this master key (is it the cluster's?)", c.ID)
				}
			}
			return nil, cat, errors.New("no complete backup found")
		}
	} else if b = cat.Find(id); b == nil {
		return nil, cat, fmt.Errorf("backup %s not found on any reachable target", id)
	}
	if b.Manifest == nil {
		return nil, cat, fmt.Errorf("backup %s has no readable manifest (partial on %v) %s", b.ID, b.Partial(), b.Problem)
	}
	return b, cat, nil
}

// Verify downloads every copy of a backup (the newest complete one for
// id ""), checks sizes and SHA-256 against the manifest, decrypts each
// shard, runs bbolt's consistency check and compares counts with the
// manifest. The outcome is recorded beside the manifest on every target.
func (r *Runner) Verify(ctx context.Context, id string, identity *Identity) (*Verification, error) {
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	b, _, err := r.pick(ctx, id, false)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	v := &Verification{Kind: KindVerify, Time: r.clock.Now().UTC()}
	res, err := r.check(ctx, b, checkOptions{identity: identity, allCopies: true, label: "verify"})
	if err == nil {
		v.Targets = res.regions
		err = res.err()
		if !b.Complete {
			err = errors.Join(err, fmt.Errorf("backup is not complete: partial on %v", b.Partial()))
		}
	}
	r.metrics.verifies.WithLabelValues(result(err)).Inc()
	if err != nil {
		err = fmt.Errorf("verify %s: %w", b.ID, err)
		v.Error = err.Error()
	}
	v.OK = err == nil
	r.record(ctx, b, v)
	return v, err
}

// record stores a verification record beside the manifest on every
// target that holds the backup, best effort.
func (r *Runner) record(ctx context.Context, b *BackupInfo, v *Verification) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return
	}
	name := verifyName
	if v.Kind == KindDrill {
		name = drillName
	}
	for i, c := range b.Copies {
		if !c.Manifest {
			continue
		}
		t := r.cfg.Targets[i]
		if err := t.Put(ctx, objectKey(b.ID, name), bytes.NewReader(body), int64(len(body))); err != nil {
			r.log.Warn("record verification", "id", b.ID, "target", t.Region(), "err", err)
		}
	}
}

// RestoreOptions say what to restore where.
type RestoreOptions struct {
	// ID is the backup; "" means the newest complete one.
	ID string
	// Identity decrypts the backup.
	Identity *Identity
	// Dir is the new data directory. It must not exist or be empty.
	Dir string
	// NodeID is the Raft id of the restored replicas; "" keeps the
	// backed-up node's id.
	NodeID string
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	Manifest *Manifest
	Dir      string
	NodeID   string
	Duration time.Duration
	// Sources maps each shard to the region it was restored from.
	Sources map[uint32]string
	// Problems are copies that failed their checks and were skipped in
	// favour of another region's.
	Problems []error
}

// RestoreInfo is the content of RestoreInfoFile.
type RestoreInfo struct {
	BackupID  string            `json:"backup_id"`
	ClusterID string            `json:"cluster_id"`
	NodeID    string            `json:"node_id"`
	Created   time.Time         `json:"backup_created"`
	Restored  time.Time         `json:"restored"`
	Sources   map[string]string `json:"sources"`
}

// Restore rebuilds a data directory from a backup: each shard is
// downloaded from the first target whose copy passes the size and SHA-256
// checks, decrypted, checked like Verify does, and installed as a fresh
// replica under Dir/shards/<n>. With the cluster's master key, a node
// started on Dir serves the restored mail. On failure Dir is removed if
// Restore created it.
func (r *Runner) Restore(ctx context.Context, opt RestoreOptions) (*RestoreResult, error) {
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	start := r.clock.Now()
	b, _, err := r.pick(ctx, opt.ID, true)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	res, err := r.restore(ctx, b, opt, "restore")
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", b.ID, err)
	}
	res.Duration = r.clock.Now().Sub(start)
	return res, nil
}

func (r *Runner) restore(ctx context.Context, b *BackupInfo, opt RestoreOptions, label string) (res *RestoreResult, err error) {
	if opt.Dir == "" {
		return nil, errors.New("no target directory given")
	}
	if opt.NodeID == "" {
		opt.NodeID = b.Manifest.NodeID
	}
	created, err := prepareDir(opt.Dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		if created {
			os.RemoveAll(opt.Dir)
			return
		}
		// The directory was empty: empty it again.
		entries, _ := os.ReadDir(opt.Dir)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(opt.Dir, e.Name()))
		}
	}()
	cr, err := r.check(ctx, b, checkOptions{identity: opt.Identity, installDir: opt.Dir, nodeID: opt.NodeID, label: label})
	if err != nil {
		return nil, err
	}
	if len(cr.missing) > 0 {
		return nil, fmt.Errorf("no good copy of shards %v on any reachable target: %w", cr.missing, cr.err())
	}
	if len(cr.missingFiles) > 0 {
		return nil, fmt.Errorf("no good copy of files %v on any reachable target: %w", cr.missingFiles, cr.err())
	}
	for _, p := range cr.problems {
		r.log.Warn("restore skipped a bad copy", "id", b.ID, "err", p)
	}
	info := RestoreInfo{BackupID: b.ID, ClusterID: b.Manifest.ClusterID, NodeID: opt.NodeID,
		Created: b.Manifest.Created, Restored: r.clock.Now().UTC(), Sources: map[string]string{}}
	for n, region := range cr.sources {
		info.Sources[strconv.FormatUint(uint64(n), 10)] = region
	}
	body, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(opt.Dir, RestoreInfoFile), body, 0o600); err != nil {
		return nil, err
	}
	return &RestoreResult{Manifest: b.Manifest, Dir: opt.Dir, NodeID: opt.NodeID, Sources: cr.sources, Problems: cr.problems}, nil
}

// prepareDir makes sure dir exists (0700) and is empty; created reports
// whether it had to be made.
func prepareDir(dir string) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, err
		}
		return true, nil
	case err != nil:
		return false, err
	case len(entries) > 0:
		return false, fmt.Errorf("%s is not empty: restore only into a new or empty directory", dir)
	}
	return false, nil
}
