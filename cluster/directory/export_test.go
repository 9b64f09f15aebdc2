package directory

import (
	"context"

	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// MakeLegacyUserKey turns a user's record into the layout from before the
// key store: its data keys wrapped directly under the domain key, no
// key-store entry. For tests of MigrateKeyStore.
func MakeLegacyUserKey(ctx context.Context, d *Directory, address string) error {
	rec, _, err := d.lookupUser(ctx, address)
	if err != nil {
		return err
	}
	k, err := d.userKeysFor(rec)
	if err != nil {
		return err
	}
	dr, _, err := d.domainByID(rec.Domain)
	if err != nil {
		return err
	}
	dk, err := d.domainKeys(dr)
	if err != nil {
		return err
	}
	keys := []seal.Key{k.Ring().(*seal.Static).Current()} // a new user has one key
	if rec.WrappedKey, err = d.sealer.Seal(seal.NewStatic(dk...), seal.KindUserKey, rec.ID[:], keyObject, encodeKeys(keys)); err != nil {
		return err
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutUser{Record: rec}); err != nil {
		return err
	}
	_, err = d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: keyStoreKey(rec.ID)})
	d.ukeys.forget(rec.ID)
	return err
}
