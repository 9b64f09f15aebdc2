package directory

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Aliases and catch-alls are meta settings, sealed like user records:
//
//	alias/<domain id>/<keyed hash of the address>  -> sealed aliasInfo
//	catch_all/<domain id>                          -> sealed catchAllInfo
//
// The key names only opaque ids and a keyed hash, so no address is
// readable at rest; the AAD binds each value to its key and domain, so a
// value cannot be moved to another alias. The domain id in the key lets a
// domain's aliases be listed and deleted with it without opening the
// others.
//
// Aliases may name aliases. Creating or extending an alias is refused
// when it would make a loop or a chain of more than MaxAliasDepth
// aliases; delivery follows MaxAliasDepth levels at most and never loops
// (changes made at the same instant through two nodes could still make
// one).
const (
	aliasPrefix    = "alias/"
	catchAllPrefix = "catch_all/"
	// MaxAliasDepth is how many aliases deep delivery follows an alias
	// naming aliases (the recipient's own alias counts as one).
	MaxAliasDepth = 5
	// MaxAliasTargets is how many targets one alias may have.
	MaxAliasTargets = 100
	// aliasRetries bounds the compare-and-set attempts of one change.
	aliasRetries = 5
)

// Errors of alias changes, for callers that branch on them.
var (
	// ErrNoSuchAlias: no alias has the address (or the target to remove).
	ErrNoSuchAlias = errors.New("no such alias")
	// ErrNeedsOutbound: a catch-all target outside the cluster's domains
	// (a catch-all delivers to one user; forwarding is for aliases). It
	// is also schema.ErrInvalid.
	ErrNeedsOutbound = errors.New("a catch-all delivers to a user of the cluster; to forward outside it, use an alias")
)

// aliasInfo is the sealed value of an alias.
type aliasInfo struct {
	Address string   `json:"a"`
	Targets []string `json:"t"`
	Created int64    `json:"c"`
}

// catchAllInfo is the sealed value of a domain's catch-all.
type catchAllInfo struct {
	Target string `json:"t"`
}

// Alias is an alias, or a domain's catch-all, as the admin interface
// lists it.
type Alias struct {
	// Address is the alias's address, or "@domain" for a catch-all.
	Address string   `json:"address"`
	Targets []string `json:"targets"`
	// CatchAll marks a domain's catch-all: mail to any local part of the
	// domain that is neither a user, an alias nor a plus-address of one.
	CatchAll bool `json:"catch_all,omitempty"`
}

func aliasDomainPrefix(dom schema.ID) string { return aliasPrefix + dom.String() + "/" }

func catchAllKey(dom schema.ID) string { return catchAllPrefix + dom.String() }

// aliasKey is the setting key of the alias at addr in domain dom.
func (d *Directory) aliasKey(dom schema.ID, addr string) string {
	nk := d.keys.index.Index("alias:" + addr)
	return aliasDomainPrefix(dom) + hex.EncodeToString(nk[:])
}

func (d *Directory) sealSetting(dom schema.ID, key string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return d.sealer.Seal(d.keys.meta, seal.KindSetting, dom[:], []byte(key), b)
}

func (d *Directory) openSetting(dom schema.ID, key string, sealed []byte, v any) error {
	b, err := d.sealer.Open(d.keys.meta, seal.KindSetting, dom[:], []byte(key), sealed)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (d *Directory) openAlias(dom schema.ID, key string, sealed []byte) (aliasInfo, error) {
	var a aliasInfo
	if err := d.openSetting(dom, key, sealed, &a); err != nil {
		return a, fmt.Errorf("open alias record: %w", err)
	}
	return a, nil
}

func (d *Directory) openCatchAll(dom schema.ID, key string, sealed []byte) (catchAllInfo, error) {
	var c catchAllInfo
	if err := d.openSetting(dom, key, sealed, &c); err != nil {
		return c, fmt.Errorf("open catch-all record: %w", err)
	}
	return c, nil
}

// canonicalTargets validates and lower-cases targets, dropping repeats.
func canonicalTargets(targets []string) ([]string, error) {
	var out []string
	for _, t := range targets {
		if strings.TrimSpace(t) == "" {
			continue
		}
		a, _, err := schema.CanonicalAddress(t)
		if err != nil {
			return nil, fmt.Errorf("target %.300q: %w", t, err)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// AddAlias makes address, in a served domain, deliver to targets: users
// or other aliases of the cluster's domains, or addresses outside them
// (forwarding). An existing alias keeps its
// targets and gains the new ones. It returns the alias as it now is.
//
// A target in a domain the cluster does not serve is a forwarding: mail
// arriving on the MX port goes there through the outbound queue with
// its sender rewritten by SRS (forward.go).
//
// Refused: an address that is a user's (schema.ErrUserExists), a target
// in a served domain that is neither a user nor an alias
// (schema.ErrNoSuchUser), more than MaxForwardTargets targets outside
// the served domains, and a change that would make an alias loop or a
// chain deeper than MaxAliasDepth (schema.ErrInvalid).
func (d *Directory) AddAlias(ctx context.Context, address string, targets []string) (Alias, error) {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return Alias{}, fmt.Errorf("add alias: %w", err)
	}
	add, err := canonicalTargets(targets)
	if err != nil {
		return Alias{}, fmt.Errorf("add alias %s: %w", addr, err)
	}
	if len(add) == 0 {
		return Alias{}, fmt.Errorf("add alias %s: no target: %w", addr, schema.ErrInvalid)
	}
	dom, _, err := d.findDomain(ctx, domain)
	if err != nil {
		return Alias{}, fmt.Errorf("add alias %s: domain %s: %w", addr, domain, err)
	}
	var out Alias
	err = d.changeAlias(ctx, dom.ID, addr, func(v *routeView, cur *aliasInfo) error {
		if _, ok, err := v.user(addr); err != nil || ok {
			if ok {
				err = fmt.Errorf("%s is a user's address; an alias may not shadow it: %w", addr, schema.ErrUserExists)
			}
			return err
		}
		for _, t := range add {
			if err := v.checkTarget(addr, t); err != nil {
				return err
			}
			if !slices.Contains(cur.Targets, t) {
				cur.Targets = append(cur.Targets, t)
			}
		}
		if len(cur.Targets) > MaxAliasTargets {
			return fmt.Errorf("%d targets, more than the %d an alias may have: %w", len(cur.Targets), MaxAliasTargets, schema.ErrInvalid)
		}
		if n, err := v.forwardCount(cur.Targets); err != nil || n > MaxForwardTargets {
			if err == nil {
				err = fmt.Errorf("%d targets outside the cluster's domains, more than the %d an alias may forward to: %w", n, MaxForwardTargets, schema.ErrInvalid)
			}
			return err
		}
		if cur.Created == 0 {
			cur.Address, cur.Created = addr, d.now().Unix()
		}
		if err := d.checkAliasGraph(v, addr, cur.Targets); err != nil {
			return err
		}
		out = Alias{Address: addr, Targets: slices.Clone(cur.Targets)}
		return nil
	})
	if err != nil {
		return Alias{}, fmt.Errorf("add alias: %w", err) // no address: an internal error is logged
	}
	d.log.Info("alias added", "targets", len(out.Targets))
	d.log.Debug("alias added", "address", addr, "targets", out.Targets)
	return out, nil
}

// checkTarget refuses a target of alias addr that is the alias itself,
// or in a served domain and neither a user nor an alias. A target
// outside the served domains is a forwarding (see forward.go).
func (v *routeView) checkTarget(addr, t string) error {
	if t == addr {
		return fmt.Errorf("target %s is the alias itself (a loop): %w", t, schema.ErrInvalid)
	}
	if _, ok, err := v.domainID(t[strings.LastIndexByte(t, '@')+1:]); err != nil || !ok {
		return err
	}
	if _, ok, err := v.user(t); err != nil || ok {
		return err
	}
	if _, _, ok, err := v.alias(t); err != nil || ok {
		return err
	}
	return fmt.Errorf("target %s is neither a user nor an alias: %w", t, schema.ErrNoSuchUser)
}

// forwardCount counts the targets outside the served domains.
func (v *routeView) forwardCount(targets []string) (int, error) {
	n := 0
	for _, t := range targets {
		_, ok, err := v.domainID(t[strings.LastIndexByte(t, '@')+1:])
		if err != nil {
			return 0, err
		}
		if !ok {
			n++
		}
	}
	return n, nil
}

// checkAliasGraph refuses targets for the alias addr that would make a
// loop through it, or a chain of aliases through it longer than
// MaxAliasDepth: the aliases that lead to addr, addr, and the aliases
// below it.
func (d *Directory) checkAliasGraph(v *routeView, addr string, targets []string) error {
	graph, err := d.aliasGraph(v)
	if err != nil {
		return err
	}
	graph[addr] = targets
	// down: levels from addr (itself 1) to the deepest alias below it,
	// and a loop back to it.
	levels := map[string]int{}
	var stack []string
	var down func(a string) (int, error)
	down = func(a string) (int, error) {
		ts, ok := graph[a]
		if !ok {
			return 0, nil // a user, or nothing
		}
		if n, ok := levels[a]; ok {
			return n, nil
		}
		if slices.Contains(stack, a) {
			if a == addr {
				return 0, fmt.Errorf("alias loop %s -> %s: %w", strings.Join(stack, " -> "), a, schema.ErrInvalid)
			}
			return 0, nil // a loop elsewhere: not this change's
		}
		stack = append(stack, a)
		most := 0
		for _, t := range ts {
			n, err := down(t)
			if err != nil {
				return 0, err
			}
			most = max(most, n)
		}
		stack = stack[:len(stack)-1]
		levels[a] = most + 1
		return most + 1, nil
	}
	below, err := down(addr)
	if err != nil {
		return err
	}
	// up: the longest chain of aliases naming addr.
	parents := map[string][]string{}
	for a, ts := range graph {
		for _, t := range ts {
			parents[t] = append(parents[t], a)
		}
	}
	heights := map[string]int{}
	onPath := map[string]bool{addr: true}
	var up func(a string) int
	up = func(a string) int {
		if n, ok := heights[a]; ok {
			return n
		}
		most := 0
		for _, p := range parents[a] {
			if onPath[p] {
				continue
			}
			onPath[p] = true
			most = max(most, 1+up(p))
			delete(onPath, p)
		}
		heights[a] = most
		return most
	}
	above := up(addr)
	if above+below > MaxAliasDepth {
		return fmt.Errorf("a chain of %d aliases through %s, more than the %d delivery follows: %w", above+below, addr, MaxAliasDepth, schema.ErrInvalid)
	}
	return nil
}

// aliasGraph returns every alias of the cluster with its targets.
func (d *Directory) aliasGraph(v *routeView) (map[string][]string, error) {
	graph := map[string][]string{}
	for key, sealed := range v.r.Settings(aliasPrefix) {
		dom, ok := parseAliasKey(key)
		if !ok {
			continue
		}
		a, err := d.openAlias(dom, key, sealed)
		if err != nil {
			return nil, err
		}
		graph[a.Address] = a.Targets
	}
	return graph, nil
}

// parseAliasKey returns the domain id of an alias setting key.
func parseAliasKey(key string) (schema.ID, bool) {
	var id schema.ID
	rest, ok := strings.CutPrefix(key, aliasPrefix)
	if !ok {
		return id, false
	}
	hexID, _, ok := strings.Cut(rest, "/")
	b, err := hex.DecodeString(hexID)
	if !ok || err != nil || len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// changeAlias applies change to the alias at addr (a zero aliasInfo when
// there is none; no targets left deletes it) after catching up with the
// meta leader, and stores it with a compare-and-set, read again and
// retried when another node changed it meanwhile. Changes through this
// node are serialised.
func (d *Directory) changeAlias(ctx context.Context, dom schema.ID, addr string, change func(*routeView, *aliasInfo) error) error {
	d.aliasMu.Lock()
	defer d.aliasMu.Unlock()
	key := d.aliasKey(dom, addr)
	for range aliasRetries {
		if err := d.c.CatchUpMeta(ctx); err != nil {
			return fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
		}
		var old, sealed []byte
		err := d.c.ViewMeta(func(r *raftstore.Reader) error {
			v := d.routeView(r)
			cur, raw, _, err := v.alias(addr)
			if err != nil {
				return err
			}
			old = raw
			if err := change(v, &cur); err != nil {
				return err
			}
			if len(cur.Targets) > 0 {
				sealed, err = d.sealSetting(dom, key, cur)
			}
			return err
		})
		if err != nil {
			return err
		}
		_, err = d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: key, OldAbsent: old == nil, Old: old, New: sealed})
		if !errors.Is(err, schema.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("changed through other nodes %d times meanwhile: %w", aliasRetries, schema.ErrUnavailable)
}

// DeleteAlias removes targets from the alias at address, or the whole
// alias when targets is empty; an alias left without targets is deleted.
// Mail to it is then refused (or goes to the domain's catch-all).
func (d *Directory) DeleteAlias(ctx context.Context, address string, targets []string) error {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	drop, err := canonicalTargets(targets)
	if err != nil {
		return fmt.Errorf("delete alias %s: %w", addr, err)
	}
	dom, _, err := d.findDomain(ctx, domain)
	if err != nil {
		return fmt.Errorf("delete alias %s: domain %s: %w", addr, domain, err)
	}
	left := 0
	err = d.changeAlias(ctx, dom.ID, addr, func(_ *routeView, cur *aliasInfo) error {
		if len(cur.Targets) == 0 {
			return fmt.Errorf("%s: %w", addr, ErrNoSuchAlias)
		}
		if len(drop) == 0 {
			cur.Targets = nil
			return nil
		}
		for _, t := range drop {
			i := slices.Index(cur.Targets, t)
			if i < 0 {
				return fmt.Errorf("%s is not a target of %s: %w", t, addr, ErrNoSuchAlias)
			}
			cur.Targets = slices.Delete(cur.Targets, i, i+1)
		}
		left = len(cur.Targets)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete alias: %w", err) // no address: an internal error is logged
	}
	d.log.Info("alias changed", "targets_left", left)
	d.log.Debug("alias changed", "address", addr, "targets_left", left)
	return nil
}

// Aliases lists the aliases and catch-alls of a domain ("" for every
// domain), as the meta leader has them, sorted by address (a catch-all,
// "@domain", first in its domain).
func (d *Directory) Aliases(ctx context.Context, domain string) ([]Alias, error) {
	_ = d.c.CatchUpMeta(ctx) // best effort: else this node's view
	aprefix, cprefix := aliasPrefix, catchAllPrefix
	if domain != "" {
		dn, err := schema.CanonicalDomain(domain)
		if err != nil {
			return nil, fmt.Errorf("list aliases: %w", err)
		}
		rec, _, err := d.domainByName(dn)
		if err != nil {
			return nil, fmt.Errorf("list aliases: domain %s: %w", dn, err)
		}
		aprefix, cprefix = aliasDomainPrefix(rec.ID), catchAllKey(rec.ID)
	}
	var aliases, catchAlls map[string][]byte
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		aliases, catchAlls = r.Settings(aprefix), r.Settings(cprefix)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := []Alias{}
	for key, sealed := range aliases {
		dom, ok := parseAliasKey(key)
		if !ok {
			continue
		}
		a, err := d.openAlias(dom, key, sealed)
		if err != nil {
			return nil, err
		}
		out = append(out, Alias{Address: a.Address, Targets: a.Targets})
	}
	for key, sealed := range catchAlls {
		dom, ok := parseCatchAllKey(key)
		if !ok {
			continue
		}
		c, err := d.openCatchAll(dom, key, sealed)
		if err != nil {
			return nil, err
		}
		_, info, err := d.domainByID(dom)
		if errors.Is(err, schema.ErrNoSuchDomain) {
			continue // left behind by a deleted domain
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Alias{Address: "@" + info.Name, Targets: []string{c.Target}, CatchAll: true})
	}
	sort.Slice(out, func(i, j int) bool { return aliasSortKey(out[i]) < aliasSortKey(out[j]) })
	return out, ctx.Err()
}

// aliasSortKey orders by domain, then local part (a catch-all's is "").
func aliasSortKey(a Alias) string {
	at := strings.LastIndexByte(a.Address, '@')
	return a.Address[at+1:] + "\x00" + a.Address[:at]
}

// parseCatchAllKey returns the domain id of a catch-all setting key.
func parseCatchAllKey(key string) (schema.ID, bool) {
	var id schema.ID
	b, err := hex.DecodeString(strings.TrimPrefix(key, catchAllPrefix))
	if err != nil || len(b) != len(id) || !strings.HasPrefix(key, catchAllPrefix) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// SetCatchAll makes target, a user of the cluster, receive the mail of a
// domain's unknown local parts (after users, aliases and plus-addresses
// of either); "" switches the catch-all off. A target outside the
// cluster's domains is ErrNeedsOutbound, one that is not a user
// schema.ErrNoSuchUser.
func (d *Directory) SetCatchAll(ctx context.Context, domain, target string) error {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return fmt.Errorf("set catch-all: %w", err)
	}
	dom, _, err := d.findDomain(ctx, dn)
	if err != nil {
		return fmt.Errorf("set catch-all of %s: %w", dn, err)
	}
	key := catchAllKey(dom.ID)
	var sealed []byte
	if target != "" {
		t, tdomain, err := schema.CanonicalAddress(target)
		if err != nil {
			return fmt.Errorf("set catch-all of %s: target: %w", dn, err)
		}
		if _, _, err := d.findDomain(ctx, tdomain); err != nil {
			if errors.Is(err, schema.ErrNoSuchDomain) {
				err = fmt.Errorf("%w: %w", ErrNeedsOutbound, schema.ErrInvalid)
			}
			return fmt.Errorf("set catch-all of %s: target %s: %w", dn, t, err)
		}
		if _, _, err := d.lookupUser(ctx, t); err != nil {
			if errors.Is(err, schema.ErrNoSuchUser) {
				err = fmt.Errorf("not a user (a catch-all delivers to one user): %w", err)
			}
			return fmt.Errorf("set catch-all of %s: target %s: %w", dn, t, err)
		}
		if sealed, err = d.sealSetting(dom.ID, key, catchAllInfo{Target: t}); err != nil {
			return err
		}
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: key, Value: sealed}); err != nil {
		return fmt.Errorf("set catch-all: %w", err) // no name: an internal error is logged
	}
	d.log.Info("catch-all changed", "on", target != "")
	return nil
}

// hasAlias reports whether addr, in domain dom, is an alias's address on
// this node's replica.
func (d *Directory) hasAlias(dom schema.ID, addr string) (bool, error) {
	var found bool
	err := d.c.ReadMeta(func(r *raftstore.Reader) error {
		found = r.Setting(d.aliasKey(dom, addr)) != nil
		return nil
	})
	return found, err
}

// forgetDomainRoutes deletes the aliases and the catch-all of a deleted
// domain (best effort: what is left names a domain id that no longer
// exists, and holds only sealed values).
func (d *Directory) forgetDomainRoutes(ctx context.Context, dom schema.ID) {
	keys := []string{catchAllKey(dom)}
	_ = d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings(aliasDomainPrefix(dom)) {
			keys = append(keys, k)
		}
		return nil
	})
	for _, k := range keys {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: k}); err != nil {
			d.log.Warn("forget the aliases of a deleted domain", "err", err)
			return
		}
	}
}
