package directory

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The audit log of administrative actions is a time log (timelog.go) in
// the meta shard, "audit/<unix ns>-<random>", so it is replicated,
// survives any node, and reads back in time order. What an
// action names (a user, a domain) is sealed like the rest of the
// directory.
const auditPrefix = "audit/"

// AuditEntry is one administrative action.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Node is the node whose admin interface took the action.
	Node string `json:"node"`
	// Who is the operator: the system user behind the admin socket, or
	// "token NAME" for the HTTPS admin API and web page.
	Who string `json:"who"`
	// Remote is the client address of an HTTPS request ("" on the
	// admin socket).
	Remote string `json:"remote,omitempty"`
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
	if err := d.appendTimed(ctx, auditOwner, auditPrefix, e.Time, e); err != nil {
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
	out, bad, err := readTimed[AuditEntry](d, auditOwner, auditPrefix, since)
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	if bad > 0 {
		d.log.Warn("audit entries that do not open", "count", bad)
	}
	return out, nil
}

// PruneAudit deletes the entries recorded before before and returns how
// many went.
func (d *Directory) PruneAudit(ctx context.Context, before time.Time) (int, error) {
	var old []string
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings(auditPrefix) {
			if ns, ok := timedKeyTime(strings.TrimPrefix(k, auditPrefix)); ok && ns < before.UnixNano() {
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
