package directory

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// DKIM keys of a domain live in one meta setting per domain (by its
// opaque id), sealed under the domain's key (the cluster data key for a
// domain in "shared" mode), so the private keys are never in the clear
// in a Raft log, a snapshot or a backup.
const dkimPrefix = "dkim/"

func dkimSettingKey(id schema.ID) string { return dkimPrefix + id.String() }

// DefaultDKIMOverlap is how long a rotated-out selector stays published
// (and listed by DKIMRecords) after RotateDKIM: long enough for mail
// signed with it just before the rotation to be verified on arrival.
const DefaultDKIMOverlap = 7 * 24 * time.Hour

// maxDKIMOverlap bounds the overlap a rotation may ask for.
const maxDKIMOverlap = 365 * 24 * time.Hour

// DKIM algorithms as they appear in a signature's a= tag.
const (
	DKIMEd25519 = "ed25519-sha256"
	DKIMRSA     = "rsa-sha256"
)

// dkimRSABits is the size of generated RSA keys.
const dkimRSABits = 2048

// dkimSelector is one generation of a domain's keys: an Ed25519 key
// published as Base+"e" and an RSA key as Base+"r".
type dkimSelector struct {
	Base    string `json:"s"`
	Ed25519 []byte `json:"e"` // the 32-byte seed
	RSA     []byte `json:"r"` // PKCS #1 DER
	Created int64  `json:"c"` // Unix seconds
	// Retire is when a rotated-out selector stops being published
	// (Unix seconds); 0 for the current one.
	Retire int64 `json:"x,omitempty"`
}

func (s dkimSelector) edSelector() string  { return s.Base + "e" }
func (s dkimSelector) rsaSelector() string { return s.Base + "r" }

// dkimState is what the sealed setting holds: every selector still
// published, oldest first; the last one without Retire signs.
type dkimState struct {
	Selectors []dkimSelector `json:"s"`
}

// current returns the selector that signs.
func (st *dkimState) current() (dkimSelector, bool) {
	for i := len(st.Selectors) - 1; i >= 0; i-- {
		if st.Selectors[i].Retire == 0 {
			return st.Selectors[i], true
		}
	}
	return dkimSelector{}, false
}

// prune drops the selectors whose overlap has ended and reports whether
// it dropped any.
func (st *dkimState) prune(now time.Time) bool {
	kept := st.Selectors[:0]
	for _, s := range st.Selectors {
		if s.Retire == 0 || s.Retire > now.Unix() {
			kept = append(kept, s)
		}
	}
	dropped := len(kept) != len(st.Selectors)
	st.Selectors = kept
	return dropped
}

// newDKIMSelector generates a key pair of each algorithm under a selector
// named for the day ("mc20261202"), made unique among taken.
func newDKIMSelector(now time.Time, taken []dkimSelector) (dkimSelector, error) {
	base := "mc" + now.UTC().Format("20060102")
	used := map[string]bool{}
	for _, s := range taken {
		used[s.Base] = true
	}
	for i := 2; used[base]; i++ {
		base = "mc" + now.UTC().Format("20060102") + "x" + strconv.Itoa(i)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return dkimSelector{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, dkimRSABits)
	if err != nil {
		return dkimSelector{}, fmt.Errorf("generate rsa key: %w", err)
	}
	return dkimSelector{Base: base, Ed25519: edKey.Seed(), RSA: x509.MarshalPKCS1PrivateKey(rsaKey), Created: now.Unix()}, nil
}

// domainRing returns the keyring that seals what belongs to a domain:
// its own key, or the cluster data key in "shared" mode.
func (d *Directory) domainRing(rec schema.DomainRecord, info domainInfo) (seal.Keyring, error) {
	var keys []seal.Key
	var err error
	if info.Mode == KeyModeShared {
		keys, err = d.clusterKey()
	} else {
		keys, err = d.domainKeys(rec)
	}
	if err != nil {
		return nil, err
	}
	return seal.NewStatic(keys...), nil
}

// readDKIM returns a domain's DKIM state and the sealed setting it came
// from (nil when the domain has no keys yet).
func (d *Directory) readDKIM(rec schema.DomainRecord, info domainInfo) (dkimState, []byte, error) {
	var st dkimState
	key := dkimSettingKey(rec.ID)
	raw, err := d.setting(key)
	if err != nil || raw == nil {
		return st, nil, err
	}
	ring, err := d.domainRing(rec, info)
	if err != nil {
		return st, nil, err
	}
	if err := d.openJSONObject(ring, seal.KindSetting, rec.ID, []byte(key), raw, &st); err != nil {
		return st, nil, fmt.Errorf("open DKIM keys: %w", err)
	}
	return st, raw, nil
}

// swapDKIM replaces a domain's DKIM state if the setting still holds old
// (nil: none), through the meta leader; a concurrent change through
// another node fails it with schema.ErrConflict.
func (d *Directory) swapDKIM(ctx context.Context, rec schema.DomainRecord, info domainInfo, old []byte, st dkimState) error {
	ring, err := d.domainRing(rec, info)
	if err != nil {
		return err
	}
	key := dkimSettingKey(rec.ID)
	sealed, err := d.sealJSONObject(ring, seal.KindSetting, rec.ID, []byte(key), st)
	if err != nil {
		return err
	}
	_, err = d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: key, OldAbsent: old == nil, Old: old, New: sealed})
	return err
}

// ensureDKIM returns a domain's DKIM state, generating its first keys if
// it has none (a domain added before DKIM existed, or whose keys could
// not be made when it was added). Two nodes generating at once agree on
// one set: the write is a compare-and-set.
func (d *Directory) ensureDKIM(ctx context.Context, rec schema.DomainRecord, info domainInfo) (dkimState, []byte, error) {
	st, raw, err := d.readDKIM(rec, info)
	if err != nil || raw != nil {
		return st, raw, err
	}
	// Not here yet, or not anywhere: ask the leader before generating.
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return st, nil, fmt.Errorf("DKIM keys not known here and the directory's leader is unreachable (%v): %w", err, schema.ErrUnavailable)
	}
	if st, raw, err = d.readDKIM(rec, info); err != nil || raw != nil {
		return st, raw, err
	}
	sel, err := newDKIMSelector(d.now(), nil)
	if err != nil {
		return st, nil, err
	}
	st = dkimState{Selectors: []dkimSelector{sel}}
	err = d.swapDKIM(ctx, rec, info, nil, st)
	if errors.Is(err, schema.ErrConflict) {
		// Generated meanwhile through another node: use those.
		if err := d.c.CatchUpMeta(ctx); err != nil {
			return st, nil, fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
		}
		return d.readDKIM(rec, info)
	}
	if err != nil {
		return st, nil, fmt.Errorf("store DKIM keys: %w", err)
	}
	d.log.Info("DKIM keys generated", "selector", sel.Base)
	return d.readDKIM(rec, info)
}

// DKIMRecord is one DNS TXT record a domain must publish for its DKIM
// signatures to verify.
type DKIMRecord struct {
	// Selector is the s= tag of the signatures this key verifies.
	Selector string `json:"selector"`
	// Algorithm is DKIMEd25519 or DKIMRSA.
	Algorithm string `json:"algorithm"`
	// Name is the record's owner name, SELECTOR._domainkey.DOMAIN.
	Name string `json:"name"`
	// Value is the record's text ("v=DKIM1; k=...; p=...").
	Value string `json:"value"`
	// Created is when the key was generated.
	Created time.Time `json:"created"`
	// RetiringUntil is, for a rotated-out key, when it stops being
	// published and may be removed from DNS; zero for the signing key.
	RetiringUntil time.Time `json:"retiring_until,omitzero"`
}

// ZoneData returns the record's text in zone-file form: quoted strings
// of at most 255 bytes each (RFC 1035 section 3.3.14), which a 2048-bit
// RSA key needs.
func (r DKIMRecord) ZoneData() string {
	return QuoteTXT(r.Value)
}

// QuoteTXT renders a TXT record's text as zone-file character strings of
// at most 255 bytes each.
func QuoteTXT(v string) string {
	var parts []string
	for len(v) > 255 {
		parts = append(parts, `"`+v[:255]+`"`)
		v = v[255:]
	}
	return strings.Join(append(parts, `"`+v+`"`), " ")
}

// records returns the TXT records of every selector still published,
// signing one first.
func (st *dkimState) records(domain string, now time.Time) ([]DKIMRecord, error) {
	var out []DKIMRecord
	for i := len(st.Selectors) - 1; i >= 0; i-- {
		s := st.Selectors[i]
		if s.Retire != 0 && s.Retire <= now.Unix() {
			continue
		}
		rsaKey, err := x509.ParsePKCS1PrivateKey(s.RSA)
		if err != nil {
			return nil, fmt.Errorf("DKIM rsa key of %s: %w", s.Base, err)
		}
		rsaPub, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
		if err != nil {
			return nil, err
		}
		if len(s.Ed25519) != ed25519.SeedSize {
			return nil, fmt.Errorf("DKIM ed25519 key of %s: %w", s.Base, schema.ErrInvalid)
		}
		edPub := ed25519.NewKeyFromSeed(s.Ed25519).Public().(ed25519.PublicKey)
		var retiring time.Time
		if s.Retire != 0 {
			retiring = time.Unix(s.Retire, 0).UTC()
		}
		created := time.Unix(s.Created, 0).UTC()
		out = append(out,
			DKIMRecord{Selector: s.edSelector(), Algorithm: DKIMEd25519, Name: s.edSelector() + "._domainkey." + domain + ".",
				Value: "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edPub), Created: created, RetiringUntil: retiring},
			DKIMRecord{Selector: s.rsaSelector(), Algorithm: DKIMRSA, Name: s.rsaSelector() + "._domainkey." + domain + ".",
				Value: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(rsaPub), Created: created, RetiringUntil: retiring})
	}
	return out, nil
}

// DKIMRecords returns the DNS TXT records of a domain's DKIM keys: the
// signing pair first, then any rotated-out pair still in its overlap.
// A domain without keys gets them now.
func (d *Directory) DKIMRecords(ctx context.Context, domain string) ([]DKIMRecord, error) {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return nil, err
	}
	rec, info, err := d.findDomain(ctx, dn)
	if err != nil {
		return nil, fmt.Errorf("DKIM records of %s: %w", dn, err)
	}
	st, _, err := d.ensureDKIM(ctx, rec, info)
	if err != nil {
		return nil, fmt.Errorf("DKIM records of %s: %w", dn, err)
	}
	return st.records(dn, d.now())
}

// RotateDKIM starts signing a domain's mail with a new selector pair and
// keeps the previous pair published for overlap (DefaultDKIMOverlap when
// zero), after which it is dropped. It returns the records as they now
// are.
func (d *Directory) RotateDKIM(ctx context.Context, domain string, overlap time.Duration) ([]DKIMRecord, error) {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return nil, err
	}
	if overlap == 0 {
		overlap = DefaultDKIMOverlap
	}
	if overlap < 0 || overlap > maxDKIMOverlap {
		return nil, fmt.Errorf("DKIM overlap %s: want up to %s: %w", overlap, maxDKIMOverlap, schema.ErrInvalid)
	}
	d.dkimMu.Lock()
	defer d.dkimMu.Unlock()
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return nil, fmt.Errorf("rotate DKIM keys: %w: %v", schema.ErrUnavailable, err)
	}
	rec, info, err := d.findDomain(ctx, dn)
	if err != nil {
		return nil, fmt.Errorf("rotate DKIM keys of %s: %w", dn, err)
	}
	st, raw, err := d.readDKIM(rec, info)
	if err != nil {
		return nil, fmt.Errorf("rotate DKIM keys of %s: %w", dn, err)
	}
	now := d.now()
	st.prune(now)
	for i := range st.Selectors {
		if st.Selectors[i].Retire == 0 {
			st.Selectors[i].Retire = now.Add(overlap).Unix()
		}
	}
	sel, err := newDKIMSelector(now, st.Selectors)
	if err != nil {
		return nil, err
	}
	st.Selectors = append(st.Selectors, sel)
	if err := d.swapDKIM(ctx, rec, info, raw, st); err != nil {
		if errors.Is(err, schema.ErrConflict) {
			err = fmt.Errorf("changed meanwhile through another node, try again: %w", err)
		}
		return nil, fmt.Errorf("rotate DKIM keys of %s: %w", dn, err)
	}
	d.log.Info("DKIM keys rotated", "selector", sel.Base, "overlap", overlap)
	return st.records(dn, now)
}

// MaintainDKIM gives every served domain without DKIM keys its first
// pair and drops the rotated-out selectors whose overlap has ended. A
// node runs it at start and then now and again; running it on several
// nodes at once is harmless (every write is a compare-and-set).
func (d *Directory) MaintainDKIM(ctx context.Context) error {
	var doms []schema.DomainRecord
	if err := d.c.ViewMeta(func(r *raftstore.Reader) (err error) { doms, err = r.Domains(); return err }); err != nil {
		return err
	}
	var errs []error
	for _, rec := range doms {
		info, err := d.openDomainInfo(rec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st, raw, err := d.ensureDKIM(ctx, rec, info)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !st.prune(d.now()) {
			continue
		}
		if err := d.swapDKIM(ctx, rec, info, raw, st); err != nil && !errors.Is(err, schema.ErrConflict) {
			errs = append(errs, fmt.Errorf("drop retired DKIM selectors: %w", err))
			continue
		}
		d.log.Info("retired DKIM selectors dropped")
	}
	return errors.Join(errs...)
}

// sealJSONObject seals v as JSON for owner, bound to object (a setting's
// key) as well.
func (d *Directory) sealJSONObject(kr seal.Keyring, kind seal.Kind, owner schema.ID, object []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return d.sealer.Seal(kr, kind, owner[:], object, b)
}

// openJSONObject opens what sealJSONObject sealed.
func (d *Directory) openJSONObject(kr seal.Keyring, kind seal.Kind, owner schema.ID, object, sealed []byte, v any) error {
	b, err := d.sealer.Open(kr, kind, owner[:], object, sealed)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
