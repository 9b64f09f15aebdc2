package directory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The audit log of administrative actions lives in the meta shard, one
// sealed setting per action, "audit/<unix ns, 20 digits>-<random>", so it
// is replicated, survives any node, and reads back in time order. What an
// action names (a user, a domain) is sealed like the rest of the
// directory.
const auditPrefix = "audit/"

// AuditEntry is one administrative action.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Node is the node whose admin interface took the action.
	Node string `json:"node"`
	// Who is the operator: the system user behind the admin socket.
	Who string `json:"who"`
	// Action is the request, such as "POST /v1/users".
	Action string `json:"action"`
	// Subject holds what the action named (user, domain, alias...),
	// never a secret.
	Subject map[string]string `json:"subject,omitempty"`
	// Result is "ok" or the refusal's text.
	Result string `json:"result"`
}

var auditOwner = schema.ID{}

// RecordAudit appends an entry to the audit log.
func (d *Directory) RecordAudit(ctx context.Context, e AuditEntry) error {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	key := fmt.Sprintf("%s%020d-%s", auditPrefix, e.Time.UnixNano(), hex.EncodeToString(r[:]))
	sealed, err := d.sealSetting(auditOwner, key, e)
	if err != nil {
		return fmt.Errorf("record audit entry: %w", err)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: key, Value: sealed}); err != nil {
		return fmt.Errorf("record audit entry: %w", err)
	}
	return nil
}

// Audit returns the entries recorded at or after since, oldest first, as
// the meta leader has them.
func (d *Directory) Audit(ctx context.Context, since time.Time) ([]AuditEntry, error) {
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	from := auditPrefix + fmt.Sprintf("%020d", max(since.UnixNano(), 0))
	var out []AuditEntry
	var bad int
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k, v := range r.Settings(auditPrefix) {
			if k < from {
				continue
			}
			var e AuditEntry
			if err := d.openSetting(auditOwner, k, v, &e); err != nil {
				bad++
				continue
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	if bad > 0 {
		d.log.Warn("audit entries that do not open", "count", bad)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// PruneAudit deletes the entries recorded before before and returns how
// many went.
func (d *Directory) PruneAudit(ctx context.Context, before time.Time) (int, error) {
	var old []string
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings(auditPrefix) {
			stamp, _, _ := strings.Cut(strings.TrimPrefix(k, auditPrefix), "-")
			ns, err := strconv.ParseInt(stamp, 10, 64)
			if err == nil && ns < before.UnixNano() {
				old = append(old, k)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for i, k := range old {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: k}); err != nil {
			return i, fmt.Errorf("prune the audit log: %w", err)
		}
	}
	return len(old), nil
}
