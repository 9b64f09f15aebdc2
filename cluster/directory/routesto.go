package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Route is an address other than the user's own that delivers to the
// user: an alias whose expansion reaches the user, or a domain's
// catch-all whose target the user is. It names no other user: the
// alias's other targets are theirs, not this user's, data.
type Route struct {
	// Address is the alias's address, or "@domain" for a catch-all.
	Address string `json:"address"`
	// CatchAll marks a domain's catch-all.
	CatchAll bool `json:"catch_all,omitempty"`
	// Direct: the user is one of the alias's own targets (else it is
	// reached through another alias); always true for a catch-all.
	Direct bool `json:"direct"`
}

// RoutesTo lists the aliases and catch-alls that deliver to a user, as
// the meta leader has them (best effort: else this node's view), sorted
// by domain and local part, a catch-all first in its domain. An alias
// counts when delivery would reach the user, so through other aliases
// too, up to MaxAliasDepth levels, as delivery follows them.
func (d *Directory) RoutesTo(ctx context.Context, address string) ([]Route, error) {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return nil, err
	}
	_ = d.c.CatchUpMeta(ctx) // best effort: else this node's view
	rec, _, err := d.lookupUser(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("routes to user: %w", err)
	}
	reaches := func(users []schema.UserRecord) bool {
		return slices.ContainsFunc(users, func(u schema.UserRecord) bool { return u.ID == rec.ID })
	}
	out := []Route{}
	err = d.c.ViewMeta(func(r *raftstore.Reader) error {
		v := d.routeView(r)
		for key, sealed := range r.Settings(aliasPrefix) {
			dom, ok := parseAliasKey(key)
			if !ok {
				continue
			}
			a, err := d.openAlias(dom, key, sealed)
			if err != nil {
				return err
			}
			users, _, err := v.exact(a.Address)
			if err != nil {
				return err
			}
			if reaches(users) {
				out = append(out, Route{Address: a.Address, Direct: slices.Contains(a.Targets, addr)})
			}
		}
		for key, sealed := range r.Settings(catchAllPrefix) {
			dom, ok := parseCatchAllKey(key)
			if !ok {
				continue
			}
			c, err := d.openCatchAll(dom, key, sealed)
			if err != nil {
				return err
			}
			target, ok, err := v.user(c.Target)
			if err != nil {
				return err
			}
			if !ok || target.ID != rec.ID {
				continue
			}
			drec, err := r.Domain(dom)
			if errors.Is(err, schema.ErrNoSuchDomain) {
				continue // left behind by a deleted domain
			}
			if err != nil {
				return err
			}
			info, err := d.openDomainInfo(drec)
			if err != nil {
				return err
			}
			out = append(out, Route{Address: "@" + info.Name, CatchAll: true, Direct: true})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("routes to user: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		return aliasSortKey(Alias{Address: out[i].Address}) < aliasSortKey(Alias{Address: out[j].Address})
	})
	return out, ctx.Err()
}
