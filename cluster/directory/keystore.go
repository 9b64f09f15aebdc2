package directory

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// KeyStorePrefix starts the meta settings that form the key store: one
// per user of a domain in "user" key mode, "keystore/<user id>", holding
// the user's key-encryption key (KEK) wrapped under the domain key. The
// user record's wrapped key is sealed under that KEK, not under the
// domain key, so the user's mail can be read only while the entry exists.
//
// Backups leave the key store out of their shard copies (see
// backup.KeyStore): each backup target keeps only its current copy, which
// is overwritten by every backup and at once by every user deletion, and a
// restore puts that current copy back into the restored meta shard.
// Destroying an entry therefore makes the user's mail unreadable in every
// existing backup too: their meta shard holds the wrapped user key, but no
// KEK opens it any more.
const KeyStorePrefix = "keystore/"

// kekObject is the object id bound into the AAD of wrapped KEKs, and
// userKeyUnderKEK that of user keys sealed under a KEK, so neither can be
// passed off as the other or as a user key wrapped directly under a
// domain key (the layout before the key store).
var (
	kekObject       = []byte("kek")
	userKeyUnderKEK = []byte("key-under-kek")
)

func keyStoreKey(user schema.ID) string { return KeyStorePrefix + user.String() }

// ErrKeyDestroyed means a user's key-encryption key is gone: the user was
// deleted (crypto-shredded), and this is a copy of the directory from
// before, such as a restored backup.
var ErrKeyDestroyed = errors.New("the user's key was destroyed")

// newUserKEK makes a user's KEK and its first data key: the key-store
// entry (the KEK wrapped under the domain's keys) and the record's wrapped
// key (the data key wrapped under the KEK).
func (d *Directory) newUserKEK(user schema.ID, domainKeys []seal.Key) (entry, wrapped []byte, err error) {
	kek := seal.NewKey(0)
	kek.ID = keyID(kek.Secret)
	entry, err = d.sealer.Seal(seal.NewStatic(domainKeys...), seal.KindUserKey, user[:], kekObject, encodeKeys([]seal.Key{kek}))
	if err != nil {
		return nil, nil, fmt.Errorf("wrap key-encryption key: %w", err)
	}
	wrapped, err = d.sealer.Seal(seal.NewStatic(kek), seal.KindUserKey, user[:], userKeyUnderKEK, encodeKeys([]seal.Key{seal.NewKey(1)}))
	if err != nil {
		return nil, nil, fmt.Errorf("wrap user key: %w", err)
	}
	return entry, wrapped, nil
}

// openUserKey unwraps the data keys of a user in "user" key mode: through
// its key-store entry when it has one, else (a user created before the key
// store) directly under the domain key.
func (d *Directory) openUserKey(u schema.UserRecord, domainKeys []seal.Key) ([]seal.Key, error) {
	entry, err := d.setting(keyStoreKey(u.ID))
	if err != nil {
		return nil, err
	}
	dring := seal.NewStatic(domainKeys...)
	if entry == nil {
		plain, err := d.sealer.Open(dring, seal.KindUserKey, u.ID[:], keyObject, u.WrappedKey)
		if err != nil {
			// Not a key wrapped under the domain key: one under a KEK
			// that is gone.
			return nil, fmt.Errorf("unwrap user key: %w", ErrKeyDestroyed)
		}
		return decodeKeys(plain)
	}
	plain, err := d.sealer.Open(dring, seal.KindUserKey, u.ID[:], kekObject, entry)
	if err != nil {
		return nil, fmt.Errorf("unwrap key-encryption key: %w", err)
	}
	kek, err := decodeKeys(plain)
	if err != nil {
		return nil, err
	}
	if plain, err = d.sealer.Open(seal.NewStatic(kek...), seal.KindUserKey, u.ID[:], userKeyUnderKEK, u.WrappedKey); err != nil {
		// A user being moved to the key store (MigrateKeyStore) may still
		// have its key under the domain key: the same data keys.
		if legacy, lerr := d.sealer.Open(dring, seal.KindUserKey, u.ID[:], keyObject, u.WrappedKey); lerr == nil {
			return decodeKeys(legacy)
		}
		return nil, fmt.Errorf("unwrap user key: %w", err)
	}
	return decodeKeys(plain)
}

// KeyStore returns the key store's entries as the meta leader has them
// (setting key to sealed value), so a key destroyed through another node
// is not written back to the backups. The values are KEKs wrapped under
// domain keys: secrets under the master key, for the backups' separate
// copy only.
func (d *Directory) KeyStore(ctx context.Context) (map[string][]byte, error) {
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return nil, fmt.Errorf("read the key store: %w", err)
	}
	var out map[string][]byte
	err := d.c.ViewMeta(func(r *raftstore.Reader) error { out = r.Settings(KeyStorePrefix); return nil })
	return out, err
}

// destroyUserKEK deletes a user's key-store entry; it reports whether
// there was one.
func (d *Directory) destroyUserKEK(ctx context.Context, user schema.ID) (bool, error) {
	entry, err := d.setting(keyStoreKey(user))
	if err != nil || entry == nil {
		return false, err
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: keyStoreKey(user)}); err != nil {
		return false, fmt.Errorf("destroy key-encryption key: %w", err)
	}
	return true, nil
}

// MigrateKeyStore moves the users of "user" key mode domains whose key is
// still wrapped directly under the domain key (created before the key
// store) to a key-encryption key of their own, keeping their data keys:
// from then on deleting them reaches the backups taken afterwards. A
// user whose key opens neither way (destroyed) is left alone. It is
// idempotent and safe to run on several nodes at once: the KEK is created
// with a compare-and-set, and either wrapping of the record opens the
// same data keys. It returns how many users it moved.
func (d *Directory) MigrateKeyStore(ctx context.Context) (int, error) {
	var users []schema.UserRecord
	if err := d.c.ViewMeta(func(r *raftstore.Reader) (err error) { users, err = r.Users(); return err }); err != nil {
		return 0, err
	}
	moved := 0
	for _, u := range users {
		if err := ctx.Err(); err != nil {
			return moved, err
		}
		ok, err := d.migrateUserKey(ctx, u)
		if err != nil {
			return moved, fmt.Errorf("migrate user keys to the key store: %w", err)
		}
		if ok {
			moved++
		}
	}
	if moved > 0 {
		d.log.Info("user keys moved to the key store", "users", moved)
	}
	return moved, nil
}

func (d *Directory) migrateUserKey(ctx context.Context, u schema.UserRecord) (bool, error) {
	dr, info, err := d.domainByID(u.Domain)
	if err != nil || info.Mode != KeyModeUser {
		return false, nil // a domain gone meanwhile, or no key of the user's own
	}
	dk, err := d.domainKeys(dr)
	if err != nil {
		return false, err
	}
	plain, err := d.sealer.Open(seal.NewStatic(dk...), seal.KindUserKey, u.ID[:], keyObject, u.WrappedKey)
	if err != nil {
		return false, nil // already under a KEK, or destroyed
	}
	keys, err := decodeKeys(plain)
	if err != nil {
		return false, err
	}
	entry, err := d.setting(keyStoreKey(u.ID))
	if err != nil {
		return false, err
	}
	if entry == nil {
		kek := seal.NewKey(0)
		kek.ID = keyID(kek.Secret)
		if entry, err = d.sealer.Seal(seal.NewStatic(dk...), seal.KindUserKey, u.ID[:], kekObject, encodeKeys([]seal.Key{kek})); err != nil {
			return false, err
		}
		if _, err := d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: keyStoreKey(u.ID), OldAbsent: true, New: entry}); err != nil {
			if errors.Is(err, schema.ErrConflict) {
				return false, nil // another node is moving this user
			}
			return false, err
		}
	}
	kplain, err := d.sealer.Open(seal.NewStatic(dk...), seal.KindUserKey, u.ID[:], kekObject, entry)
	if err != nil {
		return false, fmt.Errorf("unwrap key-encryption key: %w", err)
	}
	kek, err := decodeKeys(kplain)
	if err != nil {
		return false, err
	}
	wrapped, err := d.sealer.Seal(seal.NewStatic(kek...), seal.KindUserKey, u.ID[:], userKeyUnderKEK, encodeKeys(keys))
	if err != nil {
		return false, err
	}
	d.userMu.Lock()
	defer d.userMu.Unlock()
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return false, err
	}
	var cur schema.UserRecord
	if err := d.c.ReadMeta(func(r *raftstore.Reader) (err error) { cur, err = r.User(u.ID); return err }); err != nil {
		if errors.Is(err, schema.ErrNoSuchUser) {
			return false, nil
		}
		return false, err
	}
	cur.WrappedKey = wrapped
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutUser{Record: cur}); err != nil {
		return false, err
	}
	d.ukeys.forget(u.ID)
	return true, nil
}
