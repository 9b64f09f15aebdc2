package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"filippo.io/age"
)

// ErrWrongIdentity means the identity given to decrypt a backup is not the
// one whose public key the backup was encrypted to.
var ErrWrongIdentity = errors.New("the identity does not match the backup key")

// ErrNoRecipient means the cluster has no backup public key yet.
var ErrNoRecipient = errors.New("no backup public key is configured")

const maxIdentityFile = 64 << 10

// GenerateKey returns a new hybrid post-quantum (ML-KEM-768 + X25519) key
// pair: the identity, which decrypts and must be kept offline, and its
// public recipient string ("age1pq1..."), which the cluster stores.
func GenerateKey() (*Identity, string, error) {
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		return nil, "", fmt.Errorf("generate backup key: %w", err)
	}
	rcpt := id.Recipient().String()
	return &Identity{ids: []age.Identity{id}, keyIDs: []string{KeyID(rcpt)}, encoded: []string{id.String()}, recipients: []string{rcpt}}, rcpt, nil
}

// ParseRecipient checks that s is a hybrid post-quantum age public key
// ("age1pq1...") and returns it. Classic X25519 keys are refused: backups
// may be kept for years and must resist a future quantum computer.
func ParseRecipient(s string) (*age.HybridRecipient, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, ErrNoRecipient
	}
	if !strings.HasPrefix(s, "age1pq1") {
		return nil, fmt.Errorf("backup public key: want a hybrid post-quantum age key (age1pq1...), got one starting %q", prefix(s, 7))
	}
	r, err := age.ParseHybridRecipient(s)
	if err != nil {
		return nil, fmt.Errorf("backup public key: %w", err)
	}
	return r, nil
}

func prefix(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// KeyID returns the short fingerprint of a backup public key that
// manifests carry, so a restore can tell whether an identity fits before
// downloading anything.
func KeyID(recipient string) string {
	h := sha256.Sum256([]byte("mailcluster/backup-key/" + strings.TrimSpace(recipient)))
	return hex.EncodeToString(h[:8])
}

// Identity holds the secret keys that decrypt backups. Its String and
// LogValue never reveal them.
type Identity struct {
	ids        []age.Identity
	keyIDs     []string
	encoded    []string
	recipients []string // public keys of the hybrid identities
}

// ParseIdentity reads an age identity file (comments and blank lines
// allowed; one or more AGE-SECRET-KEY-PQ-1... lines).
func ParseIdentity(r io.Reader) (*Identity, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("read backup identity: %w", err)
	}
	if len(b) > maxIdentityFile {
		return nil, fmt.Errorf("backup identity: file larger than %d bytes", maxIdentityFile)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("backup identity: %w", err)
	}
	out := &Identity{ids: ids}
	for _, id := range ids {
		switch k := id.(type) {
		case *age.HybridIdentity:
			out.keyIDs = append(out.keyIDs, KeyID(k.Recipient().String()))
			out.encoded = append(out.encoded, k.String())
			out.recipients = append(out.recipients, k.Recipient().String())
		case *age.X25519Identity:
			out.keyIDs = append(out.keyIDs, KeyID(k.Recipient().String()))
			out.encoded = append(out.encoded, k.String())
		}
	}
	return out, nil
}

// LoadIdentity reads an identity file from path.
func LoadIdentity(path string) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open backup identity: %w", err)
	}
	defer f.Close()
	return ParseIdentity(f)
}

// WriteIdentityFile writes id to path with mode 0600, refusing to replace
// an existing file, and syncs it. The file says which public key it
// belongs to, so an operator can match it to a cluster later.
func WriteIdentityFile(path string, id *Identity, recipient string, now time.Time) error {
	if id == nil || len(id.encoded) == 0 {
		return errors.New("write backup identity: empty identity")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write backup identity: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# mailcluster backup identity: decrypts this cluster's backups.\n")
	fmt.Fprintf(&b, "# Keep it offline; the cluster itself only holds the public key.\n")
	fmt.Fprintf(&b, "# created: %s\n# key id: %s\n# public key: %s\n", now.UTC().Format(time.RFC3339), KeyID(recipient), recipient)
	for _, s := range id.encoded {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("write backup identity: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write backup identity: %w", err)
	}
	return f.Close()
}

// Recipient returns the public key of the identity's first hybrid
// post-quantum key, or "" if it has none.
func (i *Identity) Recipient() string {
	if len(i.recipients) == 0 {
		return ""
	}
	return i.recipients[0]
}

// KeyIDs returns the key ids of the public keys this identity decrypts.
func (i *Identity) KeyIDs() []string { return append([]string(nil), i.keyIDs...) }

func (i *Identity) matches(keyID string) bool {
	for _, k := range i.keyIDs {
		if k == keyID {
			return true
		}
	}
	return false
}

// String describes the identity by its key ids only.
func (i *Identity) String() string {
	return "backup identity (key id " + strings.Join(i.keyIDs, ", ") + ")"
}

// LogValue keeps the secret out of logs.
func (i *Identity) LogValue() slog.Value { return slog.StringValue(i.String()) }
