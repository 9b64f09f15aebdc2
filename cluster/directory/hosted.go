package directory

import (
	"context"
	"errors"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// HostsDomain reports whether the cluster serves domain, without looking
// at any user (the client autoconfiguration endpoints answer strangers
// with it). A miss is confirmed with the meta leader first, as for a
// recipient, so a domain added a moment ago through another node is
// found; when the leader cannot be reached the error wraps
// schema.ErrUnavailable rather than answering false. A malformed name is
// schema.ErrInvalid.
func (d *Directory) HostsDomain(ctx context.Context, domain string) (bool, error) {
	name, err := schema.CanonicalDomain(domain)
	if err != nil {
		return false, err
	}
	_, _, err = d.findDomain(ctx, name)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, schema.ErrNoSuchDomain):
		return false, nil
	}
	return false, err
}
