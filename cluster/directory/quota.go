package directory

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Storage quotas (RFC 9208 STORAGE): a user's limit is their own, in the
// sealed user record, or else the cluster's default (Config.DefaultQuota,
// from the node's [quota] section). The limit is read from this node's
// meta replica by whoever proposes a command that adds mail; the user's
// shard enforces it when it applies the command (raftstore/quota.go).

// QuotaSetting is a user's own quota as the admin interface sets it.
type QuotaSetting struct {
	// Default: the user follows the cluster's default (Bytes is
	// ignored).
	Default bool
	// Bytes is the limit; 0 means unlimited.
	Bytes uint64
}

// quotaOf returns the limit in bytes that applies to a user (0:
// unlimited).
func (d *Directory) quotaOf(info userInfo) uint64 {
	if info.Quota != nil {
		return *info.Quota
	}
	return d.defaultQuota
}

// QuotaLimit returns the storage limit of a user in bytes (0: unlimited)
// as this node's meta replica has it.
func (d *Directory) QuotaLimit(user schema.ID) (uint64, error) {
	var rec schema.UserRecord
	if err := d.c.ViewMeta(func(r *raftstore.Reader) (err error) { rec, err = r.User(user); return err }); err != nil {
		return 0, fmt.Errorf("read quota: %w", err)
	}
	var info userInfo
	if err := d.openJSON(d.keys.meta, seal.KindUserInfo, rec.ID, rec.Sealed, &info); err != nil {
		return 0, fmt.Errorf("open user record: %w", err)
	}
	return d.quotaOf(info), nil
}

// DefaultQuota returns the cluster's default limit in bytes (0:
// unlimited).
func (d *Directory) DefaultQuota() uint64 { return d.defaultQuota }

// SetQuota sets a user's own storage limit, or returns the user to the
// cluster's default.
func (d *Directory) SetQuota(ctx context.Context, address string, q QuotaSetting) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	_, err = d.updateUser(ctx, addr, func(_ schema.UserRecord, info *userInfo) error {
		if q.Default {
			info.Quota = nil
		} else {
			b := q.Bytes
			info.Quota = &b
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	return nil
}
