package directory

import (
	"context"
	"fmt"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// A user's recent logins live in the meta shard like the audit log: one
// sealed setting per record, "logins/<user id>/<unix ns, 20 digits>-<random>",
// sealed to the user's id, so they are replicated, read back in time
// order per user, and pruned by age. Callers bound how often they write
// (the node throttles per user, protocol, address and result).
const loginsPrefix = "logins/"

// LoginRecord is one login of a user as the history keeps it. It never
// holds a password.
type LoginRecord struct {
	Time     time.Time `json:"time"`
	Node     string    `json:"node"`
	Protocol string    `json:"protocol"`
	// Remote is the client's IP address ("" when unknown).
	Remote string `json:"remote"`
	// Credential is "password" or the app password's name for a
	// successful login, "" for a failed one.
	Credential string `json:"credential,omitempty"`
	Success    bool   `json:"success"`
}

func loginsKeyPrefix(user schema.ID) string { return loginsPrefix + user.String() + "/" }

// RecordLogin appends a login of the user at address to the history. A
// login of an unknown user is not recorded: it returns an error that is
// schema.ErrNoSuchUser.
func (d *Directory) RecordLogin(ctx context.Context, address string, e LoginRecord) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return fmt.Errorf("record login: %w", err)
	}
	rec, _, err := d.userByAddress(addr)
	if err != nil {
		return fmt.Errorf("record login: %w", err)
	}
	if err := d.appendTimed(ctx, rec.ID, loginsKeyPrefix(rec.ID), e.Time, e); err != nil {
		return fmt.Errorf("record login: %w", err)
	}
	return nil
}

// Logins returns the recorded logins of the user at address at or after
// since, oldest first, as the meta leader has them.
func (d *Directory) Logins(ctx context.Context, address string, since time.Time) ([]LoginRecord, error) {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return nil, fmt.Errorf("list logins: %w", err)
	}
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return nil, fmt.Errorf("list logins: %w", err)
	}
	rec, _, err := d.userByAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("list logins: %w", err)
	}
	out, bad, err := readTimed[LoginRecord](d, rec.ID, loginsKeyPrefix(rec.ID), since)
	if err != nil {
		return nil, fmt.Errorf("list logins: %w", err)
	}
	if bad > 0 {
		d.log.Warn("login records that do not open", "count", bad)
	}
	return out, nil
}

// PruneLogins deletes the login records made before before, and those of
// users that no longer exist, and returns how many went.
func (d *Directory) PruneLogins(ctx context.Context, before time.Time) (int, error) {
	n, err := d.pruneUserTimed(ctx, loginsPrefix, before)
	if err != nil {
		return n, fmt.Errorf("prune the login history: %w", err)
	}
	return n, nil
}
