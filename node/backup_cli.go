package node

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailcluster/mailcluster/cluster/backup"
	"github.com/mailcluster/mailcluster/cluster/directory"
)

const backupUsage = `
Backups:
  mailnode backup now     --data DIR
  mailnode backup list    (--data DIR | --config FILE | --backup-target REGION=URL ...)
  mailnode backup verify  [--latest | ID] (--data DIR |
                          --identity FILE (--config FILE | --backup-target REGION=URL ...))
  mailnode backup drill   (--data DIR | --identity FILE (--config FILE | --backup-target ...))
  mailnode backup restore --identity FILE --to NEWDIR [--master-key FILE] [--node-id ID]
                          (--config FILE | --backup-target REGION=URL ...) [ID]

With --data the command asks the node serving DIR (it backs up, and
verifies or drills with its own identity if it still has one). With
--config or --backup-target it works on the targets directly, with no node
running: that is how to restore on a new machine. S3 credentials for
--backup-target come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
`

// backupCommand runs `mailnode backup SUB ...`.
func (c CLI) backupCommand(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: backup needs a subcommand (now, list, verify, drill, restore)", errUsage)
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("backup " + sub)
	data := fs.String("data", "", "data directory of the running node")
	configFile := fs.String("config", "", "config file naming the backup targets")
	var targets repeatedFlag
	fs.Var(&targets, "backup-target", "REGION=URL of a backup target (repeatable)")
	identityFile := fs.String("identity", "", "backup identity file")
	latest := fs.Bool("latest", false, "the newest complete backup")
	to := fs.String("to", "", "new data directory to restore into")
	masterKey := fs.String("master-key", "", "the cluster's master key file, copied into the restored directory")
	nodeID := fs.String("node-id", "", "node id of the restored node (default: the backed-up node's)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	var id string
	switch {
	case len(pos) > 1:
		return fmt.Errorf("%w: backup %s takes at most one backup id", errUsage, sub)
	case len(pos) == 1:
		if *latest {
			return fmt.Errorf("%w: give a backup id or --latest, not both", errUsage)
		}
		id = pos[0]
		if !backup.ValidID(id) {
			return fmt.Errorf("%w: %q is not a backup id (like 20260102T030405.123Z-1a2b3c4d)", errUsage, id)
		}
	}
	local := *configFile != "" || len(targets) > 0
	// Only some flags make sense for each subcommand.
	allowed := map[string][]string{
		"now":     {"data"},
		"list":    {"data", "config", "backup-target"},
		"verify":  {"data", "config", "backup-target", "identity", "latest"},
		"drill":   {"data", "config", "backup-target", "identity"},
		"restore": {"config", "backup-target", "identity", "to", "master-key", "node-id"},
	}
	ok, known := allowed[sub]
	if !known {
		return fmt.Errorf("%w: unknown backup subcommand %q", errUsage, sub)
	}
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		if !slices.Contains(ok, f.Name) {
			flagErr = fmt.Errorf("%w: backup %s does not take --%s", errUsage, sub, f.Name)
		}
	})
	if flagErr != nil {
		return flagErr
	}
	if len(pos) > 0 && sub != "verify" && sub != "restore" {
		return fmt.Errorf("%w: backup %s takes no arguments", errUsage, sub)
	}
	if sub == "now" || (!local && sub != "restore") {
		if *data == "" && sub == "now" {
			return fmt.Errorf("%w: backup now needs --data DIR (the node's data directory)", errUsage)
		}
		if *data == "" {
			return fmt.Errorf("%w: backup %s needs --data DIR (ask the node), or --config FILE / --backup-target (work on the targets directly)", errUsage, sub)
		}
		if *identityFile != "" {
			return fmt.Errorf("%w: --identity works on the targets directly; give --config FILE or --backup-target with it, not --data", errUsage)
		}
		return c.backupViaNode(ctx, sub, *data, id)
	}
	if *data != "" {
		return fmt.Errorf("%w: give --data DIR (ask the node) or --config/--backup-target (work on the targets), not both", errUsage)
	}
	cfg := Default()
	if *configFile != "" {
		if cfg, err = loadConfigFile(*configFile); err != nil {
			return err
		}
	}
	if cfg.Backup.Targets, err = mergeBackupTargets(cfg.Backup.Targets, targets); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if sub == "restore" && *to == "" {
		return fmt.Errorf("%w: backup restore needs --to NEWDIR", errUsage)
	}
	if len(cfg.Backup.Targets) == 0 {
		return fmt.Errorf("%w: no backup targets: the config has no [[backup.targets]] and no --backup-target was given", errUsage)
	}
	var identity *backup.Identity
	if sub != "list" {
		if *identityFile == "" {
			return fmt.Errorf("%w: backup %s needs --identity FILE (the backup identity kept offline)", errUsage, sub)
		}
		if identity, err = backup.LoadIdentity(*identityFile); err != nil {
			return err
		}
	}
	switch sub {
	case "list":
		return c.backupLocal(ctx, cfg, "", func(r *backup.Runner) error {
			cat, err := r.List(ctx)
			if err != nil {
				return err
			}
			return c.printBackupList(listingOf(cat, r.Targets()))
		})
	case "verify":
		return c.backupLocal(ctx, cfg, "", func(r *backup.Runner) error {
			v, err := r.Verify(ctx, id, identity)
			if v != nil && err == nil {
				c.printVerification(v)
			}
			return err
		})
	case "drill":
		return c.backupLocal(ctx, cfg, "", func(r *backup.Runner) error {
			v, err := r.Drill(ctx, identity)
			if v != nil && err == nil {
				c.printVerification(v)
			}
			return err
		})
	default: // restore
		return c.backupRestore(ctx, cfg, restoreArgs{id: id, identity: identity, dir: *to, masterKey: *masterKey, nodeID: *nodeID})
	}
}

// backupViaNode runs a backup subcommand on the node serving dir.
func (c CLI) backupViaNode(ctx context.Context, sub, dir, id string) error {
	client := newBackupClient(dir)
	defer client.close()
	progress := c.progressOut()
	switch sub {
	case "list":
		ctx, cancel := context.WithTimeout(ctx, adminTimeout)
		defer cancel()
		l, err := client.list(ctx)
		if err != nil {
			return err
		}
		return c.printBackupList(l)
	case "now":
		var res backupNowResult
		if err := client.stream(ctx, pathBackupNow, progress, &res); err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "backup %s complete: %d shards, %d messages, %s, in %s, on %s\n", res.ID, res.Shards, res.Messages,
			backup.FormatBytes(res.Size), (time.Duration(res.Seconds * float64(time.Second))).Round(time.Millisecond), strings.Join(res.Regions, ", "))
		for _, p := range res.Pruned {
			fmt.Fprintf(c.Stdout, "deleted by retention: %s\n", p)
		}
		return nil
	default: // verify, drill
		path := pathBackupDrill
		if sub == "verify" {
			path = pathBackupVerify + "?id=" + url.QueryEscape(id)
		}
		var v backup.Verification
		if err := client.stream(ctx, path, progress, &v); err != nil {
			return err
		}
		c.printVerification(&v)
		if !v.OK {
			return errors.New(v.Error)
		}
		return nil
	}
}

// progressOut is where progress goes: stderr when it is a terminal.
func (c CLI) progressOut() io.Writer {
	if backup.NewProgress(c.Stderr) == nil {
		return nil
	}
	return c.Stderr
}

// backupLocal runs fn with a runner over cfg's targets, without a node.
func (c CLI) backupLocal(ctx context.Context, cfg Config, tempDir string, fn func(*backup.Runner) error) error {
	return c.backupLocalKey(ctx, cfg, tempDir, nil, fn)
}

// backupLocalKey is backupLocal with the master key, when the operator
// gave it: then only manifests authenticated under it are trusted.
func (c CLI) backupLocalKey(ctx context.Context, cfg Config, tempDir string, master *[masterKeySize]byte, fn func(*backup.Runner) error) error {
	targets, err := backup.OpenTargets(cfg.Backup.Targets)
	if err != nil {
		return err
	}
	if tempDir == "" {
		tempDir = cfg.Backup.TempDir
	}
	var manifestKey *[32]byte
	if master != nil {
		k := directory.BackupManifestKey(*master)
		manifestKey = &k
	}
	r, err := backup.New(backup.Config{Targets: targets, TempDir: tempDir, Retention: cfg.Backup.Retention,
		DrillCheck: checkRestoredDir, Progress: backup.NewProgress(c.Stderr), ManifestKey: manifestKey})
	if err != nil {
		return err
	}
	return fn(r)
}

func (c CLI) printVerification(v *backup.Verification) {
	state := "ok"
	if !v.OK {
		state = "FAILED: " + v.Error
	}
	fmt.Fprintf(c.Stdout, "%s %s at %s, regions %s\n", v.Kind, state, v.Time.UTC().Format(time.RFC3339), strings.Join(v.Targets, ", "))
	if v.Kind == backup.KindDrill {
		fmt.Fprintf(c.Stdout, "restore time (RTO) %s, backup age (RPO) %s\n", seconds(v.RestoreSeconds), seconds(v.BackupAgeSeconds))
	}
}

func seconds(s float64) time.Duration {
	d := time.Duration(s * float64(time.Second))
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

func (c CLI) printBackupList(l backupListing) error {
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tLOCATION\tCOMPLETE\tPARTIAL\tSTORED")
	for _, t := range l.Targets {
		if err, down := l.Unreachable[t.Region]; down {
			fmt.Fprintf(tw, "%s\t%s\tUNREACHABLE: %s\t\t\n", t.Region, t.Location, err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.Region, t.Location, t.Complete, t.Partial, backup.FormatBytes(t.Bytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.Stdout)
	tw = tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tSHARDS\tMESSAGES\tSIZE\tSTATE\tVERIFIED")
	for _, b := range l.Backups {
		state := "complete on " + strings.Join(b.Regions, ",")
		if !b.Complete {
			state = "PARTIAL"
			if len(b.Regions) > 0 {
				state += ", complete on " + strings.Join(b.Regions, ",")
			}
			if len(b.Partial) > 0 {
				state += ", unfinished on " + strings.Join(b.Partial, ",")
			}
		}
		verified := "-"
		if v := b.Verification; v != nil {
			verified = v.Kind + " ok " + v.Time.UTC().Format("2006-01-02 15:04")
			if !v.OK {
				verified = v.Kind + " FAILED " + v.Time.UTC().Format("2006-01-02 15:04")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", b.ID, b.Created.UTC().Format("2006-01-02 15:04:05Z"), b.Shards, b.Messages,
			backup.FormatBytes(b.Size), state, verified)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(l.Backups) == 0 {
		fmt.Fprintln(c.Stdout, "no backups yet")
	}
	switch d := l.LastDrill; {
	case d == nil:
		fmt.Fprintln(c.Stdout, "last restore drill: none")
	case d.OK:
		fmt.Fprintf(c.Stdout, "last restore drill: ok at %s, RTO %s, RPO %s\n", d.Time.UTC().Format(time.RFC3339), seconds(d.RestoreSeconds), seconds(d.BackupAgeSeconds))
	default:
		fmt.Fprintf(c.Stdout, "last restore drill: FAILED at %s: %s\n", d.Time.UTC().Format(time.RFC3339), d.Error)
	}
	return nil
}

type restoreArgs struct {
	id        string
	identity  *backup.Identity
	dir       string
	masterKey string
	nodeID    string
}

// backupRestore rebuilds a data directory from a backup, with the node
// state, salt and (if given) master key, ready for `mailnode serve`.
func (c CLI) backupRestore(ctx context.Context, cfg Config, a restoreArgs) error {
	if a.nodeID != "" && !nodeIDPattern.MatchString(a.nodeID) {
		return fmt.Errorf("%w: --node-id %q is not a valid node id", errUsage, a.nodeID)
	}
	var key *[masterKeySize]byte
	if a.masterKey != "" {
		b, _, err := readSmallFile(a.masterKey, maxKeyFileSize)
		if err != nil {
			return fmt.Errorf("master key: %w", err)
		}
		k, err := parseKey(a.masterKey, b)
		if err != nil {
			return err
		}
		key = &k
	}
	// Decrypted state files are checked beside the new directory, not
	// in a possibly small /tmp.
	tempDir := cfg.Backup.TempDir
	if tempDir == "" {
		tempDir = filepath.Dir(filepath.Clean(a.dir))
	}
	var res *backup.RestoreResult
	err := c.backupLocalKey(ctx, cfg, tempDir, key, func(r *backup.Runner) error {
		var err error
		res, err = r.Restore(ctx, backup.RestoreOptions{ID: a.id, Identity: a.identity, Dir: a.dir, NodeID: a.nodeID})
		return err
	})
	if err != nil {
		return err
	}
	if err := finishRestoredDir(a.dir, res, key, c.now()); err != nil {
		return fmt.Errorf("restore %s: %w (the shards are restored in %s; fix this and rerun into a new directory)", res.Manifest.ID, err, a.dir)
	}
	m := res.Manifest
	fmt.Fprintf(c.Stdout, "restored backup %s (created %s, %d messages) into %s in %s\n", m.ID, m.Created.UTC().Format(time.RFC3339),
		m.Messages(), a.dir, res.Duration.Round(time.Millisecond))
	for _, p := range res.Problems {
		fmt.Fprintf(c.Stdout, "skipped a bad copy: %v\n", p)
	}
	fmt.Fprintf(c.Stdout, "node id: %s\n", res.NodeID)
	if key == nil {
		fmt.Fprintln(c.Stdout, "manifest authenticity: not checked (give --master-key to check it)")
		fmt.Fprintf(c.Stdout, "next: give the node the cluster's master key (copy it to %s, or set keys.master_key_file or keys.passphrase_file),\n", filepath.Join(a.dir, masterKeyName))
	} else {
		fmt.Fprintln(c.Stdout, "master key: checked and copied in; manifest authenticated with it")
	}
	fmt.Fprintf(c.Stdout, "start it with: mailnode serve --data %s --node-id %s [--config FILE]\n", a.dir, res.NodeID)
	return nil
}

func (c CLI) now() time.Time { return time.Now() }

// finishRestoredDir makes a restored directory one `serve` opens: the
// node state must be there (with the restore's node id), the master
// key, if given, must be the one the state was made with, and is copied
// in.
func finishRestoredDir(dir string, res *backup.RestoreResult, key *[masterKeySize]byte, now time.Time) error {
	d := &dataDir{path: dir}
	exists, err := d.readState()
	if err != nil {
		return err
	}
	if !exists {
		// A backup made outside a node carries no node state; with the
		// key, write what init would have.
		if key == nil {
			return fmt.Errorf("the backup carries no %s: give --master-key FILE to create it", stateFileName)
		}
		d.state = nodeState{Format: stateFormat, NodeID: res.NodeID, MailShards: len(res.Manifest.Shards) - 1,
			Created: now.UTC(), KeySource: keySourceFile, KeyCheck: keyCheck(*key)}
	}
	changed := !exists
	if d.state.NodeID != res.NodeID {
		d.state.NodeID, changed = res.NodeID, true
	}
	if key != nil {
		if d.state.KeySource == keySourcePassphrase {
			return errors.New("this cluster's master key comes from a passphrase: do not give --master-key; set keys.passphrase_file for the restored node")
		}
		if keyCheck(*key) != d.state.KeyCheck {
			return errors.New("the master key given is not the one this cluster's data was encrypted with")
		}
		if err := writeNewFile(filepath.Join(dir, masterKeyName), key[:], secretFilePerm); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("copy master key: %w", err)
		}
	}
	if !changed {
		return nil
	}
	b, err := json.MarshalIndent(d.state, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, stateFileName), append(b, '\n'), secretFilePerm)
}
