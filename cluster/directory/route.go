package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// How a recipient address finds its users, in order:
//
//  1. a user with exactly that address;
//  2. an alias with exactly that address, expanded to its users (aliases
//     naming aliases are followed MaxAliasDepth levels deep at most);
//  3. for "base+detail@domain", the same two steps for "base@domain";
//  4. the domain's catch-all user.
//
// Steps 1 and 2 are tried on this node's meta replica first; anything
// past them is decided only after catching up with the meta leader, so
// an address added a moment ago through another node is never taken for
// a plus-address or an unknown local part.

// ErrSeveralUsers is returned by ResolveRecipient for an alias that
// delivers to more than one user (ResolveRecipients returns them all).
var ErrSeveralUsers = errors.New("address delivers to several users")

// LookupRecipient reports whether address is a local mailbox: a user, an
// alias with at least one existing user behind it, a plus-address of
// either, or an unknown local part of a domain with a catch-all.
// schema.ErrNotLocal means the domain is not served here and
// schema.ErrNoSuchUser that nothing receives mail at the address.
//
// It resolves the address as ResolveRecipients does, so that the quota
// check and the delivery that follow find it resolved (routeCache).
func (d *Directory) LookupRecipient(ctx context.Context, address string) error {
	if _, err := d.ResolveRecipients(ctx, address); err != nil {
		return err
	}
	return ctx.Err()
}

// ResolveRecipients returns the users mail to address goes to, each once,
// with the keys that seal their mail: one for a user's address, a
// plus-address or a catch-all, one or more for an alias.
func (d *Directory) ResolveRecipients(ctx context.Context, address string) ([]*User, error) {
	index := d.c.MetaIndex()
	if users, ok := d.routes.get(index, address); ok {
		return users, nil
	}
	recs, err := d.resolveRecipients(ctx, address)
	if err != nil {
		return nil, err
	}
	users := make([]*User, 0, len(recs))
	for _, rec := range recs {
		var info userInfo
		if err := d.openJSON(d.keys.meta, seal.KindUserInfo, rec.ID, rec.Sealed, &info); err != nil {
			return nil, fmt.Errorf("open user record: %w", err)
		}
		u, err := d.user(rec, info)
		if err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	d.routes.put(index, address, users)
	return users, nil
}

// ResolveRecipient returns the one user an address delivers to, with the
// keys that seal its mail; an alias of several users is ErrSeveralUsers.
func (d *Directory) ResolveRecipient(ctx context.Context, address string) (*User, error) {
	users, err := d.ResolveRecipients(ctx, address)
	if err != nil {
		return nil, err
	}
	if len(users) != 1 {
		return nil, fmt.Errorf("resolve recipient: %d users: %w", len(users), ErrSeveralUsers)
	}
	return users[0], nil
}

func (d *Directory) resolveRecipients(ctx context.Context, address string) ([]schema.UserRecord, error) {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return nil, err
	}
	if _, _, err := d.findDomain(ctx, domain); err != nil {
		if errors.Is(err, schema.ErrNoSuchDomain) {
			return nil, schema.ErrNotLocal
		}
		return nil, err
	}
	users, found, err := d.routeExact(addr)
	if err != nil || found {
		return users, err
	}
	if cerr := d.c.CatchUpMeta(ctx); cerr != nil {
		// Without the leader this node cannot tell an unknown address
		// from one added a moment ago: a temporary answer.
		return nil, fmt.Errorf("recipient not known here and the directory's leader is unreachable (%v): %w", cerr, schema.ErrUnavailable)
	}
	var via string
	err = d.c.ReadMeta(func(r *raftstore.Reader) error {
		v := d.routeView(r)
		if users, found, err = v.exact(addr); err != nil || found {
			return err
		}
		local := addr[:strings.LastIndexByte(addr, '@')]
		if plus := strings.IndexByte(local, '+'); plus > 0 {
			if users, found, err = v.exact(local[:plus] + "@" + domain); err != nil || found {
				via = "plus-address"
				return err
			}
		}
		var target string
		if target, found, err = v.catchAll(domain); err != nil {
			return err
		}
		via = "catch-all"
		if !found && strings.EqualFold(local, "postmaster") && d.postmaster != "" && d.postmaster != addr {
			// RFC 5321 section 4.5.1: every domain has a postmaster.
			if users, found, err = v.exact(d.postmaster); err != nil || found {
				via = "postmaster"
				return err
			}
		}
		if !found {
			return nil
		}
		users = nil
		if rec, ok, err := v.user(target); err != nil || ok {
			if ok {
				users = append(users, rec)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("recipient: %w", schema.ErrNoSuchUser)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("recipient: its %s names no existing user: %w", via, schema.ErrNoSuchUser)
	}
	d.log.Debug("recipient resolved", "address", addr, "via", via, "users", len(users))
	return users, nil
}

// routeExact resolves an address that is a user's or an alias's on this
// node's replica (steps 1 and 2): found is false when it is neither.
func (d *Directory) routeExact(addr string) (users []schema.UserRecord, found bool, err error) {
	err = d.c.ReadMeta(func(r *raftstore.Reader) error {
		users, found, err = d.routeView(r).exact(addr)
		return err
	})
	if err == nil && found && len(users) == 0 {
		err = fmt.Errorf("recipient: an alias that names no existing user: %w", schema.ErrNoSuchUser)
	}
	return users, found, err
}

// routeView reads addresses, aliases and catch-alls in one read
// transaction of the meta replica.
type routeView struct {
	d       *Directory
	r       *raftstore.Reader
	domains map[string]*schema.ID // nil: not served
}

func (d *Directory) routeView(r *raftstore.Reader) *routeView {
	return &routeView{d: d, r: r, domains: map[string]*schema.ID{}}
}

// domainID returns the id of a served domain; ok is false for another.
func (v *routeView) domainID(domain string) (schema.ID, bool, error) {
	if id, seen := v.domains[domain]; seen {
		if id == nil {
			return schema.ID{}, false, nil
		}
		return *id, true, nil
	}
	rec, err := v.r.DomainByName(v.d.keys.domainNameKey(domain))
	if errors.Is(err, schema.ErrNoSuchDomain) {
		v.domains[domain] = nil
		return schema.ID{}, false, nil
	}
	if err != nil {
		return schema.ID{}, false, err
	}
	v.domains[domain] = &rec.ID
	return rec.ID, true, nil
}

// user returns the user record of an address.
func (v *routeView) user(addr string) (schema.UserRecord, bool, error) {
	rec, err := v.r.UserByName(v.d.keys.userNameKey(addr))
	if errors.Is(err, schema.ErrNoSuchUser) {
		return rec, false, nil
	}
	return rec, err == nil, err
}

// alias returns the alias at addr and its stored (sealed) value.
func (v *routeView) alias(addr string) (aliasInfo, []byte, bool, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return aliasInfo{}, nil, false, nil
	}
	dom, ok, err := v.domainID(addr[at+1:])
	if err != nil || !ok {
		return aliasInfo{}, nil, false, err
	}
	key := v.d.aliasKey(dom, addr)
	sealed := v.r.Setting(key)
	if sealed == nil {
		return aliasInfo{}, nil, false, nil
	}
	info, err := v.d.openAlias(dom, key, sealed)
	return info, sealed, err == nil, err
}

// catchAll returns the catch-all target of a served domain.
func (v *routeView) catchAll(domain string) (string, bool, error) {
	dom, ok, err := v.domainID(domain)
	if err != nil || !ok {
		return "", false, err
	}
	key := catchAllKey(dom)
	sealed := v.r.Setting(key)
	if sealed == nil {
		return "", false, nil
	}
	c, err := v.d.openCatchAll(dom, key, sealed)
	return c.Target, err == nil, err
}

// exact resolves addr as a user's or an alias's address (steps 1 and 2).
func (v *routeView) exact(addr string) ([]schema.UserRecord, bool, error) {
	var users []schema.UserRecord
	found, err := v.expand(addr, 0, map[string]bool{}, map[schema.ID]bool{}, &users)
	return users, found, err
}

// expand appends the users addr delivers to: itself if it is a user's
// address, else its alias's targets, followed up to MaxAliasDepth levels
// (an alias at a deeper level is not followed and gives no user). seen
// stops a loop that concurrent changes through two nodes could make,
// and a user reached twice is listed once. found reports whether addr
// is a user's or an alias's address at all.
func (v *routeView) expand(addr string, depth int, seen map[string]bool, ids map[schema.ID]bool, out *[]schema.UserRecord) (bool, error) {
	if seen[addr] {
		return true, nil
	}
	seen[addr] = true
	rec, ok, err := v.user(addr)
	if err != nil {
		return false, err
	}
	if ok {
		if !ids[rec.ID] {
			ids[rec.ID] = true
			*out = append(*out, rec)
		}
		return true, nil
	}
	info, _, ok, err := v.alias(addr)
	if err != nil || !ok {
		return false, err
	}
	if depth >= MaxAliasDepth {
		v.d.log.Warn("alias chain deeper than the limit: not followed further", "limit", MaxAliasDepth)
		return true, nil
	}
	for _, t := range info.Targets {
		if _, err := v.expand(t, depth+1, seen, ids, out); err != nil {
			return true, err
		}
	}
	return true, nil
}
