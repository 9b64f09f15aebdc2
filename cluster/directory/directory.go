package directory

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// MetaShard is the meta shard's number.
const MetaShard = 0

// Cluster is what the directory needs of the cluster: commands routed to
// a shard's leader wherever it is, reads of this node's meta replica, and
// placement of new users. *cluster.Cluster satisfies it.
type Cluster interface {
	// Apply commits p on shard n (MetaShard for the directory itself) and
	// returns once it is applied; meta writes are also applied by this
	// node's replica before it returns.
	Apply(ctx context.Context, n uint32, p schema.Payload) (*schema.Result, error)
	// ViewMeta reads this node's meta replica; fn may take its time (a
	// scan of every user).
	ViewMeta(fn func(*raftstore.Reader) error) error
	// ReadMeta is ViewMeta for a lookup: fn must be short, and the read
	// does not make the replica commit what it has applied (which on a
	// follower would put two syncs of its state file into every login
	// and recipient check while the directory takes writes).
	ReadMeta(fn func(*raftstore.Reader) error) error
	// MetaIndex is the index of the last entry this node's meta replica
	// applied (0 while it is not open): what ViewMeta and ReadMeta read
	// changes only when it does.
	MetaIndex() uint64
	// CatchUpMeta brings this node's meta replica up to what the meta
	// leader has committed, for a lookup that must not miss a record
	// written a moment ago through another node.
	CatchUpMeta(ctx context.Context) error
	// PlaceUser picks the mail shard of a new user of a domain pinned to
	// region ("" for none).
	PlaceUser(region string) (uint32, error)
	// HasRegion reports whether a node of the cluster is in region.
	HasRegion(region string) bool
}

// Config configures a Directory.
type Config struct {
	// MasterKey is the root of the key hierarchy.
	MasterKey [seal.KeySize]byte
	// PasswordConcurrency bounds concurrent argon2id computations; 0
	// means 4.
	PasswordConcurrency int
	Logger              *slog.Logger
	// MFAIssuer names the service in authenticator apps (the issuer of
	// the otpauth:// URI of an MFA enrolment): the node's hostname. ""
	// means "mailnode".
	MFAIssuer string
	// Postmaster is the address (a user's or an alias's) that receives
	// the mail to postmaster@ of every served domain that has no user or
	// alias of that name (RFC 5321 section 4.5.1); "" for none.
	Postmaster string
	// DefaultQuota is the limits of every user without ones of their
	// own; 0 means unlimited.
	DefaultQuota Quotas
	// Now is the clock of records (creation times, the last use of app
	// passwords and its hourly throttle, TOTP codes); nil means time.Now.
	Now func() time.Time
}

// Directory is the cluster's directory of domains and users, with the
// key hierarchy that protects what they own.
type Directory struct {
	c      Cluster
	log    *slog.Logger
	keys   *rootKeys
	sealer *seal.Sealer
	hash   *hasher
	auth   *authCache
	ukeys  *keyCache
	// domains keeps opened domain records (domaincache.go).
	domains domainInfos
	// routes keeps resolved recipients (routecache.go).
	routes routeCache
	now    func() time.Time
	issuer string
	// usage records the last use of app passwords, off the login path.
	usage *usageTracker
	// userMu serialises this node's read-modify-write changes of user
	// records (see updateUser).
	userMu sync.Mutex
	// aliasMu serialises this node's read-modify-write changes of
	// aliases (see changeAlias).
	aliasMu sync.Mutex
	// dkimMu serialises this node's rotations of DKIM keys.
	dkimMu sync.Mutex
	// dkim signs outgoing mail with the domains' DKIM keys.
	dkim      *DKIMSigner
	closeOnce sync.Once
	// postmaster receives postmaster@ of every domain without one.
	postmaster string
	// defaultQuota is Config.DefaultQuota.
	defaultQuota Quotas
	// srsMu guards srs, the sender rewriter (forward.go), made once.
	srsMu sync.Mutex
	srs   *SRS
}

// New returns the directory over a cluster's meta shard.
func New(c Cluster, cfg Config) (*Directory, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PasswordConcurrency <= 0 {
		cfg.PasswordConcurrency = 4
	}
	if cfg.MFAIssuer == "" {
		cfg.MFAIssuer = "mailnode"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sealer, err := seal.New()
	if err != nil {
		return nil, err
	}
	d := &Directory{
		c:      c,
		log:    cfg.Logger.With("component", "directory"),
		keys:   newRootKeys(cfg.MasterKey),
		sealer: sealer,
		hash:   newHasher(cfg.PasswordConcurrency),
		auth:   newAuthCache(),
		ukeys:  newKeyCache(),
		now:    cfg.Now,
		issuer: cfg.MFAIssuer,

		defaultQuota: cfg.DefaultQuota,
	}
	if cfg.Postmaster != "" {
		pm, _, err := schema.CanonicalAddress(cfg.Postmaster)
		if err != nil {
			return nil, fmt.Errorf("postmaster %q: %w", cfg.Postmaster, err)
		}
		d.postmaster = pm
	}
	d.usage = newUsageTracker(d)
	d.dkim = newDKIMSigner(d)
	return d, nil
}

// Close writes the last uses of app passwords still queued (for a few
// seconds at most), stops the goroutine that writes them and releases
// the sealer. It may be called more than once.
func (d *Directory) Close() {
	d.closeOnce.Do(func() {
		d.usage.close()
		d.sealer.Close()
	})
}

// Sealer returns the envelope sealer, shared with the mail store.
func (d *Directory) Sealer() *seal.Sealer { return d.sealer }

// SpoolKeys returns the keyring of the spool, where a message for
// recipients on several shards waits for all their copies.
func (d *Directory) SpoolKeys() seal.Keyring { return d.keys.spool }

// Init creates the cluster data key (used by domains in "shared" mode) if
// the cluster has none yet, and checks that this node's master key opens
// it. Every node calls it at start; creation is a compare-and-set, so two
// first starts cannot both create one.
func (d *Directory) Init(ctx context.Context) error {
	wrapped, err := d.setting(settingClusterKey)
	if err != nil {
		return err
	}
	if wrapped == nil {
		// A node that just joined may not have the meta shard's records
		// yet: ask the leader before creating anything.
		if err := d.c.CatchUpMeta(ctx); err != nil {
			return fmt.Errorf("read the cluster data key: %w", err)
		}
		if wrapped, err = d.setting(settingClusterKey); err != nil {
			return err
		}
	}
	if wrapped == nil {
		sealed, err := d.sealer.Seal(d.keys.master, seal.KindClusterKey, nil, []byte(settingClusterKey), encodeKeys([]seal.Key{seal.NewKey(1)}))
		if err != nil {
			return err
		}
		_, err = d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: settingClusterKey, OldAbsent: true, New: sealed})
		if errors.Is(err, schema.ErrConflict) {
			err = d.c.CatchUpMeta(ctx) // created meanwhile through another node
		}
		if err != nil {
			return fmt.Errorf("create cluster data key: %w", err)
		}
	}
	_, err = d.clusterKey()
	return err
}

func (d *Directory) clusterKey() ([]seal.Key, error) {
	wrapped, err := d.setting(settingClusterKey)
	if err != nil {
		return nil, err
	}
	plain, err := d.sealer.Open(d.keys.master, seal.KindClusterKey, nil, []byte(settingClusterKey), wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap cluster data key (wrong master key?): %w", err)
	}
	return decodeKeys(plain)
}

// User is an authenticated or resolved user: what the mail store needs to
// serve its mail.
type User struct {
	ID      schema.ID
	Address string
	// Shard is the mail shard holding the user's mailboxes.
	Shard uint32
	Keys  *UserKeys
	// AppPassword names the app password a login used ("" for the
	// account password, or when the User was not made by a login).
	AppPassword string
	// Quota is the user's limits when the User was made (0: unlimited);
	// writes read them again (QuotaLimit).
	Quota Quotas
}

// Domain is a served domain as the admin interface lists it.
type Domain struct {
	Name    string  `json:"name"`
	KeyMode KeyMode `json:"key_mode"`
	// Region is where the domain's users' mail lives ("" for anywhere).
	Region string `json:"region,omitempty"`
	Users  int    `json:"users"`
	// RequireMFA: the domain's users log in over IMAP, POP3 and SMTP with
	// app passwords only, whether or not they enrolled in MFA.
	RequireMFA bool `json:"require_mfa,omitempty"`
	// SentCopy: submission stores a copy of what the domain's users
	// send in their Sent mailbox.
	SentCopy bool `json:"sent_copy,omitempty"`
}

// domainInfo is the sealed part of a domain record.
type domainInfo struct {
	Name string  `json:"n"`
	Mode KeyMode `json:"m"`
}

// userInfo is the sealed part of a user record. Everything that decides
// whether a login succeeds is in it, so the verified-credential cache,
// tied to the exact sealed record, is invalidated by any change to it.
type userInfo struct {
	Address  string `json:"a"`
	Password string `json:"p"` // argon2id PHC string
	Created  int64  `json:"c"`
	// AppPasswords are the user's app passwords (hashes, never the
	// passwords).
	AppPasswords []appPassword `json:"ap,omitempty"`
	// MFA is the user's TOTP enrolment, nil when there is none.
	MFA *mfaState `json:"mfa,omitempty"`
	// Quota is the user's own storage limit in bytes (0: unlimited),
	// nil when the cluster's default applies (quota.go); MessageQuota
	// the same for the number of messages.
	Quota        *uint64 `json:"q,omitempty"`
	MessageQuota *uint64 `json:"qm,omitempty"`
}

var keyObject = []byte("key")

func (d *Directory) sealJSON(kr seal.Keyring, kind seal.Kind, owner schema.ID, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return d.sealer.Seal(kr, kind, owner[:], nil, b)
}

func (d *Directory) openJSON(kr seal.Keyring, kind seal.Kind, owner schema.ID, sealed []byte, v any) error {
	b, err := d.sealer.Open(kr, kind, owner[:], nil, sealed)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (d *Directory) domainByName(name string) (schema.DomainRecord, domainInfo, error) {
	var rec schema.DomainRecord
	var info domainInfo
	err := d.c.ReadMeta(func(r *raftstore.Reader) (err error) {
		rec, err = r.DomainByName(d.keys.domainNameKey(name))
		return err
	})
	if err != nil {
		return rec, info, err
	}
	info, err = d.openDomainInfo(rec)
	return rec, info, err
}

// findDomain is domainByName that, on a miss, catches up with the meta
// leader first: a domain added a moment ago through another node is
// found.
// If the meta leader cannot be reached to make sure, the miss is
// schema.ErrUnavailable: "no such domain" would be a permanent answer.
func (d *Directory) findDomain(ctx context.Context, name string) (schema.DomainRecord, domainInfo, error) {
	rec, info, err := d.domainByName(name)
	if !errors.Is(err, schema.ErrNoSuchDomain) {
		return rec, info, err
	}
	if cerr := d.c.CatchUpMeta(ctx); cerr != nil {
		return rec, info, fmt.Errorf("domain not known here and the directory's leader is unreachable (%v): %w", cerr, schema.ErrUnavailable)
	}
	return d.domainByName(name)
}

func (d *Directory) domainByID(id schema.ID) (schema.DomainRecord, domainInfo, error) {
	var rec schema.DomainRecord
	var info domainInfo
	err := d.c.ReadMeta(func(r *raftstore.Reader) (err error) { rec, err = r.Domain(id); return err })
	if err != nil {
		return rec, info, err
	}
	info, err = d.openDomainInfo(rec)
	return rec, info, err
}

func (d *Directory) userByAddress(address string) (schema.UserRecord, userInfo, error) {
	var rec schema.UserRecord
	var info userInfo
	err := d.c.ReadMeta(func(r *raftstore.Reader) (err error) {
		rec, err = r.UserByName(d.keys.userNameKey(address))
		return err
	})
	if err != nil {
		return rec, info, err
	}
	if err := d.openJSON(d.keys.meta, seal.KindUserInfo, rec.ID, rec.Sealed, &info); err != nil {
		return rec, info, fmt.Errorf("open user record: %w", err)
	}
	return rec, info, nil
}

// domainKeys unwraps a domain's keys.
func (d *Directory) domainKeys(dr schema.DomainRecord) ([]seal.Key, error) {
	plain, err := d.sealer.Open(d.keys.master, seal.KindDomainKey, dr.ID[:], keyObject, dr.WrappedKey)
	if err != nil {
		return nil, fmt.Errorf("unwrap domain key: %w", err)
	}
	return decodeKeys(plain)
}

// userKeysFor returns the keys that read and write a user's mail,
// following the domain's key mode.
func (d *Directory) userKeysFor(u schema.UserRecord) (*UserKeys, error) {
	if k := d.ukeys.get(u); k != nil {
		return k, nil
	}
	k, err := d.unwrapUserKeys(u)
	if err == nil {
		d.ukeys.put(u, k)
	}
	return k, err
}

func (d *Directory) unwrapUserKeys(u schema.UserRecord) (*UserKeys, error) {
	dr, info, err := d.domainByID(u.Domain)
	if err != nil {
		return nil, err
	}
	var keys []seal.Key
	switch info.Mode {
	case KeyModeShared:
		keys, err = d.clusterKey()
	case KeyModeDomain, KeyModeUser:
		var dk []seal.Key
		if dk, err = d.domainKeys(dr); err != nil {
			break
		}
		if info.Mode == KeyModeDomain {
			keys = dk
			break
		}
		keys, err = d.openUserKey(u, dk)
	default:
		err = fmt.Errorf("domain key mode %q: %w", info.Mode, schema.ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	return newUserKeys(u.ID, keys), nil
}

// DomainRegionPrefix starts the meta setting that pins a domain (by its
// opaque id) to a region; the cluster's placement reads it.
const DomainRegionPrefix = "domain_region/"

func domainRegionKey(id schema.ID) string { return DomainRegionPrefix + id.String() }

// ParseDomainRegionKey returns the domain id of a DomainRegionPrefix
// setting key.
func ParseDomainRegionKey(key string) (schema.ID, bool) {
	var id schema.ID
	b, err := hex.DecodeString(strings.TrimPrefix(key, DomainRegionPrefix))
	if err != nil || len(b) != len(id) || !strings.HasPrefix(key, DomainRegionPrefix) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// AddDomain starts serving a domain. Mode "" means KeyModeUser. A
// non-empty region pins the domain there: its users' mail is placed on
// shards whose home (and leader) is in that region.
func (d *Directory) AddDomain(ctx context.Context, name string, mode KeyMode, region string) error {
	dn, err := schema.CanonicalDomain(name)
	if err != nil {
		return err
	}
	if mode == "" {
		mode = KeyModeUser
	}
	if !mode.Valid() {
		return fmt.Errorf("key mode %q (want shared, domain or user): %w", mode, schema.ErrInvalid)
	}
	if region != "" && !d.c.HasRegion(region) {
		return fmt.Errorf("region %q has no node: %w", region, schema.ErrInvalid)
	}
	rec := schema.DomainRecord{ID: schema.NewID(), NameKey: d.keys.domainNameKey(dn)}
	if rec.Sealed, err = d.sealJSON(d.keys.meta, seal.KindDomainInfo, rec.ID, domainInfo{Name: dn, Mode: mode}); err != nil {
		return err
	}
	if mode != KeyModeShared {
		rec.WrappedKey, err = d.sealer.Seal(d.keys.master, seal.KindDomainKey, rec.ID[:], keyObject, encodeKeys([]seal.Key{seal.NewKey(1)}))
		if err != nil {
			return err
		}
	}
	// The region first: a domain never exists unpinned for a moment.
	if region != "" {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: domainRegionKey(rec.ID), Value: []byte(region)}); err != nil {
			return fmt.Errorf("add domain %s: %w", dn, err)
		}
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutDomain{Record: rec}); err != nil {
		if region != "" {
			d.c.Apply(context.WithoutCancel(ctx), MetaShard, &schema.PutSetting{Key: domainRegionKey(rec.ID)})
		}
		return fmt.Errorf("add domain %s: %w", dn, err)
	}
	d.log.Info("domain added", "key_mode", mode, "region", region)
	// Its DKIM keys: should this fail, the first signature or the node's
	// maintenance makes them (ensureDKIM).
	if _, _, err := d.ensureDKIM(ctx, rec, domainInfo{Name: dn, Mode: mode}); err != nil {
		d.log.Warn("DKIM keys of a new domain not generated yet", "err", err)
	}
	return nil
}

// DeleteDomain stops serving a domain that has no users left.
func (d *Directory) DeleteDomain(ctx context.Context, name string) error {
	dn, err := schema.CanonicalDomain(name)
	if err != nil {
		return err
	}
	rec, _, err := d.findDomain(ctx, dn)
	if err != nil {
		return fmt.Errorf("delete domain %s: %w", dn, err)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.DeleteDomain{Domain: rec.ID}); err != nil {
		if errors.Is(err, schema.ErrCannotDelete) {
			return fmt.Errorf("delete domain %s: it still has users: %w", dn, err)
		}
		return fmt.Errorf("delete domain %s: %w", dn, err)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: domainRegionKey(rec.ID)}); err != nil {
		d.log.Warn("forget the region of a deleted domain", "err", err)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: domainMFAKey(rec.ID)}); err != nil {
		d.log.Warn("forget the MFA requirement of a deleted domain", "err", err)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: domainSentCopyKey(rec.ID)}); err != nil {
		d.log.Warn("forget the sent-copy setting of a deleted domain", "err", err)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: dkimSettingKey(rec.ID)}); err != nil {
		d.log.Warn("forget the DKIM keys of a deleted domain", "err", err)
	}
	d.forgetDomainRoutes(ctx, rec.ID)
	return nil
}

// domainRegion returns the region a domain is pinned to, or "".
func (d *Directory) domainRegion(id schema.ID) string {
	v, _ := d.setting(domainRegionKey(id))
	return string(v)
}

// Domains lists the served domains with their user counts, as the meta
// leader has them.
func (d *Directory) Domains(ctx context.Context) ([]Domain, error) {
	_ = d.c.CatchUpMeta(ctx) // best effort: else this node's view
	var doms []schema.DomainRecord
	var users []schema.UserRecord
	var regions, mfa, sent map[string][]byte
	err := d.c.ViewMeta(func(r *raftstore.Reader) (err error) {
		if doms, err = r.Domains(); err != nil {
			return err
		}
		regions = r.Settings(DomainRegionPrefix)
		mfa = r.Settings(domainMFAPrefix)
		sent = r.Settings(domainSentCopyPrefix)
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
	for _, dr := range doms {
		info, err := d.openDomainInfo(dr)
		if err != nil {
			return nil, err
		}
		out = append(out, Domain{Name: info.Name, KeyMode: info.Mode, Region: string(regions[domainRegionKey(dr.ID)]), Users: count[dr.ID],
			RequireMFA: string(mfa[domainMFAKey(dr.ID)]) == mfaRequired, SentCopy: string(sent[domainSentCopyKey(dr.ID)]) == sentCopyOn})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, ctx.Err()
}

// AddUser creates an account with the default mailboxes, on a mail shard
// of its domain's region.
func (d *Directory) AddUser(ctx context.Context, address, password string) error {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	if err := schema.ValidatePassword(password); err != nil {
		return err
	}
	dom, dinfo, err := d.findDomain(ctx, domain)
	if err != nil {
		return fmt.Errorf("add user: domain %s: %w", domain, err)
	}
	if _, _, err := d.lookupUser(ctx, addr); err == nil {
		return fmt.Errorf("add user: %w", schema.ErrUserExists)
	}
	// The miss above caught up with the meta leader: this replica knows
	// the aliases too.
	if alias, err := d.hasAlias(dom.ID, addr); err != nil || alias {
		if alias {
			err = fmt.Errorf("add user: %s is an alias; delete it first: %w", addr, schema.ErrUserExists)
		}
		return err
	}
	hash, err := d.hash.hash(ctx, password)
	if err != nil {
		return err
	}
	rec := schema.UserRecord{ID: schema.NewID(), NameKey: d.keys.userNameKey(addr), Domain: dom.ID}
	if rec.Shard, err = d.c.PlaceUser(d.domainRegion(dom.ID)); err != nil {
		return fmt.Errorf("add user: %w", err)
	}
	rec.Sealed, err = d.sealJSON(d.keys.meta, seal.KindUserInfo, rec.ID, userInfo{Address: addr, Password: hash, Created: d.now().Unix()})
	if err != nil {
		return err
	}
	if dinfo.Mode == KeyModeUser {
		// The user's key is wrapped under a key-encryption key of its own
		// in the key store (keystore.go), written before anything sealed
		// under it.
		dk, err := d.domainKeys(dom)
		if err != nil {
			return err
		}
		var entry []byte
		if entry, rec.WrappedKey, err = d.newUserKEK(rec.ID, dk); err != nil {
			return err
		}
		if _, err := d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: keyStoreKey(rec.ID), OldAbsent: true, New: entry}); err != nil {
			return fmt.Errorf("add user: key store: %w", err)
		}
	}
	rollbackKEK := func() {
		if dinfo.Mode == KeyModeUser {
			if _, err := d.c.Apply(context.WithoutCancel(ctx), MetaShard, &schema.PutSetting{Key: keyStoreKey(rec.ID)}); err != nil {
				d.log.Error("roll back the key of a user that was not created", "err", err)
			}
		}
	}
	keys, err := d.userKeysFor(rec)
	if err != nil {
		rollbackKEK()
		return err
	}
	init := &schema.InitUser{User: rec.ID}
	for _, m := range schema.DefaultMailboxes {
		nm := schema.NewMailbox{ID: schema.NewID(), NameKey: keys.MailboxNameKey(m.Name), Inbox: m.Name == schema.InboxName}
		if nm.Sealed, err = SealMailbox(d.sealer, keys, rec.ID, nm.ID, MailboxAttrs{Name: m.Name, SpecialUse: m.SpecialUse, Subscribed: true}); err != nil {
			rollbackKEK()
			return err
		}
		init.Mailboxes = append(init.Mailboxes, nm)
	}
	// Mailboxes first, then the directory entry that makes the user exist:
	// a crash in between leaves only unreachable, sealed state.
	if _, err := d.c.Apply(ctx, rec.Shard, init); err != nil {
		rollbackKEK()
		return fmt.Errorf("add user: create mailboxes: %w", err)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutUser{Record: rec, Create: true}); err != nil {
		if _, rbErr := d.c.Apply(context.WithoutCancel(ctx), rec.Shard, &schema.DeleteUserData{User: rec.ID}); rbErr != nil {
			d.log.Error("roll back mailboxes of a user that was not created", "err", rbErr)
		}
		rollbackKEK()
		d.ukeys.forget(rec.ID)
		return fmt.Errorf("add user: %w", err)
	}
	d.log.Info("user added", "shard", rec.Shard)
	return nil
}

// DeleteUser deletes an account and its mail; EraseUser says what it
// did.
func (d *Directory) DeleteUser(ctx context.Context, address string) error {
	_, err := d.EraseUser(ctx, address)
	return err
}

// DeleteReport says what deleting a user did.
type DeleteReport struct {
	Address string  `json:"address"`
	Shard   uint32  `json:"shard"`
	KeyMode KeyMode `json:"key_mode"`
	// KeyDestroyed: the user's key-encryption key left the key store, so
	// the user's mail, delivery records and sealed metadata are
	// unreadable wherever a copy is, backups included once their targets'
	// key store is rewritten (the node does that next).
	KeyDestroyed bool `json:"key_destroyed"`
	// KeyNote explains when the key could not be destroyed on its own:
	// a domain in "domain" or "shared" mode shares it, or the user
	// predates the key store.
	KeyNote string `json:"key_note,omitempty"`
	// MailDeleted: the user's mailboxes and messages left the mail shard.
	MailDeleted bool `json:"mail_deleted"`
	// Removed counts the metadata records deleted, by kind.
	Removed map[string]int `json:"removed"`
}

// EraseUser deletes an account everywhere: first its key (in "user" key
// mode the key-encryption key in the key store, so what follows could
// fail and the data would still be unreadable), then its mail, its
// directory record and its metadata (login history, delivery records,
// app-password uses).
func (d *Directory) EraseUser(ctx context.Context, address string) (DeleteReport, error) {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return DeleteReport{}, err
	}
	rec, _, err := d.lookupUser(ctx, addr)
	if err != nil {
		return DeleteReport{}, fmt.Errorf("delete user: %w", err)
	}
	rep := DeleteReport{Address: addr, Shard: rec.Shard, Removed: map[string]int{}}
	if _, dinfo, err := d.domainByID(rec.Domain); err == nil {
		rep.KeyMode = dinfo.Mode
	}
	if rep.KeyDestroyed, err = d.destroyUserKEK(ctx, rec.ID); err != nil {
		return rep, fmt.Errorf("delete user: %w", err)
	}
	switch {
	case rep.KeyDestroyed:
	case rep.KeyMode == KeyModeUser:
		rep.KeyNote = "the user predates the key store: its key was wrapped under the domain key, so copies in backups taken before now stay readable until retention removes them"
	default:
		rep.KeyNote = fmt.Sprintf("domain key mode %q shares the key with other users: the live mail is deleted, copies in existing backups stay readable until retention removes them", rep.KeyMode)
	}
	d.ukeys.forget(rec.ID)
	if _, err := d.c.Apply(ctx, rec.Shard, &schema.DeleteUserData{User: rec.ID}); err != nil {
		return rep, fmt.Errorf("delete user: mail: %w", err)
	}
	rep.MailDeleted = true
	if _, err := d.c.Apply(ctx, MetaShard, &schema.DeleteUser{User: rec.ID}); err != nil {
		return rep, fmt.Errorf("delete user: %w", err)
	}
	d.auth.forget(rec.ID)
	d.ukeys.forget(rec.ID)
	d.forgetUsage(ctx, rec.ID, nil)
	for kind, prefix := range d.userMetadataPrefixes(rec.ID) {
		n, err := d.deletePrefix(ctx, prefix)
		rep.Removed[kind] = n
		if err != nil {
			return rep, fmt.Errorf("delete user: %s: %w", kind, err)
		}
	}
	d.log.Info("user deleted", "shard", rec.Shard, "key_destroyed", rep.KeyDestroyed)
	return rep, nil
}

// userMetadataPrefixes names the meta settings a user's metadata lives
// under, by kind.
func (d *Directory) userMetadataPrefixes(user schema.ID) map[string]string {
	return map[string]string{
		"login_records":    loginsKeyPrefix(user),
		"delivery_records": deliveriesKeyPrefix(user),
	}
}

// deletePrefix deletes every meta setting under prefix and returns how
// many went.
func (d *Directory) deletePrefix(ctx context.Context, prefix string) (int, error) {
	var keys []string
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings(prefix) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for i, k := range keys {
		if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: k}); err != nil {
			return i, err
		}
	}
	return len(keys), nil
}

// SetPassword replaces a user's password.
func (d *Directory) SetPassword(ctx context.Context, address, password string) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	if err := schema.ValidatePassword(password); err != nil {
		return err
	}
	if _, _, err := d.lookupUser(ctx, addr); err != nil {
		return fmt.Errorf("set password: %w", err) // before spending a hash
	}
	hash, err := d.hash.hash(ctx, password)
	if err != nil {
		return err
	}
	_, err = d.updateUser(ctx, addr, func(_ schema.UserRecord, info *userInfo) error {
		info.Password = hash
		return nil
	})
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	return nil
}

// updateUser changes a user's sealed record: it reads the newest record
// (after catching up with the meta leader, so a change made through
// another node a moment ago is not undone), lets change edit it, and
// writes it back through the meta shard's Raft log. Changes through this
// node are serialised; PutUser is no compare-and-set, so two changes of
// one user through two nodes at the same instant can still lose one.
// Every cached credential of the user is dropped: the new record decides.
func (d *Directory) updateUser(ctx context.Context, addr string, change func(schema.UserRecord, *userInfo) error) (schema.UserRecord, error) {
	d.userMu.Lock()
	defer d.userMu.Unlock()
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return schema.UserRecord{}, fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
	}
	rec, info, err := d.userByAddress(addr)
	if err != nil {
		return rec, err
	}
	if err := change(rec, &info); err != nil {
		return rec, err
	}
	if rec.Sealed, err = d.sealJSON(d.keys.meta, seal.KindUserInfo, rec.ID, info); err != nil {
		return rec, err
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutUser{Record: rec}); err != nil {
		return rec, err
	}
	d.auth.forget(rec.ID)
	return rec, nil
}

// Users lists the addresses of a domain's users ("" for all domains), as
// the meta leader has them.
func (d *Directory) Users(ctx context.Context, domain string) ([]string, error) {
	_ = d.c.CatchUpMeta(ctx) // best effort: else this node's view
	var filter schema.ID
	if domain != "" {
		dn, err := schema.CanonicalDomain(domain)
		if err != nil {
			return nil, err
		}
		rec, _, err := d.domainByName(dn)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		filter = rec.ID
	}
	var users []schema.UserRecord
	if err := d.c.ViewMeta(func(r *raftstore.Reader) (err error) { users, err = r.Users(); return err }); err != nil {
		return nil, err
	}
	var out []string
	for _, u := range users {
		if !filter.IsZero() && u.Domain != filter {
			continue
		}
		var info userInfo
		if err := d.openJSON(d.keys.meta, seal.KindUserInfo, u.ID, u.Sealed, &info); err != nil {
			return nil, fmt.Errorf("open user record: %w", err)
		}
		out = append(out, info.Address)
	}
	sort.Strings(out)
	return out, ctx.Err()
}

// UserInfo is what the admin interface shows of one user: no secrets.
type UserInfo struct {
	Address string    `json:"address"`
	Domain  string    `json:"domain"`
	Shard   uint32    `json:"shard"`
	Created time.Time `json:"created"`
	// MFA is MFAOff, MFAPending (enrolled, not confirmed: no effect yet)
	// or MFAOn (IMAP, POP3 and SMTP take app passwords only).
	MFA string `json:"mfa"`
	// DomainRequiresMFA: the user's domain requires MFA, so IMAP, POP3
	// and SMTP take only app passwords whatever MFA says.
	DomainRequiresMFA bool `json:"domain_requires_mfa,omitempty"`
	// AppPasswords counts the user's app passwords.
	AppPasswords int `json:"app_passwords"`
	// Quota is the storage limit in bytes that applies (0: unlimited);
	// QuotaDefault says it is the cluster's default, not the user's own.
	Quota        uint64 `json:"quota"`
	QuotaDefault bool   `json:"quota_default"`
	// MessageQuota and MessageQuotaDefault are the same for the number
	// of messages.
	MessageQuota        uint64 `json:"message_quota"`
	MessageQuotaDefault bool   `json:"message_quota_default"`
	// Usage is the bytes of the user's messages, Messages their number
	// (filled in by the mail store; the directory does not read mail
	// shards).
	Usage    *uint64 `json:"usage,omitempty"`
	Messages *uint64 `json:"messages,omitempty"`
}

// User returns what the admin interface shows of one user, including the
// mail shard that holds its mailboxes.
func (d *Directory) User(ctx context.Context, address string) (UserInfo, error) {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return UserInfo{}, err
	}
	rec, info, err := d.lookupUser(ctx, addr)
	if err != nil {
		return UserInfo{}, fmt.Errorf("show user: %w", err)
	}
	return UserInfo{
		Address: info.Address, Domain: domain, Shard: rec.Shard, Created: time.Unix(info.Created, 0).UTC(),
		MFA: info.mfaStatus(), DomainRequiresMFA: d.domainRequiresMFA(rec.Domain), AppPasswords: len(info.AppPasswords),
		Quota: d.quotasOf(info).Bytes, QuotaDefault: info.Quota == nil,
		MessageQuota: d.quotasOf(info).Messages, MessageQuotaDefault: info.MessageQuota == nil,
	}, nil
}

// lookupUser finds a user by address in this node's meta replica; a miss
// is checked again after catching up with the meta leader, so a user
// created a moment ago through another node is found.
func (d *Directory) lookupUser(ctx context.Context, addr string) (schema.UserRecord, userInfo, error) {
	rec, info, err := d.userByAddress(addr)
	if !errors.Is(err, schema.ErrNoSuchUser) {
		return rec, info, err
	}
	if cerr := d.c.CatchUpMeta(ctx); cerr != nil {
		// Without the leader this node cannot tell an unknown user from
		// one created a moment ago: a temporary answer, not "no such user".
		return rec, info, fmt.Errorf("user not known here and the directory's leader is unreachable (%v): %w", cerr, schema.ErrUnavailable)
	}
	return d.userByAddress(addr)
}

// Authenticate checks a login: the account password, or one of the
// user's app passwords whose scope has cred.Protocol. The account password
// is refused, exactly like a wrong one, when the user has MFA on, when the
// user's domain requires MFA, and when cred.OnlyAppPassword is set (the
// user is locked out at the client's address). Unknown users, wrong
// passwords and refused credentials all give the same
// schema.ErrAuthFailed and, outside a lockout, cost at least one argon2id
// check each.
//
// Credentials are checked against this node's meta replica, so a changed
// password, a revoked app password, MFA switched on or a deleted user
// stops working here as soon as the replica has applied the change: the
// cache of verified credentials is tied to the exact record. A successful
// app password login is recorded as its last use, at most once an hour
// and never on the login's path.
func (d *Directory) Authenticate(ctx context.Context, cred schema.Credentials) (*User, error) {
	addr, _, err := schema.CanonicalAddress(cred.Username)
	var rec schema.UserRecord
	var info userInfo
	if err == nil {
		rec, info, err = d.lookupUser(ctx, addr)
	}
	if err != nil && !errors.Is(err, schema.ErrNoSuchUser) && !errors.Is(err, schema.ErrInvalid) {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if err != nil {
		if cred.OnlyAppPassword {
			return nil, schema.ErrAuthFailed // locked out: as cheap as for a known user (verifyLogin)
		}
		if _, verr := d.hash.verify(ctx, "", cred.Password); verr != nil {
			return nil, verr
		}
		return nil, schema.ErrAuthFailed
	}
	accountOK := !cred.OnlyAppPassword && !info.mfaActive() && !d.domainRequiresMFA(rec.Domain)
	matched, ok := d.auth.check(rec, addr, cred.Password)
	if !ok || !info.allows(matched, accountOK, cred.Protocol) {
		// Not verified lately, or verified as a credential this attempt
		// may not use: check what it may use, at full cost.
		if matched, ok, err = d.verifyLogin(ctx, rec, info, accountOK, cred); err != nil {
			return nil, err
		}
		if !ok {
			return nil, schema.ErrAuthFailed
		}
		d.auth.remember(rec, addr, cred.Password, matched)
	}
	if matched != "" {
		d.usage.used(rec.ID, matched, cred.Remote)
	}
	u, err := d.user(rec, info)
	if err != nil {
		return nil, err
	}
	for _, ap := range info.AppPasswords {
		if matched != "" && ap.ID == matched {
			u.AppPassword = ap.Name
		}
	}
	return u, nil
}

func (d *Directory) user(rec schema.UserRecord, info userInfo) (*User, error) {
	keys, err := d.userKeysFor(rec)
	if err != nil {
		return nil, err
	}
	return &User{ID: rec.ID, Address: info.Address, Shard: rec.Shard, Keys: keys, Quota: d.quotasOf(info)}, nil
}

// UserByID returns a user by id (a spooled message names its recipients
// by id).
func (d *Directory) UserByID(ctx context.Context, id schema.ID) (*User, error) {
	var rec schema.UserRecord
	err := d.c.ReadMeta(func(r *raftstore.Reader) (err error) { rec, err = r.User(id); return err })
	if errors.Is(err, schema.ErrNoSuchUser) {
		if cerr := d.c.CatchUpMeta(ctx); cerr == nil {
			err = d.c.ReadMeta(func(r *raftstore.Reader) (err error) { rec, err = r.User(id); return err })
		}
	}
	if err != nil {
		return nil, err
	}
	var info userInfo
	if err := d.openJSON(d.keys.meta, seal.KindUserInfo, rec.ID, rec.Sealed, &info); err != nil {
		return nil, fmt.Errorf("open user record: %w", err)
	}
	return d.user(rec, info)
}
