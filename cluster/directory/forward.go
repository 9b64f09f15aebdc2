package directory

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Forwarding: an alias may name addresses outside the cluster's domains
// (at most MaxForwardTargets of them). Mail that arrives on the MX port
// for it goes to those through the outbound queue, its envelope sender
// rewritten by SRS (srs.go) with one cluster-wide secret, kept sealed in
// the meta shard under settingSRSSecret. Forwarded mail and relayed
// bounces are queued in the alias's domain's own queue (see
// DomainQueueOwner), not in a user's.
const (
	settingSRSSecret = "srs_secret"
	// MaxForwardTargets is how many targets outside the cluster's
	// domains one alias may have: an operator's forwarding, not a
	// mailing list.
	MaxForwardTargets = 10
	srsSecretSize     = 32
)

// srsSecretInfo is the sealed value of the SRS secret.
type srsSecretInfo struct {
	Secret []byte `json:"s"`
}

// SRS returns the cluster's sender rewriter, creating its secret on
// first use (a compare-and-set in the meta shard, so every node ends up
// with the same one).
func (d *Directory) SRS(ctx context.Context) (*SRS, error) {
	d.srsMu.Lock()
	defer d.srsMu.Unlock()
	if d.srs != nil {
		return d.srs, nil
	}
	for range aliasRetries {
		raw, err := d.setting(settingSRSSecret)
		if err != nil {
			return nil, fmt.Errorf("read srs secret: %w", err)
		}
		if raw == nil {
			if err := d.c.CatchUpMeta(ctx); err != nil {
				return nil, fmt.Errorf("srs secret: %w: %v", schema.ErrUnavailable, err)
			}
			if raw, err = d.setting(settingSRSSecret); err != nil {
				return nil, fmt.Errorf("read srs secret: %w", err)
			}
		}
		if raw != nil {
			var info srsSecretInfo
			if err := d.openSetting(schema.ID{}, settingSRSSecret, raw, &info); err != nil {
				return nil, fmt.Errorf("open srs secret: %w", err)
			}
			s, err := NewSRS(info.Secret)
			if err != nil {
				return nil, err
			}
			d.srs = s
			return s, nil
		}
		info := srsSecretInfo{Secret: make([]byte, srsSecretSize)}
		if _, err := rand.Read(info.Secret); err != nil {
			return nil, fmt.Errorf("new srs secret: %w", err)
		}
		sealed, err := d.sealSetting(schema.ID{}, settingSRSSecret, info)
		if err != nil {
			return nil, fmt.Errorf("seal srs secret: %w", err)
		}
		_, err = d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: settingSRSSecret, OldAbsent: true, New: sealed})
		if err != nil && !errors.Is(err, schema.ErrConflict) {
			return nil, fmt.Errorf("store srs secret: %w", err)
		}
		// Created here or by another node meanwhile: read it back.
	}
	return nil, fmt.Errorf("srs secret: %w", schema.ErrUnavailable)
}

// ForwardTargets returns the addresses outside the cluster's domains
// that mail to address goes to: the targets of its alias (or, for a
// plus-address, of its base's alias) and of the aliases it names, up to
// MaxAliasDepth levels, on this node's meta replica (the MX port asks
// after LookupRecipient, which catches up with the meta leader on a
// miss). None is schema.ErrNoSuchUser.
func (d *Directory) ForwardTargets(ctx context.Context, address string) ([]string, error) {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return nil, err
	}
	var out []string
	lookup := func() error {
		return d.c.ReadMeta(func(r *raftstore.Reader) error {
			v := d.routeView(r)
			if _, ok, err := v.domainID(domain); err != nil || !ok {
				return err
			}
			if _, ok, err := v.user(addr); err != nil || ok {
				return err // a user's address forwards nowhere
			}
			if _, _, ok, err := v.alias(addr); err != nil || ok {
				if ok {
					err = v.externals(addr, 0, map[string]bool{}, &out)
				}
				return err
			}
			local := addr[:strings.LastIndexByte(addr, '@')]
			if plus := strings.IndexByte(local, '+'); plus > 0 {
				return v.externals(local[:plus]+"@"+domain, 0, map[string]bool{}, &out)
			}
			return nil
		})
	}
	if err := lookup(); err != nil {
		return nil, fmt.Errorf("forward targets: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no forwarding: %w", schema.ErrNoSuchUser)
	}
	return out, ctx.Err()
}

// externals appends the targets outside the served domains that the
// alias at addr reaches (as expand does for users).
func (v *routeView) externals(addr string, depth int, seen map[string]bool, out *[]string) error {
	if seen[addr] {
		return nil
	}
	seen[addr] = true
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return nil
	}
	if _, ok, err := v.domainID(addr[at+1:]); err != nil || !ok {
		if err == nil && depth > 0 {
			*out = append(*out, addr)
		}
		return err
	}
	info, _, ok, err := v.alias(addr)
	if err != nil || !ok || depth >= MaxAliasDepth {
		return err
	}
	for _, t := range info.Targets {
		if err := v.externals(t, depth+1, seen, out); err != nil {
			return err
		}
	}
	return nil
}

// DomainQueueOwner returns the owner of a served domain's own outbound
// queue: forwarded mail and relayed bounces of the domain's aliases. Its
// ID is the domain's, its address the domain's postmaster, its keys the
// cluster's spool keys; Shard is left to the mail store (which knows how
// many shards there are). schema.ErrNoSuchDomain for another domain.
func (d *Directory) DomainQueueOwner(ctx context.Context, domain string) (*User, error) {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return nil, err
	}
	rec, info, err := d.findDomain(ctx, dn)
	if err != nil {
		return nil, err
	}
	return d.domainOwner(rec.ID, info.Name), nil
}

// DomainQueueOwnerByID is DomainQueueOwner by the domain's id (the User
// of its queue entries); schema.ErrNoSuchDomain when no domain has it.
func (d *Directory) DomainQueueOwnerByID(id schema.ID) (*User, error) {
	_, info, err := d.domainByID(id)
	if err != nil {
		return nil, err
	}
	return d.domainOwner(id, info.Name), nil
}

func (d *Directory) domainOwner(id schema.ID, name string) *User {
	return &User{ID: id, Address: "postmaster@" + name, Keys: &UserKeys{ring: d.keys.spool}}
}
