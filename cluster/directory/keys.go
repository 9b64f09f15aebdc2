package directory

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// KeyMode says which key encrypts the mail of a domain's users, like a
// plan level: one cluster key, one key per domain, or one key per user.
type KeyMode string

// Key modes.
const (
	KeyModeShared KeyMode = "shared"
	KeyModeDomain KeyMode = "domain"
	KeyModeUser   KeyMode = "user"
)

// Valid reports whether m is a known mode.
func (m KeyMode) Valid() bool {
	return m == KeyModeShared || m == KeyModeDomain || m == KeyModeUser
}

const settingClusterKey = "cluster_data_key"

// keyID derives a stable id for a root secret, so values sealed under it
// name it without revealing it.
func keyID(secret [seal.KeySize]byte) uint32 {
	h := sha256.Sum256(append([]byte("mailcluster/key-id/"), secret[:]...))
	return binary.BigEndian.Uint32(h[:4])
}

// rootKeys are the keys derived from the master key.
type rootKeys struct {
	master seal.Keyring  // wraps domain keys and the cluster data key
	meta   seal.Keyring  // seals domain and user records
	index  *seal.Indexer // hashes domain, user and alias names, which records are found by
	// manifest authenticates backup manifests.
	manifest [seal.KeySize]byte
	// spool seals messages waiting in the spool for several shards.
	spool seal.Keyring
	// appHint keys the short tag that tells which app password a login
	// may be (see appPasswordHint).
	appHint [seal.KeySize]byte
}

func newRootKeys(master [seal.KeySize]byte) *rootKeys {
	meta := seal.Derive(master, "meta-records")
	spool := seal.Derive(master, "spool")
	return &rootKeys{
		master:   seal.NewStatic(seal.Key{ID: keyID(master), Secret: master}),
		meta:     seal.NewStatic(seal.Key{ID: keyID(meta), Secret: meta}),
		index:    seal.NewIndexer(seal.Derive(master, "name-index")),
		manifest: BackupManifestKey(master),
		spool:    seal.NewStatic(seal.Key{ID: keyID(spool), Secret: spool}),
		appHint:  seal.Derive(master, "app-password-hint"),
	}
}

func (r *rootKeys) domainNameKey(domain string) schema.NameKey {
	return r.index.Index("domain:" + domain)
}

func (r *rootKeys) userNameKey(address string) schema.NameKey {
	return r.index.Index("user:" + address)
}

// encodeKeys serialises a key list (oldest first; the last is current),
// to be sealed under a parent key.
func encodeKeys(keys []seal.Key) []byte {
	out := make([]byte, 0, len(keys)*(4+seal.KeySize))
	for _, k := range keys {
		out = binary.BigEndian.AppendUint32(out, k.ID)
		out = append(out, k.Secret[:]...)
	}
	return out
}

func decodeKeys(b []byte) ([]seal.Key, error) {
	const size = 4 + seal.KeySize
	if len(b) == 0 || len(b)%size != 0 {
		return nil, fmt.Errorf("wrapped key list of %d bytes: %w", len(b), schema.ErrInvalid)
	}
	keys := make([]seal.Key, 0, len(b)/size)
	for ; len(b) > 0; b = b[size:] {
		k := seal.Key{ID: binary.BigEndian.Uint32(b)}
		copy(k.Secret[:], b[4:size])
		keys = append(keys, k)
	}
	return keys, nil
}

// UserKeys is what is needed to read and write one user's mail: the
// keyring that seals it and the key that hashes mailbox names.
type UserKeys struct {
	ring  seal.Keyring
	index *seal.Indexer // hashes mailbox names
}

func newUserKeys(user schema.ID, keys []seal.Key) *UserKeys {
	// The index key comes from the oldest key, so it survives rotation.
	idx := seal.Derive(keys[0].Secret, "mailbox-names/"+user.String())
	return &UserKeys{ring: seal.NewStatic(keys...), index: seal.NewIndexer(idx)}
}

// Ring returns the keyring that seals the user's data.
func (u *UserKeys) Ring() seal.Keyring { return u.ring }

// MailboxNameKey returns the keyed hash a mailbox is found by.
func (u *UserKeys) MailboxNameKey(name string) schema.NameKey {
	return u.index.Index("mailbox:" + name)
}
