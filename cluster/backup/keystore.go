package backup

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/mailcluster/mailcluster/raftstore"
)

// The key store (the per-user key-encryption keys of the directory) is
// kept out of the backups' history so that destroying a key reaches every
// existing backup:
//
//   - the copy of the shard that holds it (the meta shard) leaves its
//     settings out, rebuilt key by key so no deleted page keeps them
//     (raftstore.CopyStateWithout);
//   - each target keeps one copy of the key store, KeyStoreObject at its
//     root, outside every backup directory: replaced by every backup and
//     by SyncKeyStore (which the node calls when a user is deleted), and
//     never listed, kept or pruned as part of a backup;
//   - a restore puts the newest readable copy of the key store back into
//     the restored meta shard (raftstore.PutStateSettings).
//
// A backup taken before a user's deletion still holds the user's record
// and sealed mail, but once the targets' key store is rewritten no copy
// holds the key that opens them. A target with object versioning or an
// object lock would keep old key stores: such targets defeat this and
// must not be used for backups (docs/operations.md).

// KeyStoreObject is the key store's object at the root of every target.
const KeyStoreObject = "keystore.age"

const (
	keyStoreFormat = 1
	// maxKeyStore bounds a decrypted key store (about a hundred bytes an
	// entry: millions of users).
	maxKeyStore = 512 << 20
)

// KeyStore configures how backups keep the key store apart.
type KeyStore struct {
	// Shard is the shard whose settings hold the key store.
	Shard uint32
	// Prefix starts the key store's setting keys.
	Prefix string
	// Read returns the key store's current entries (setting key to value).
	Read func(ctx context.Context) (map[string][]byte, error)
}

// KeyStoreRef is what a manifest records of the key store: the backup's
// copy of Shard lacks the settings under Prefix, which a restore takes
// from the targets' KeyStoreObject.
type KeyStoreRef struct {
	Shard  uint32 `json:"shard"`
	Prefix string `json:"prefix"`
}

// keyStoreFile is the plaintext of KeyStoreObject.
type keyStoreFile struct {
	Format    int               `json:"format"`
	ClusterID string            `json:"cluster_id"`
	Written   time.Time         `json:"written"`
	Prefix    string            `json:"prefix"`
	Entries   map[string][]byte `json:"entries"`
	// MAC authenticates the rest like a manifest's (anyone may encrypt
	// to the backup's public key): HMAC-SHA256 under the manifest key of
	// "keystore\n" and the file encoded with MAC empty.
	MAC string `json:"mac,omitempty"`
}

func (k *keyStoreFile) computeMAC(key [32]byte) string {
	c := *k
	c.MAC = ""
	b, err := json.Marshal(&c)
	if err != nil {
		// Marshal of this struct cannot fail (no channels, funcs or cycles).
		panic("backup: encode key store: " + err.Error())
	}
	h := hmac.New(sha256.New, key[:])
	h.Write([]byte("keystore\n"))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// parseKeyStore decodes and checks a decrypted key store (at most
// maxKeyStore bytes); with a key, its MAC must be valid.
func parseKeyStore(r io.Reader, key *[32]byte) (*keyStoreFile, error) {
	var ks keyStoreFile
	dec := json.NewDecoder(io.LimitReader(r, maxKeyStore))
	if err := dec.Decode(&ks); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if ks.Format != keyStoreFormat {
		return nil, fmt.Errorf("format %d unknown", ks.Format)
	}
	if ks.Prefix == "" || len(ks.Prefix) > 64 {
		return nil, errors.New("no valid prefix")
	}
	for k, v := range ks.Entries {
		if !strings.HasPrefix(k, ks.Prefix) || len(k) > 256 || len(v) == 0 || len(v) > 4096 {
			return nil, fmt.Errorf("entry %.40q is not a key-store entry", k)
		}
	}
	if key != nil && !hmac.Equal([]byte(ks.MAC), []byte(ks.computeMAC(*key))) {
		return nil, errors.New("not authentic: made with another master key, or forged")
	}
	return &ks, nil
}

// KeyStoreWrite is the outcome of writing the key store to one target.
type KeyStoreWrite struct {
	Region string `json:"region"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

// SyncKeyStore writes the key store's current entries to every target at
// once (the node calls it when a user's key is destroyed) and returns what
// happened on each. The error joins the targets that failed; they get the
// current key store with the next backup.
func (r *Runner) SyncKeyStore(ctx context.Context) ([]KeyStoreWrite, error) {
	if r.cfg.KeyStore == nil || r.cfg.Cluster == nil {
		return nil, errors.New("backup: no key store configured")
	}
	rcptStr, err := r.cfg.Cluster.BackupRecipient(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if rcptStr == "" {
		// Nothing was ever backed up: there is no copy to rewrite.
		return nil, nil
	}
	clusterID, err := r.cfg.Cluster.ClusterID(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	work, err := os.MkdirTemp(r.cfg.TempDir, "keystore-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	return r.writeKeyStore(ctx, rcptStr, clusterID, work)
}

// writeKeyStore seals the current key store to the recipient and puts it
// on every target.
func (r *Runner) writeKeyStore(ctx context.Context, rcptStr, clusterID, work string) ([]KeyStoreWrite, error) {
	rcpt, err := ParseRecipient(rcptStr)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	r.ksMu.Lock()
	defer r.ksMu.Unlock()
	entries, err := r.cfg.KeyStore.Read(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the key store: %w", err)
	}
	// Another node may destroy a key and rewrite the targets between this
	// read and this write; a read after the write sees that destruction,
	// and the write is repeated without the key.
	for range 3 {
		out, err := r.putKeyStore(ctx, rcpt, clusterID, work, entries)
		if err != nil {
			return out, err
		}
		now, err := r.cfg.KeyStore.Read(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the key store: %w", err)
		}
		if !lostEntries(entries, now) {
			return out, nil
		}
		entries = now
	}
	return nil, errors.New("the key store kept changing while it was written")
}

// lostEntries reports whether an entry of before is missing from now.
func lostEntries(before, now map[string][]byte) bool {
	for k := range before {
		if _, ok := now[k]; !ok {
			return true
		}
	}
	return false
}

func (r *Runner) putKeyStore(ctx context.Context, rcpt age.Recipient, clusterID, work string, entries map[string][]byte) ([]KeyStoreWrite, error) {
	ks := keyStoreFile{Format: keyStoreFormat, ClusterID: clusterID, Written: r.clock.Now().UTC(),
		Prefix: r.cfg.KeyStore.Prefix, Entries: entries}
	if r.cfg.ManifestKey != nil {
		ks.MAC = ks.computeMAC(*r.cfg.ManifestKey)
	}
	body, err := json.Marshal(ks)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(work, "keystore-"+newID(r.clock.Now())+".age")
	size, _, err := sealTo(path, rcpt, func(w io.Writer) error { _, err := w.Write(body); return err })
	if err != nil {
		return nil, fmt.Errorf("seal the key store: %w", err)
	}
	defer os.Remove(path)
	out := make([]KeyStoreWrite, len(r.cfg.Targets))
	errs := make([]error, len(r.cfg.Targets))
	var wg sync.WaitGroup
	for i, t := range r.cfg.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Region = t.Region()
			f, err := os.Open(path)
			if err == nil {
				err = t.Put(ctx, KeyStoreObject, f, size)
				f.Close()
			}
			if err != nil {
				out[i].Error = err.Error()
				errs[i] = fmt.Errorf("target %s: write the key store: %w", t.Region(), err)
				return
			}
			out[i].OK = true
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// loadKeyStore reads the key store from every target in ts and returns
// the newest copy that decrypts and belongs to the backup's cluster.
func (r *Runner) loadKeyStore(ctx context.Context, ts []Target, man *Manifest, id *Identity) (*keyStoreFile, error) {
	var best *keyStoreFile
	var errs []error
	for _, t := range ts {
		ks, err := readKeyStore(ctx, t, id, r.cfg.ManifestKey)
		if err == nil && ks.ClusterID != man.ClusterID {
			err = fmt.Errorf("it belongs to cluster %s, the backup to %s", ks.ClusterID, man.ClusterID)
		}
		if err == nil && ks.Prefix != man.KeyStore.Prefix {
			err = fmt.Errorf("its prefix %q is not the backup's %q", ks.Prefix, man.KeyStore.Prefix)
		}
		if err != nil {
			if errors.Is(err, ErrWrongIdentity) {
				return nil, err
			}
			errs = append(errs, fmt.Errorf("target %s: key store: %w", t.Region(), err))
			continue
		}
		if best == nil || ks.Written.After(best.Written) {
			best = ks
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no readable key store on any target holding the backup, so no user key in \"user\" mode can be opened: %w", errors.Join(errs...))
	}
	return best, nil
}

func readKeyStore(ctx context.Context, t Target, id *Identity, key *[32]byte) (*keyStoreFile, error) {
	rc, err := t.Get(ctx, KeyStoreObject)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	zr, err := openSealed(ctxReader{ctx, rc}, id)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return parseKeyStore(zr, key)
}

// stateWithoutKeyStore writes a copy of shard n's state into work and
// returns the path of a copy of that without the key store's settings.
func (r *Runner) stateWithoutKeyStore(ctx context.Context, n uint32, work string) (string, raftstore.StateInfo, error) {
	var info raftstore.StateInfo
	raw := filepath.Join(work, fmt.Sprintf("raw-%d.db", n))
	f, err := os.OpenFile(raw, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", info, err
	}
	_, err = r.cfg.Cluster.WriteShardState(ctx, n, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	defer os.Remove(raw)
	if err != nil {
		return "", info, err
	}
	state := filepath.Join(work, fmt.Sprintf("state-%d.db", n))
	info, err = raftstore.CopyStateWithout(raw, state, r.cfg.KeyStore.Prefix)
	if err != nil {
		os.Remove(state)
		return "", info, fmt.Errorf("leave out the key store: %w", err)
	}
	return state, info, nil
}
