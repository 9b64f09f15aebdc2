package backup

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
)

// FormatVersion is the layout version written into manifests. Restore
// refuses versions it does not know.
const FormatVersion = 1

const (
	manifestName = "manifest.json"
	verifyName   = "verify.json"
	drillName    = "drill.json"
	idTimeLayout = "20060102T150405.000Z"
	maxManifest  = 1 << 20
	maxDataFile  = 1 << 20
	encryptionV1 = "age-mlkem768x25519"
	compressV1   = "zstd"
)

var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{8}$`)

// newID returns a backup id for a backup created at t: its UTC time to
// the millisecond and a random suffix, so ids sort by creation time.
func newID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format(idTimeLayout) + "-" + hex.EncodeToString(b[:])
}

// ValidID reports whether s has the form of a backup id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// idTime returns the creation time encoded in a valid id.
func idTime(id string) time.Time {
	t, _ := time.Parse(idTimeLayout, id[:len(idTimeLayout)])
	return t
}

func shardObject(n uint32) string { return "shard-" + strconv.FormatUint(uint64(n), 10) + ".age" }

func objectKey(id, name string) string { return id + "/" + name }

// Counts are the record counts of a shard copy, recorded at backup time
// and compared after decryption.
type Counts struct {
	Domains      int `json:"domains"`
	Users        int `json:"users"`
	MailUsers    int `json:"mail_users"`
	Mailboxes    int `json:"mailboxes"`
	Messages     int `json:"messages"`
	Blobs        int `json:"blobs"`
	StagedChunks int `json:"staged_chunks"`
}

func countsOf(s raftstore.Stats) Counts {
	return Counts{Domains: s.Domains, Users: s.Users, MailUsers: s.MailUsers, Mailboxes: s.Mailboxes,
		Messages: s.Messages, Blobs: s.Blobs, StagedChunks: s.StagedChunks}
}

// ShardEntry describes one shard's object in a backup.
type ShardEntry struct {
	Shard     uint32 `json:"shard"`
	Object    string `json:"object"`     // name inside the backup's directory
	Index     uint64 `json:"raft_index"` // last applied Raft index in the copy
	Term      uint64 `json:"raft_term"`
	StateSize int64  `json:"state_size"` // bytes of the shard's state file
	Size      int64  `json:"size"`       // bytes of the encrypted object
	SHA256    string `json:"sha256"`     // of the encrypted object
	Counts    Counts `json:"counts"`
}

// Manifest describes a backup. It holds no user data: ids, counts, sizes
// and hashes only.
type Manifest struct {
	Format      int          `json:"format"`
	ID          string       `json:"id"`
	ClusterID   string       `json:"cluster_id"`
	NodeID      string       `json:"node_id"`
	Created     time.Time    `json:"created"`
	KeyID       string       `json:"key_id"`
	Encryption  string       `json:"encryption"`
	Compression string       `json:"compression"`
	Shards      []ShardEntry `json:"shards"`
	// Files are small files of the node's data directory kept with the
	// backup (node state, key salt; never keys).
	Files []FileEntry `json:"files,omitempty"`
	// KeyStore, if set, says the copy of one shard lacks the key store,
	// which a restore takes from the targets' KeyStoreObject.
	KeyStore *KeyStoreRef `json:"key_store,omitempty"`
	// MAC authenticates everything above: HMAC-SHA256, under a key derived
	// from the master key, of the manifest encoded with MAC empty. The
	// shard and file objects are bound to it by their SHA-256.
	MAC string `json:"mac,omitempty"`
}

// errNotAuthentic means a manifest's MAC is missing or wrong.
var errNotAuthentic = errors.New("manifest is not authentic: made with another master key, or forged")

// computeMAC returns the manifest's MAC under key.
func (m *Manifest) computeMAC(key [32]byte) string {
	c := *m
	c.MAC = ""
	b, err := json.Marshal(&c)
	if err != nil {
		// Marshal of this struct cannot fail (no channels, funcs or cycles).
		panic("backup: encode manifest: " + err.Error())
	}
	h := hmac.New(sha256.New, key[:])
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// checkMAC reports whether the manifest is authentic under key.
func (m *Manifest) checkMAC(key [32]byte) error {
	got, err := hex.DecodeString(m.MAC)
	if err != nil || len(got) != sha256.Size {
		return errNotAuthentic
	}
	want, _ := hex.DecodeString(m.computeMAC(key))
	if !hmac.Equal(got, want) {
		return errNotAuthentic
	}
	return nil
}

// FileEntry describes one data-directory file in a backup, encrypted
// like the shards.
type FileEntry struct {
	Name     string `json:"name"`      // file name in the data directory
	Object   string `json:"object"`    // name inside the backup's directory
	FileSize int64  `json:"file_size"` // bytes of the file
	Size     int64  `json:"size"`      // bytes of the encrypted object
	SHA256   string `json:"sha256"`    // of the encrypted object
}

func fileObject(name string) string { return "file-" + name + ".age" }

// validFileName accepts plain file names of the data directory.
func validFileName(name string) bool {
	return name != "" && len(name) <= 64 && validKey(name) && !strings.HasPrefix(name, ".")
}

// Size is the total size of the backup's encrypted objects.
func (m *Manifest) Size() int64 {
	var n int64
	for _, s := range m.Shards {
		n += s.Size
	}
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Messages is the number of messages in the backup.
func (m *Manifest) Messages() int {
	var n int
	for _, s := range m.Shards {
		n += s.Counts.Messages
	}
	return n
}

func (m *Manifest) encode() ([]byte, error) {
	return json.MarshalIndent(m, "", "  ")
}

// parseManifest decodes and checks a manifest read from a target.
func parseManifest(r io.Reader, wantID string) (*Manifest, []byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read manifest: %w", err)
	}
	if len(b) > maxManifest {
		return nil, nil, fmt.Errorf("manifest larger than %d bytes", maxManifest)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("decode manifest: %w", err)
	}
	if m.Format != FormatVersion {
		return nil, nil, fmt.Errorf("manifest format %d is not supported (want %d)", m.Format, FormatVersion)
	}
	if m.ID != wantID {
		return nil, nil, fmt.Errorf("manifest names backup %q, stored under %q", m.ID, wantID)
	}
	if m.Encryption != encryptionV1 || m.Compression != compressV1 {
		return nil, nil, fmt.Errorf("manifest: unsupported encryption %q or compression %q", m.Encryption, m.Compression)
	}
	if len(m.Shards) == 0 {
		return nil, nil, fmt.Errorf("manifest lists no shards")
	}
	seen := map[uint32]bool{}
	for _, s := range m.Shards {
		if seen[s.Shard] {
			return nil, nil, fmt.Errorf("manifest lists shard %d twice", s.Shard)
		}
		seen[s.Shard] = true
		if s.Object != shardObject(s.Shard) || len(s.SHA256) != 64 || s.Size <= 0 || s.Index == 0 {
			return nil, nil, fmt.Errorf("manifest entry of shard %d is malformed", s.Shard)
		}
	}
	if !seen[0] {
		return nil, nil, fmt.Errorf("manifest has no meta shard (0)")
	}
	names := map[string]bool{}
	for _, f := range m.Files {
		if !validFileName(f.Name) || names[f.Name] || f.Object != fileObject(f.Name) || len(f.SHA256) != 64 || f.Size <= 0 || f.FileSize < 0 || f.FileSize > maxDataFile {
			return nil, nil, fmt.Errorf("manifest entry of file %q is malformed", f.Name)
		}
		names[f.Name] = true
	}
	return &m, b, nil
}

// Verification records the outcome of a verify or a restore drill. It is
// stored beside the manifest so every operator sees it.
type Verification struct {
	Kind    string    `json:"kind"` // "verify" or "drill"
	Time    time.Time `json:"time"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Targets []string  `json:"targets"` // regions whose copies were checked
	// RestoreSeconds is how long the drill took to restore and check the
	// backup (the measured RTO).
	RestoreSeconds float64 `json:"restore_seconds,omitempty"`
	// BackupAgeSeconds is how old the backup was when the drill started
	// (the RPO at that moment).
	BackupAgeSeconds float64 `json:"backup_age_seconds,omitempty"`
}

// Verification kinds.
const (
	KindVerify = "verify"
	KindDrill  = "drill"
)

func parseVerification(r io.Reader) (*Verification, error) {
	var v Verification
	if err := json.NewDecoder(io.LimitReader(r, maxManifest)).Decode(&v); err != nil {
		return nil, fmt.Errorf("decode verification record: %w", err)
	}
	if v.Kind != KindVerify && v.Kind != KindDrill {
		return nil, fmt.Errorf("verification record of unknown kind %q", v.Kind)
	}
	return &v, nil
}

// splitKey splits "id/name" into its backup id and the name inside it.
func splitKey(key string) (id, name string, ok bool) {
	id, name, ok = strings.Cut(key, "/")
	if !ok || !ValidID(id) || strings.Contains(name, "/") {
		return "", "", false
	}
	return id, name, true
}
