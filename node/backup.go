package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/backup"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
)

// Names of backup files in the data directory.
const (
	backupIdentityName = "backup.identity"
	backupTempName     = "backup-tmp"
)

// backupFiles are the data-directory files a backup carries besides the
// shards: the node state (node id, shard count, master-key check) and
// the passphrase salt, so a restored directory starts as it was. Never
// the master key: restoring needs it separately.
func backupFiles() []string { return []string{stateFileName, saltFileName} }

// backupService is the node's backup runner and scheduler; nil fields
// mean backups are not configured.
type backupService struct {
	runner *backup.Runner
	sched  *backup.Scheduler
	// drillIdentity loads the identity drills decrypt with; nil, nil
	// when none is available.
	drillIdentity func() (*backup.Identity, error)
}

// startBackup makes sure the cluster has a backup public key (creating a
// key pair when the data directory is new) and a cluster id, then starts
// the backup scheduler if targets are configured.
func (n *Node) startBackup(ctx context.Context) error {
	log := n.log.With("component", "backup")
	if err := n.ensureBackupKey(ctx, log); err != nil {
		return err
	}
	if _, err := n.directory.ClusterID(ctx); err != nil {
		return err
	}
	bc := n.cfg.Backup
	svc := &backupService{drillIdentity: n.drillIdentity}
	n.backups = svc
	if len(bc.Targets) == 0 {
		log.Info("no backup targets configured; scheduled backups are off")
		return nil
	}
	if len(bc.Targets) < 2 {
		log.Warn("only one backup target is configured; configure targets in two or more regions")
	}
	targets, err := backup.OpenTargets(bc.Targets)
	if err != nil {
		return err
	}
	tmp := bc.TempDir
	if tmp == "" {
		tmp = filepath.Join(n.cfg.DataDir, backupTempName)
	}
	if err := prepareBackupTemp(tmp); err != nil {
		return err
	}
	svc.runner, err = backup.New(backup.Config{
		Targets:    targets,
		Cluster:    backupCluster{n.cluster, n.directory},
		NodeID:     n.cfg.NodeID,
		TempDir:    tmp,
		DataDir:    n.cfg.DataDir,
		Files:      backupFiles(),
		Retention:  bc.Retention,
		DrillCheck: checkRestoredDir,
		Logger:     n.log,
		Registry:   n.metrics.reg,
		// The key store stays out of the backups' history, so deleting a
		// user reaches them (cluster/backup/keystore.go).
		KeyStore: &backup.KeyStore{Shard: directory.MetaShard, Prefix: directory.KeyStorePrefix, Read: n.directory.KeyStore},
	})
	if err != nil {
		return err
	}
	schedule := bc.schedule()
	schedule.Identity = n.drillIdentity
	// One node at a time takes the cluster's backups: the meta leader.
	schedule.Active = n.cluster.LeadsMeta
	if svc.sched, err = svc.runner.StartScheduler(schedule); err != nil {
		return err
	}
	regions := make([]string, len(targets))
	for i, t := range targets {
		regions[i] = t.Region()
	}
	log.Info("backups scheduled", "targets", strings.Join(regions, ","), "every", durationOr(bc.Every, 24*time.Hour),
		"drill_every", durationOr(bc.DrillEvery, 7*24*time.Hour))
	return nil
}

// backupCluster is what a backup needs: every shard's state (package
// cluster) and the cluster's backup settings (package directory).
type backupCluster struct {
	*cluster.Cluster
	dir *directory.Directory
}

// ClusterID returns the cluster's id (the directory keeps it).
func (b backupCluster) ClusterID(ctx context.Context) (string, error) { return b.dir.ClusterID(ctx) }

// BackupRecipient returns the public key backups are encrypted to.
func (b backupCluster) BackupRecipient(ctx context.Context) (string, error) {
	return b.dir.BackupRecipient(ctx)
}

// BackupManifestKey returns the key that authenticates manifests.
func (b backupCluster) BackupManifestKey() [32]byte { return b.dir.BackupManifestKey() }

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// prepareBackupTemp creates the temporary directory (0700) and removes
// what a crashed run left in it: only encrypted copies and checked state
// files ever live there.
func prepareBackupTemp(dir string) error {
	if err := os.MkdirAll(dir, dataDirPerm); err != nil {
		return fmt.Errorf("backup temp dir: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("backup temp dir: %w", err)
	}
	for _, e := range entries {
		for _, p := range []string{"backup-", "check-", "drill-"} {
			if strings.HasPrefix(e.Name(), p) {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					return fmt.Errorf("backup temp dir: %w", err)
				}
			}
		}
	}
	return nil
}

// stopBackup stops the scheduler, cancelling a run in progress.
func (n *Node) stopBackup() {
	if n.backups != nil && n.backups.sched != nil {
		n.backups.sched.Close()
	}
}

// ensureBackupKey records the backup public key in the cluster: the one
// the config names, or else, when the cluster has none yet (a new data
// directory), a new hybrid post-quantum key pair whose identity is
// written to DataDir/backup.identity (0600) for the operator to move
// offline. The node logs that request once, when it writes the file.
func (n *Node) ensureBackupKey(ctx context.Context, log *slog.Logger) error {
	current, err := n.directory.BackupRecipient(ctx)
	if err != nil {
		return err
	}
	if want := strings.TrimSpace(n.cfg.Backup.Recipient); want != "" {
		if want == current {
			return nil
		}
		if err := n.directory.SetBackupRecipient(ctx, want); err != nil {
			return err
		}
		if current != "" {
			log.Warn("backup public key changed: new backups use the configured key; older ones still need the old identity",
				"old_key_id", backup.KeyID(current), "key_id", backup.KeyID(want))
		} else {
			log.Info("backup public key set from the config", "key_id", backup.KeyID(want))
		}
		return nil
	}
	if current != "" {
		if _, err := backup.ParseRecipient(current); err != nil {
			return fmt.Errorf("the cluster's backup public key: %w", err)
		}
		return nil
	}
	path := filepath.Join(n.cfg.DataDir, backupIdentityName)
	id, err := backup.LoadIdentity(path)
	var rcpt string
	switch {
	case err == nil:
		// An earlier start wrote the file but did not get to record
		// the public key.
		if rcpt = id.Recipient(); rcpt == "" {
			return fmt.Errorf("%s holds no hybrid post-quantum identity", path)
		}
	case errors.Is(err, fs.ErrNotExist):
		id, rcpt, err = backup.GenerateKey()
		if err != nil {
			return err
		}
		if err := backup.WriteIdentityFile(path, id, rcpt, n.now()); err != nil {
			return err
		}
	default:
		return err
	}
	set, err := n.directory.InitBackupRecipient(ctx, rcpt)
	if err != nil {
		return err
	}
	if !set {
		// Another node recorded its key first: this identity opens
		// nothing, so it must not be mistaken for the cluster's.
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove an unused backup identity: %w", err)
		}
		log.Info("the cluster already has a backup key; this node uses it")
		return nil
	}
	log.Warn("backup key pair created: MOVE THE IDENTITY FILE OFFLINE NOW. It is the only key that decrypts this cluster's backups (restores need it); the cluster keeps only the public key.",
		"identity_file", path, "key_id", backup.KeyID(rcpt))
	return nil
}

// drillIdentity is the identity restore drills decrypt with: the
// configured file, or DataDir/backup.identity while it has not been
// moved offline; nil when there is none.
func (n *Node) drillIdentity() (*backup.Identity, error) {
	if p := n.cfg.Backup.DrillIdentityFile; p != "" {
		return backup.LoadIdentity(p)
	}
	id, err := backup.LoadIdentity(filepath.Join(n.cfg.DataDir, backupIdentityName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return id, err
}

// checkRestoredDir is the drill's last step: every restored replica must
// start as a Raft group, elect itself and hold the restored state, and
// the node state must name the node, as when `serve` opens a restored
// directory.
func checkRestoredDir(ctx context.Context, dir, nodeID string) error {
	st := &dataDir{path: dir}
	ok, err := st.readState()
	if err != nil {
		return err
	}
	if !ok || st.state.NodeID != nodeID {
		return fmt.Errorf("restored %s is missing or names another node", stateFileName)
	}
	shards, err := raftstore.Replicas(dir)
	if err != nil {
		return err
	}
	if len(shards) != st.state.MailShards+1 {
		return fmt.Errorf("restored %d shards, the node state says %d mail shards and meta", len(shards), st.state.MailShards)
	}
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, n := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = openRestoredShard(ctx, n, raftstore.ReplicaDir(dir, n), nodeID)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func openRestoredShard(ctx context.Context, n uint32, dir, nodeID string) error {
	s, err := raftstore.Open(raftstore.Config{Shard: n, Dir: dir, NodeID: nodeID, Bootstrap: true,
		Timing: raftstore.Timing{HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond}})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.WaitForLeader(ctx); err != nil {
		return err
	}
	var applied uint64
	if err := s.View(func(r *raftstore.Reader) error { applied = r.AppliedIndex(); return nil }); err != nil {
		return err
	}
	if applied == 0 {
		return fmt.Errorf("restored shard %d holds no state", n)
	}
	return nil
}

// backupDetails describes backups for /readyz: the last run's error and
// the last drill. A failed drill or backup shows here but does not make
// the node unready: it still serves mail.
func (n *Node) backupDetails() string {
	if n.backups == nil || n.backups.runner == nil {
		return ""
	}
	s := n.backups.runner.Status()
	var b strings.Builder
	if s.LastSuccess.IsZero() {
		b.WriteString("backup: no complete backup yet\n")
	} else {
		fmt.Fprintf(&b, "backup: last complete %s (%s ago)\n", s.LastSuccess.UTC().Format(time.RFC3339), n.now().Sub(s.LastSuccess).Round(time.Second))
	}
	if s.LastBackupError != "" {
		fmt.Fprintf(&b, "backup: last run FAILED: %s\n", s.LastBackupError)
	}
	switch d := s.LastDrill; {
	case d == nil:
		b.WriteString("backup drill: none yet\n")
	case d.OK:
		fmt.Fprintf(&b, "backup drill: ok at %s, rto %.1fs, rpo %.0fs\n", d.Time.UTC().Format(time.RFC3339), d.RestoreSeconds, d.BackupAgeSeconds)
	default:
		fmt.Fprintf(&b, "backup drill: FAILED at %s: %s\n", d.Time.UTC().Format(time.RFC3339), d.Error)
	}
	return b.String()
}
