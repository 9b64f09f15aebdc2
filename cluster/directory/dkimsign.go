package directory

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	// dkimCacheTTL bounds how long unsealed signing keys are kept in
	// memory; a rotation through any node is seen sooner, since an entry
	// is tied to the exact sealed setting.
	dkimCacheTTL     = 5 * time.Minute
	dkimCacheEntries = 1000
	// maxSignedHeader bounds the header section read to choose the
	// signed fields.
	maxSignedHeader = 1 << 20
)

// dkimSignedFields are the header fields a signature covers when the
// message has them (RFC 6376 section 5.4.1); From is signed once more
// than it occurs ("over-signed"), so a second From added on the way
// breaks the signature.
var dkimSignedFields = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Content-ID", "Content-Description",
}

// DKIMSigner signs outgoing mail with the sending domain's current DKIM
// keys: an ed25519-sha256 and an rsa-sha256 signature on every message,
// relaxed/relaxed. Unsealed keys are cached for a few minutes, tied to
// the sealed setting they came from. It is safe for concurrent use.
type DKIMSigner struct {
	d  *Directory
	mu sync.Mutex
	// cache holds unsealed keys by domain name.
	cache map[string]dkimCacheEntry
}

type dkimCacheEntry struct {
	source  [32]byte
	keys    []dkimKey
	expires time.Time
}

type dkimKey struct {
	selector string
	signer   crypto.Signer
}

// DKIMSigner returns the directory's signer of outgoing mail.
func (d *Directory) DKIMSigner() *DKIMSigner { return d.dkim }

func newDKIMSigner(d *Directory) *DKIMSigner {
	return &DKIMSigner{d: d, cache: map[string]dkimCacheEntry{}}
}

// Sign returns the DKIM-Signature header fields (each ending in CRLF) to
// put in front of message, sent from domain. A domain the cluster does
// not serve gets none (nil, nil): the message goes unsigned. A served
// domain without keys yet gets them first.
func (s *DKIMSigner) Sign(ctx context.Context, domain string, message []byte) ([]byte, error) {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return nil, fmt.Errorf("dkim sign: %w", err)
	}
	keys, err := s.keys(ctx, dn)
	if errors.Is(err, schema.ErrNoSuchDomain) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dkim sign: %w", err)
	}
	fields := signedFields(message)
	signers := make([]*dkim.Signer, 0, len(keys))
	writers := make([]io.Writer, 0, len(keys))
	for _, k := range keys {
		sg, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: dn, Selector: k.selector, Signer: k.signer, Hash: crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
			HeaderKeys: fields,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim sign: %w", err)
		}
		signers = append(signers, sg)
		writers = append(writers, sg)
	}
	_, werr := io.Copy(io.MultiWriter(writers...), bytes.NewReader(message))
	var out []byte
	for _, sg := range signers {
		if err := sg.Close(); err != nil && werr == nil {
			werr = err
		}
		if werr == nil {
			out = append(out, sg.Signature()...)
		}
	}
	if werr != nil {
		return nil, fmt.Errorf("dkim sign: %w", werr)
	}
	return out, nil
}

// keys returns the signing keys of a served domain, from the cache when
// its sealed setting has not changed.
func (s *DKIMSigner) keys(ctx context.Context, dn string) ([]dkimKey, error) {
	d := s.d
	rec, info, err := d.domainByName(dn)
	if errors.Is(err, schema.ErrNoSuchDomain) {
		rec, info, err = d.findDomain(ctx, dn)
	}
	if err != nil {
		return nil, err
	}
	raw, err := d.setting(dkimSettingKey(rec.ID))
	if err != nil {
		return nil, err
	}
	if raw != nil {
		if keys := s.cached(dn, raw); keys != nil {
			return keys, nil
		}
	}
	st, raw, err := d.ensureDKIM(ctx, rec, info)
	if err != nil {
		return nil, err
	}
	cur, ok := st.current()
	if !ok {
		return nil, fmt.Errorf("domain %s has no current DKIM selector: %w", dn, schema.ErrInvalid)
	}
	rsaKey, err := x509.ParsePKCS1PrivateKey(cur.RSA)
	if err != nil {
		return nil, fmt.Errorf("DKIM rsa key of %s: %w", cur.Base, err)
	}
	if len(cur.Ed25519) != ed25519.SeedSize {
		return nil, fmt.Errorf("DKIM ed25519 key of %s: %w", cur.Base, schema.ErrInvalid)
	}
	keys := []dkimKey{
		{selector: cur.edSelector(), signer: ed25519.NewKeyFromSeed(cur.Ed25519)},
		{selector: cur.rsaSelector(), signer: rsaKey},
	}
	s.remember(dn, raw, keys)
	return keys, nil
}

func (s *DKIMSigner) cached(dn string, raw []byte) []dkimKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cache[dn]
	if !ok || time.Now().After(e.expires) || e.source != sha256.Sum256(raw) {
		return nil
	}
	return e.keys
}

func (s *DKIMSigner) remember(dn string, raw []byte, keys []dkimKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) >= dkimCacheEntries {
		clear(s.cache)
	}
	s.cache[dn] = dkimCacheEntry{source: sha256.Sum256(raw), keys: keys, expires: time.Now().Add(dkimCacheTTL)}
}

// signedFields lists the header fields to sign: each of dkimSignedFields
// as often as the message has it, From once more.
func signedFields(message []byte) []string {
	header := message
	if len(header) > maxSignedHeader {
		header = header[:maxSignedHeader]
	}
	count := map[string]int{}
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // end of the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // a folded continuation
		}
		if i := bytes.IndexByte(line, ':'); i > 0 {
			count[strings.ToLower(strings.TrimRight(string(line[:i]), " \t"))]++
		}
	}
	var out []string
	for _, f := range dkimSignedFields {
		n := count[strings.ToLower(f)]
		if f == "From" {
			n++
		}
		for range n {
			out = append(out, f)
		}
	}
	return out
}
