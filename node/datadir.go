package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
)

// Names inside the data directory.
const (
	stateFileName  = "node.json"
	lockFileName   = "node.lock"
	masterKeyName  = "master.key"
	saltFileName   = "master.salt"
	tlsDirName     = "tls"
	certFileName   = "cert.pem"
	keyFileName    = "key.pem"
	adminSockName  = "admin.sock"
	clusterDirName = "cluster"    // the node's cluster identity (package cluster)
	lostFoundName  = "lost+found" // a file system's root, e.g. a mounted volume
	stateFormat    = 1
	maxStateSize   = 64 << 10
	dataDirPerm    = 0o700
	secretFilePerm = 0o600
)

// ErrDataDirInUse means another process holds the data directory's lock.
var ErrDataDirInUse = errors.New("in use by another process (is a node already serving it?)")

// nodeState is DataDir/node.json, written once when the data directory is
// initialized. Its presence marks a completed init.
type nodeState struct {
	Format     int       `json:"format"`
	NodeID     string    `json:"node_id"`
	MailShards int       `json:"mail_shards"`
	Created    time.Time `json:"created"`
	// KeySource is "file" or "passphrase"; KeyCheck is a MAC of a fixed
	// string under the master key, which tells a wrong key from a
	// corrupt store without revealing the key.
	KeySource string `json:"key_source"`
	KeyCheck  string `json:"key_check"`
}

// dataDir is an opened, locked data directory with the node's secrets
// loaded.
type dataDir struct {
	path  string
	lock  *os.File
	state nodeState
	// created is true when this start initialized the directory.
	created   bool
	masterKey [32]byte
	tls       tlsMaterial
}

// openDataDir creates and initializes cfg.DataDir on the first start, or
// opens and checks it on later ones: lock, master key, TLS certificate,
// state file (written last, so an interrupted init is resumed).
func openDataDir(ctx context.Context, cfg Config, version string, log *slog.Logger, now time.Time) (_ *dataDir, err error) {
	d := &dataDir{path: cfg.DataDir}
	if err := ensureDir(d.path, log); err != nil {
		return nil, err
	}
	lock, err := lockFile(filepath.Join(d.path, lockFileName))
	if err != nil {
		if errors.Is(err, ErrDataDirInUse) {
			return nil, fmt.Errorf("data directory %s: %w", d.path, err)
		}
		return nil, err
	}
	d.lock = lock
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	exists, err := d.readState()
	if err != nil {
		return nil, err
	}
	if !exists {
		if err := checkInitializable(d.path); err != nil {
			return nil, err
		}
		d.created = true
		d.state = nodeState{Format: stateFormat, NodeID: cfg.NodeID, MailShards: cfg.MailShards, Created: now.UTC()}
		log.Info("initializing data directory", "dir", d.path, "mail_shards", cfg.MailShards)
	} else if cfg.Cluster.Join != "" {
		log.Info("the data directory already belongs to a cluster; --join is ignored")
	}

	var source string
	var key [masterKeySize]byte
	if d.created && cfg.Cluster.Join != "" && !cluster.HasIdentity(d.path) {
		if source, key, d.state.MailShards, err = joinCluster(ctx, cfg, version, log); err != nil {
			return nil, err
		}
	} else if source, key, err = loadMasterKey(cfg, d.created, log); err != nil {
		return nil, err
	}
	d.masterKey = key
	check := keyCheck(key)
	if d.created {
		d.state.KeySource, d.state.KeyCheck = source, check
	} else if err := d.checkState(cfg, source, check, log); err != nil {
		return nil, err
	}

	if d.tls, err = loadTLS(cfg, log, now); err != nil {
		return nil, err
	}

	if d.created {
		b, err := json.MarshalIndent(d.state, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode node state: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(d.path, stateFileName), append(b, '\n'), secretFilePerm); err != nil {
			return nil, fmt.Errorf("write node state: %w", err)
		}
	}
	return d, nil
}

// ensureDir creates dir with mode 0700, or tightens an existing one.
func ensureDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, dataDirPerm); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s: not a directory", dir)
	}
	if fi.Mode().Perm() != dataDirPerm {
		if err := os.Chmod(dir, dataDirPerm); err != nil {
			return fmt.Errorf("data directory %s: set mode 0700: %w", dir, err)
		}
		log.Warn("data directory mode changed to 0700", "dir", dir, "was", fi.Mode().Perm().String())
	}
	return nil
}

// readState loads node.json; it reports false when there is none yet.
func (d *dataDir) readState() (bool, error) {
	f, err := os.Open(filepath.Join(d.path, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read node state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return false, fmt.Errorf("read node state: %w", err)
	}
	if len(b) > maxStateSize {
		return false, fmt.Errorf("node state %s: larger than %d bytes", f.Name(), maxStateSize)
	}
	if err := json.Unmarshal(b, &d.state); err != nil {
		return false, fmt.Errorf("node state %s: %w", f.Name(), err)
	}
	if d.state.Format < 1 || d.state.Format > stateFormat {
		return false, fmt.Errorf("node state %s: format %d is not supported by this mailnode (want %d)", f.Name(), d.state.Format, stateFormat)
	}
	return true, nil
}

// checkInitializable refuses to initialize a directory that holds
// anything but what an interrupted init may have left behind, so a
// mistyped --data cannot scatter files into an unrelated directory.
func checkInitializable(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	for _, e := range entries {
		switch e.Name() {
		case lockFileName, masterKeyName, saltFileName, tlsDirName, adminSockName, lostFoundName, clusterDirName:
		default:
			return fmt.Errorf("data directory %s has no %s but is not empty (found %q): refusing to initialize it", dir, stateFileName, e.Name())
		}
	}
	return nil
}

// checkState compares a recorded state with this start's config and key.
func (d *dataDir) checkState(cfg Config, source, check string, log *slog.Logger) error {
	if d.state.NodeID != cfg.NodeID {
		return fmt.Errorf("data directory %s belongs to node %q, but node_id is %q: the node id cannot change", d.path, d.state.NodeID, cfg.NodeID)
	}
	if d.state.KeyCheck != check {
		return fmt.Errorf("master key (%s) does not match the key data directory %s was initialized with (%s): refusing to start", source, d.path, d.state.KeySource)
	}
	if d.state.MailShards != cfg.MailShards {
		log.Warn("mail_shards is fixed when the data directory is initialized; the configured value is ignored",
			"configured", cfg.MailShards, "in_use", d.state.MailShards)
	}
	return nil
}

// Close releases the lock and forgets the master key.
func (d *dataDir) Close() error {
	d.masterKey = [32]byte{}
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}

// writeFileAtomic replaces path with data through a synced temporary file
// and a rename, so a crash leaves the old or the new content.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// writeNewFile creates path with data; it never overwrites an existing
// file, so a key can never be replaced by accident.
func writeNewFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readSmallFile reads a file of at most max bytes.
func readSmallFile(path string, max int64) ([]byte, os.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, 0, err
	}
	if int64(len(b)) > max {
		return nil, 0, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, fi.Mode().Perm(), nil
}

// joinCluster joins the cluster named by cfg.Cluster.Join with its token.
// The node takes the cluster's master key: it is written to the key file
// (or checked against an existing one) before the node's cluster identity,
// so an interrupted join never leaves an identity without its key.
func joinCluster(ctx context.Context, cfg Config, version string, log *slog.Logger) (string, [masterKeySize]byte, int, error) {
	var key [masterKeySize]byte
	if cfg.Keys.PassphraseFile != "" {
		return "", key, 0, errors.New("a joining node takes the cluster's master key: use keys.master_key_file (or none), not a passphrase")
	}
	if cfg.Cluster.Token == "" {
		return "", key, 0, errors.New("joining a cluster needs a join token (--token, from: mailnode cluster token)")
	}
	advertise := cfg.Cluster.Advertise
	if advertise == "" {
		advertise = cfg.Cluster.Listen
	}
	log.Info("joining the cluster", "via", cfg.Cluster.Join, "region", cfg.Cluster.Region)
	res, err := cluster.Join(ctx, cluster.JoinRequest{
		Addr: cfg.Cluster.Join, Token: cfg.Cluster.Token, DataDir: cfg.DataDir, NodeID: cfg.NodeID,
		Region: cfg.Cluster.Region, Advertise: advertise, Version: version,
	})
	if err != nil {
		return "", key, 0, err
	}
	key = res.MasterKey
	path := cfg.masterKeyPath()
	existing, _, err := readSmallFile(path, maxKeyFileSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeNewFile(path, key[:], secretFilePerm); err != nil {
			return "", key, 0, fmt.Errorf("write master key: %w", err)
		}
	case err != nil:
		return "", key, 0, fmt.Errorf("read master key: %w", err)
	default:
		have, err := parseKey(path, existing)
		if err != nil {
			return "", key, 0, err
		}
		if have != key {
			return "", key, 0, fmt.Errorf("master key file %s does not hold the cluster's master key", path)
		}
	}
	if err := cluster.WriteIdentity(cfg.DataDir, res); err != nil {
		return "", key, 0, fmt.Errorf("store cluster identity: %w", err)
	}
	log.Info("joined the cluster", "cluster", res.ClusterID, "mail_shards", res.MailShards)
	return keySourceFile, key, res.MailShards, nil
}
