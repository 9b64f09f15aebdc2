package directory

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Cluster-wide settings that backups need, kept in the meta shard so every
// node (and every restored copy) sees the same values.
const (
	settingBackupRecipient = "backup_recipient"
	settingClusterID       = "cluster_id"
	maxRecipientLen        = 4096
)

func (d *Directory) setting(key string) ([]byte, error) {
	var v []byte
	err := d.c.ReadMeta(func(r *raftstore.Reader) error { v = r.Setting(key); return nil })
	return v, err
}

// BackupRecipient returns the public key that backups are encrypted to,
// or "" when none is set. It is public: the matching identity is kept
// away from the cluster, so a node cannot decrypt its own backups.
func (d *Directory) BackupRecipient(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	v, err := d.setting(settingBackupRecipient)
	if err != nil {
		return "", fmt.Errorf("read backup recipient: %w", err)
	}
	if v == nil {
		// Not here yet, or not anywhere: a node that just joined must
		// not mistake the first for the second.
		if err := d.c.CatchUpMeta(ctx); err != nil {
			return "", fmt.Errorf("read backup recipient: %w", err)
		}
		if v, err = d.setting(settingBackupRecipient); err != nil {
			return "", fmt.Errorf("read backup recipient: %w", err)
		}
	}
	return string(v), nil
}

// InitBackupRecipient records the backup public key only if the cluster
// has none yet (compare-and-set), so two nodes starting at once cannot
// both create a key. It reports whether this call set it.
func (d *Directory) InitBackupRecipient(ctx context.Context, recipient string) (bool, error) {
	if recipient == "" || len(recipient) > maxRecipientLen {
		return false, fmt.Errorf("set backup recipient: %d bytes is not a valid public key: %w", len(recipient), schema.ErrInvalid)
	}
	_, err := d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: settingBackupRecipient, OldAbsent: true, New: []byte(recipient)})
	if errors.Is(err, schema.ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("set backup recipient: %w", err)
	}
	return true, nil
}

// SetBackupRecipient records the public key that backups are encrypted
// to. The caller (package cluster/backup) validates its form; the cluster
// only stores it.
func (d *Directory) SetBackupRecipient(ctx context.Context, recipient string) error {
	if recipient == "" || len(recipient) > maxRecipientLen {
		return fmt.Errorf("set backup recipient: %d bytes is not a valid public key: %w", len(recipient), schema.ErrInvalid)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: settingBackupRecipient, Value: []byte(recipient)}); err != nil {
		return fmt.Errorf("set backup recipient: %w", err)
	}
	return nil
}

// ClusterID returns the cluster's stable random id, creating it the first
// time it is asked for. Backups carry it so a restore can tell which
// cluster a backup belongs to. Creation is a compare-and-set, so first
// calls racing on two nodes agree on one id.
func (d *Directory) ClusterID(ctx context.Context) (string, error) {
	v, err := d.setting(settingClusterID)
	if err != nil {
		return "", fmt.Errorf("read cluster id: %w", err)
	}
	if len(v) > 0 {
		return string(v), nil
	}
	if err := d.c.CatchUpMeta(ctx); err == nil {
		if v, err = d.setting(settingClusterID); err == nil && len(v) > 0 {
			return string(v), nil
		}
	}
	id := schema.NewID().String()
	if _, err := d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: settingClusterID, OldAbsent: true, New: []byte(id)}); err != nil && !errors.Is(err, schema.ErrConflict) {
		return "", fmt.Errorf("create cluster id: %w", err)
	}
	if v, err = d.setting(settingClusterID); err != nil {
		return "", fmt.Errorf("read cluster id: %w", err)
	}
	return string(v), nil
}

// BackupManifestKey derives, from the master key, the key that
// authenticates backup manifests. Whoever can restore holds the master
// key, so a manifest forged or swapped on a backup target (whose writers
// know only the public backup key) is detected without any new secret.
func BackupManifestKey(master [32]byte) [32]byte {
	return seal.Derive(master, "backup-manifest")
}

// BackupManifestKey returns the manifest authentication key of this
// cluster (see the package-level BackupManifestKey).
func (d *Directory) BackupManifestKey() [32]byte { return d.keys.manifest }
