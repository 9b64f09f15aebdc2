package directory

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// UserByAddress returns a user, keys included, by the account's own
// address (no alias or "+detail" resolution, no password): for the
// operator's tools that act on an account, such as imports.
func (d *Directory) UserByAddress(ctx context.Context, address string) (*User, error) {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return nil, err
	}
	rec, info, err := d.lookupUser(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", addr, err)
	}
	return d.user(rec, info)
}
