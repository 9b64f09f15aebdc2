package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Domain is a served domain as the admin interface lists it.
type Domain struct {
	Name    string  `json:"name"`
	KeyMode KeyMode `json:"key_mode"`
	Users   int     `json:"users"`
}

// domainInfo is the sealed part of a domain record.
type domainInfo struct {
	Name string  `json:"n"`
	Mode KeyMode `json:"m"`
}

// userInfo is the sealed part of a user record.
type userInfo struct {
	Address  string `json:"a"`
	Password string `json:"p"` // argon2id PHC string
	Created  int64  `json:"c"`
}

var keyObject = []byte("key")

func (c *Cluster) sealJSON(kr seal.Keyring, kind seal.Kind, owner schema.ID, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return c.sealer.Seal(kr, kind, owner[:], nil, b)
}

func (c *Cluster) openJSON(kr seal.Keyring, kind seal.Kind, owner schema.ID, sealed []byte, v any) error {
	b, err := c.sealer.Open(kr, kind, owner[:], nil, sealed)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (c *Cluster) domainByName(name string) (schema.DomainRecord, domainInfo, error) {
	var rec schema.DomainRecord
	var info domainInfo
	err := c.meta.View(func(r *raftstore.Reader) (err error) {
		rec, err = r.DomainByName(c.keys.domainNameKey(name))
		return err
	})
	if err != nil {
		return rec, info, err
	}
	if err := c.openJSON(c.keys.meta, seal.KindDomainInfo, rec.ID, rec.Sealed, &info); err != nil {
		return rec, info, fmt.Errorf("open domain record: %w", err)
	}
	return rec, info, nil
}

func (c *Cluster) domainByID(id schema.ID) (schema.DomainRecord, domainInfo, error) {
	var rec schema.DomainRecord
	var info domainInfo
	err := c.meta.View(func(r *raftstore.Reader) (err error) { rec, err = r.Domain(id); return err })
	if err != nil {
		return rec, info, err
	}
	if err := c.openJSON(c.keys.meta, seal.KindDomainInfo, rec.ID, rec.Sealed, &info); err != nil {
		return rec, info, fmt.Errorf("open domain record: %w", err)
	}
	return rec, info, nil
}

func (c *Cluster) userByAddress(address string) (schema.UserRecord, userInfo, error) {
	var rec schema.UserRecord
	var info userInfo
	err := c.meta.View(func(r *raftstore.Reader) (err error) {
		rec, err = r.UserByName(c.keys.userNameKey(address))
		return err
	})
	if err != nil {
		return rec, info, err
	}
	if err := c.openJSON(c.keys.meta, seal.KindUserInfo, rec.ID, rec.Sealed, &info); err != nil {
		return rec, info, fmt.Errorf("open user record: %w", err)
	}
	return rec, info, nil
}

// domainKeys unwraps a domain's keys.
func (c *Cluster) domainKeys(d schema.DomainRecord) ([]seal.Key, error) {
	plain, err := c.sealer.Open(c.keys.master, seal.KindDomainKey, d.ID[:], keyObject, d.WrappedKey)
	if err != nil {
		return nil, fmt.Errorf("unwrap domain key: %w", err)
	}
	return decodeKeys(plain)
}

// userKeysFor returns the keys that read and write a user's mail,
// following the domain's key mode.
func (c *Cluster) userKeysFor(u schema.UserRecord) (*userKeys, error) {
	d, info, err := c.domainByID(u.Domain)
	if err != nil {
		return nil, err
	}
	var keys []seal.Key
	switch info.Mode {
	case KeyModeShared:
		keys, err = c.clusterKey()
	case KeyModeDomain, KeyModeUser:
		var dk []seal.Key
		if dk, err = c.domainKeys(d); err != nil {
			break
		}
		if info.Mode == KeyModeDomain {
			keys = dk
			break
		}
		var plain []byte
		plain, err = c.sealer.Open(seal.NewStatic(dk...), seal.KindUserKey, u.ID[:], keyObject, u.WrappedKey)
		if err != nil {
			return nil, fmt.Errorf("unwrap user key: %w", err)
		}
		keys, err = decodeKeys(plain)
	default:
		err = fmt.Errorf("domain key mode %q: %w", info.Mode, schema.ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	return newUserKeys(u.ID, keys), nil
}

// AddDomain starts serving a domain. Mode "" means KeyModeUser.
func (c *Cluster) AddDomain(ctx context.Context, name string, mode KeyMode) error {
	d, err := canonicalDomain(name)
	if err != nil {
		return err
	}
	if mode == "" {
		mode = KeyModeUser
	}
	if !mode.Valid() {
		return fmt.Errorf("key mode %q (want shared, domain or user): %w", mode, schema.ErrInvalid)
	}
	rec := schema.DomainRecord{ID: schema.NewID(), NameKey: c.keys.domainNameKey(d)}
	if rec.Sealed, err = c.sealJSON(c.keys.meta, seal.KindDomainInfo, rec.ID, domainInfo{Name: d, Mode: mode}); err != nil {
		return err
	}
	if mode != KeyModeShared {
		rec.WrappedKey, err = c.sealer.Seal(c.keys.master, seal.KindDomainKey, rec.ID[:], keyObject, encodeKeys([]seal.Key{seal.NewKey(1)}))
		if err != nil {
			return err
		}
	}
	if _, err := c.meta.Apply(ctx, c.command(&schema.PutDomain{Record: rec})); err != nil {
		return fmt.Errorf("add domain %s: %w", d, err)
	}
	c.log.Info("domain added", "key_mode", mode)
	return nil
}

// DeleteDomain stops serving a domain that has no users left.
func (c *Cluster) DeleteDomain(ctx context.Context, name string) error {
	d, err := canonicalDomain(name)
	if err != nil {
		return err
	}
	rec, _, err := c.domainByName(d)
	if err != nil {
		return fmt.Errorf("delete domain %s: %w", d, err)
	}
	if _, err := c.meta.Apply(ctx, c.command(&schema.DeleteDomain{Domain: rec.ID})); err != nil {
		if errors.Is(err, schema.ErrCannotDelete) {
			return fmt.Errorf("delete domain %s: it still has users: %w", d, err)
		}
		return fmt.Errorf("delete domain %s: %w", d, err)
	}
	return nil
}

// Domains lists the served domains with their user counts.
func (c *Cluster) Domains(ctx context.Context) ([]Domain, error) {
	var doms []schema.DomainRecord
	var users []schema.UserRecord
	err := c.meta.View(func(r *raftstore.Reader) (err error) {
		if doms, err = r.Domains(); err != nil {
			return err
		}
		users, err = r.Users()
		return err
	})
	if err != nil {
		return nil, err
	}
	count := map[schema.ID]int{}
	for _, u := range users {
		count[u.Domain]++
	}
	out := make([]Domain, 0, len(doms))
	for _, d := range doms {
		var info domainInfo
		if err := c.openJSON(c.keys.meta, seal.KindDomainInfo, d.ID, d.Sealed, &info); err != nil {
			return nil, fmt.Errorf("open domain record: %w", err)
		}
		out = append(out, Domain{Name: info.Name, KeyMode: info.Mode, Users: count[d.ID]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, ctx.Err()
}

// AddUser creates an account with the default mailboxes.
func (c *Cluster) AddUser(ctx context.Context, address, password string) error {
	addr, domain, err := canonicalAddress(address)
	if err != nil {
		return err
	}
	if err := validatePassword(password); err != nil {
		return err
	}
	dom, dinfo, err := c.domainByName(domain)
	if err != nil {
		return fmt.Errorf("add user: domain %s: %w", domain, err)
	}
	if _, _, err := c.userByAddress(addr); err == nil {
		return fmt.Errorf("add user: %w", schema.ErrUserExists)
	}
	hash, err := c.hash.hash(ctx, password)
	if err != nil {
		return err
	}
	rec := schema.UserRecord{ID: schema.NewID(), NameKey: c.keys.userNameKey(addr), Domain: dom.ID}
	rec.Shard = c.placeUser(rec.ID)
	if dinfo.Mode == KeyModeUser {
		dk, err := c.domainKeys(dom)
		if err != nil {
			return err
		}
		rec.WrappedKey, err = c.sealer.Seal(seal.NewStatic(dk...), seal.KindUserKey, rec.ID[:], keyObject, encodeKeys([]seal.Key{seal.NewKey(1)}))
		if err != nil {
			return err
		}
	}
	rec.Sealed, err = c.sealJSON(c.keys.meta, seal.KindUserInfo, rec.ID, userInfo{Address: addr, Password: hash, Created: time.Now().Unix()})
	if err != nil {
		return err
	}
	keys, err := c.userKeysFor(rec)
	if err != nil {
		return err
	}
	shard, err := c.mailShard(rec.Shard)
	if err != nil {
		return err
	}
	init := &schema.InitUser{User: rec.ID}
	for _, m := range schema.DefaultMailboxes {
		nm := schema.NewMailbox{ID: schema.NewID(), NameKey: keys.mailboxNameKey(m.Name), Inbox: m.Name == schema.InboxName}
		if nm.Sealed, err = c.sealMailbox(keys, rec.ID, nm.ID, mailboxAttrs{Name: m.Name, SpecialUse: m.SpecialUse, Subscribed: true}); err != nil {
			return err
		}
		init.Mailboxes = append(init.Mailboxes, nm)
	}
	// Mailboxes first, then the directory entry that makes the user exist:
	// a crash in between leaves only unreachable, sealed state.
	if _, err := shard.Apply(ctx, c.command(init)); err != nil {
		return fmt.Errorf("add user: create mailboxes: %w", err)
	}
	if _, err := c.meta.Apply(ctx, c.command(&schema.PutUser{Record: rec, Create: true})); err != nil {
		if _, rbErr := shard.Apply(context.WithoutCancel(ctx), c.command(&schema.DeleteUserData{User: rec.ID})); rbErr != nil {
			c.log.Error("roll back mailboxes of a user that was not created", "err", rbErr)
		}
		return fmt.Errorf("add user: %w", err)
	}
	c.log.Info("user added", "shard", rec.Shard)
	return nil
}

// DeleteUser deletes an account and its mail. In "user" key mode its key
// goes with it, so copies of its mail elsewhere become unreadable.
func (c *Cluster) DeleteUser(ctx context.Context, address string) error {
	addr, _, err := canonicalAddress(address)
	if err != nil {
		return err
	}
	rec, _, err := c.userByAddress(addr)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	shard, err := c.mailShard(rec.Shard)
	if err != nil {
		return err
	}
	if _, err := shard.Apply(ctx, c.command(&schema.DeleteUserData{User: rec.ID})); err != nil {
		return fmt.Errorf("delete user: mail: %w", err)
	}
	if _, err := c.meta.Apply(ctx, c.command(&schema.DeleteUser{User: rec.ID})); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	c.auth.forget(rec.ID)
	c.log.Info("user deleted", "shard", rec.Shard)
	return nil
}

// SetPassword replaces a user's password.
func (c *Cluster) SetPassword(ctx context.Context, address, password string) error {
	addr, _, err := canonicalAddress(address)
	if err != nil {
		return err
	}
	if err := validatePassword(password); err != nil {
		return err
	}
	rec, info, err := c.userByAddress(addr)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if info.Password, err = c.hash.hash(ctx, password); err != nil {
		return err
	}
	if rec.Sealed, err = c.sealJSON(c.keys.meta, seal.KindUserInfo, rec.ID, info); err != nil {
		return err
	}
	if _, err := c.meta.Apply(ctx, c.command(&schema.PutUser{Record: rec})); err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	c.auth.forget(rec.ID)
	return nil
}

// Users lists the addresses of a domain's users ("" for all domains).
func (c *Cluster) Users(ctx context.Context, domain string) ([]string, error) {
	var filter schema.ID
	if domain != "" {
		d, err := canonicalDomain(domain)
		if err != nil {
			return nil, err
		}
		rec, _, err := c.domainByName(d)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		filter = rec.ID
	}
	var users []schema.UserRecord
	if err := c.meta.View(func(r *raftstore.Reader) (err error) { users, err = r.Users(); return err }); err != nil {
		return nil, err
	}
	var out []string
	for _, u := range users {
		if !filter.IsZero() && u.Domain != filter {
			continue
		}
		var info userInfo
		if err := c.openJSON(c.keys.meta, seal.KindUserInfo, u.ID, u.Sealed, &info); err != nil {
			return nil, fmt.Errorf("open user record: %w", err)
		}
		out = append(out, info.Address)
	}
	sort.Strings(out)
	return out, ctx.Err()
}

// Authenticate checks a login. Unknown users and wrong passwords take the
// same time and give the same schema.ErrAuthFailed.
func (c *Cluster) Authenticate(ctx context.Context, username, password string) (*Account, error) {
	addr, _, err := canonicalAddress(username)
	var rec schema.UserRecord
	var info userInfo
	if err == nil {
		rec, info, err = c.userByAddress(addr)
	}
	if err != nil && !errors.Is(err, schema.ErrNoSuchUser) && !errors.Is(err, schema.ErrInvalid) {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if err != nil {
		if _, verr := c.hash.verify(ctx, "", password); verr != nil {
			return nil, verr
		}
		return nil, schema.ErrAuthFailed
	}
	if !c.auth.check(rec, addr, password) {
		ok, err := c.hash.verify(ctx, info.Password, password)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, schema.ErrAuthFailed
		}
		c.auth.remember(rec, addr, password)
	}
	return c.newAccount(rec, info.Address)
}

// LookupRecipient reports whether address is a local mailbox. An address
// with a "+detail" suffix in its local part reaches the base address when
// no account has the full address.
func (c *Cluster) LookupRecipient(ctx context.Context, address string) error {
	_, err := c.resolveRecipient(address)
	if err != nil {
		return err
	}
	return ctx.Err()
}

func (c *Cluster) resolveRecipient(address string) (schema.UserRecord, error) {
	addr, domain, err := canonicalAddress(address)
	if err != nil {
		return schema.UserRecord{}, err
	}
	if _, _, err := c.domainByName(domain); err != nil {
		if errors.Is(err, schema.ErrNoSuchDomain) {
			return schema.UserRecord{}, schema.ErrNotLocal
		}
		return schema.UserRecord{}, err
	}
	rec, _, err := c.userByAddress(addr)
	if errors.Is(err, schema.ErrNoSuchUser) {
		local := addr[:strings.LastIndexByte(addr, '@')]
		if plus := strings.IndexByte(local, '+'); plus > 0 {
			rec, _, err = c.userByAddress(local[:plus] + "@" + domain)
		}
	}
	return rec, err
}
