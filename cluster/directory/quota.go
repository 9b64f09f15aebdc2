package directory

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Quotas (RFC 9208 STORAGE and MESSAGE): each of a user's limits is
// their own, in the sealed user record, or else the cluster's default
// (Config.DefaultQuota, from the node's limits.default_quota and
// limits.default_message_quota). The limit is read from this node's
// meta replica by whoever proposes a command that adds mail; the user's
// shard enforces it when it applies the command (raftstore/quota.go).

// QuotaResource names what a quota limits.
type QuotaResource string

// The resources (RFC 9208 STORAGE and MESSAGE).
const (
	QuotaStorage  QuotaResource = "storage"
	QuotaMessages QuotaResource = "messages"
)

// QuotaSetting is a user's own quota on one resource as the admin
// interface sets it.
type QuotaSetting struct {
	// Resource is QuotaStorage ("" too) or QuotaMessages.
	Resource QuotaResource
	// Default: the user follows the cluster's default (Limit is
	// ignored).
	Default bool
	// Limit is the limit, in bytes or messages; 0 means unlimited.
	Limit uint64
}

// Quotas are the limits that apply to a user (0: unlimited).
type Quotas struct {
	Bytes    uint64
	Messages uint64
}

// quotasOf returns the limits that apply to a user.
func (d *Directory) quotasOf(info userInfo) Quotas {
	q := Quotas{Bytes: d.defaultQuota.Bytes, Messages: d.defaultQuota.Messages}
	if info.Quota != nil {
		q.Bytes = *info.Quota
	}
	if info.MessageQuota != nil {
		q.Messages = *info.MessageQuota
	}
	return q
}

// QuotaLimit returns the limits of a user as this node's meta replica
// has them.
func (d *Directory) QuotaLimit(user schema.ID) (Quotas, error) {
	var rec schema.UserRecord
	if err := d.c.ReadMeta(func(r *raftstore.Reader) (err error) { rec, err = r.User(user); return err }); err != nil {
		return Quotas{}, fmt.Errorf("read quota: %w", err)
	}
	var info userInfo
	if err := d.openJSON(d.keys.meta, seal.KindUserInfo, rec.ID, rec.Sealed, &info); err != nil {
		return Quotas{}, fmt.Errorf("open user record: %w", err)
	}
	return d.quotasOf(info), nil
}

// SetQuota sets a user's own limit on one resource, or returns them to
// the cluster's default for it.
func (d *Directory) SetQuota(ctx context.Context, address string, q QuotaSetting) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	var field **uint64
	_, err = d.updateUser(ctx, addr, func(_ schema.UserRecord, info *userInfo) error {
		switch q.Resource {
		case QuotaStorage, "":
			field = &info.Quota
		case QuotaMessages:
			field = &info.MessageQuota
		default:
			return fmt.Errorf("quota resource %q: %w", q.Resource, schema.ErrInvalid)
		}
		if q.Default {
			*field = nil
		} else {
			v := q.Limit
			*field = &v
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	return nil
}
