package directory

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Admin tokens authenticate the HTTP admin API and the web admin page.
// Each is a meta setting "admin_token/<name>" holding, sealed, the
// token's SHA-256 hash, never the token: a token is 256 random bits, so
// a fast hash cannot be searched, and checking one costs a hash and a
// few decryptions rather than an argon2id run per request.
const (
	adminTokenPrefix = "admin_token/"
	// AdminTokenPrefix starts every admin token, so a leaked one is
	// recognisable (secret scanners, logs).
	AdminTokenPrefix = "mct_"
	// MaxAdminTokens is how many admin tokens a cluster may have.
	MaxAdminTokens = 100
	// MaxAdminTokenName is the longest admin token name, in bytes.
	MaxAdminTokenName = 64
	// adminTokenBytes is the random part of a token.
	adminTokenBytes = 32
	// maxAdminTokenLength bounds what a check hashes.
	maxAdminTokenLength = 128
)

// Errors of admin token changes, for callers that branch on them.
var (
	// ErrNoSuchAdminToken: no admin token has the name.
	ErrNoSuchAdminToken = errors.New("no such admin token")
	// ErrAdminTokenExists: an admin token has the name already.
	ErrAdminTokenExists = errors.New("an admin token with this name exists")
)

var adminTokenOwner = schema.ID{}

// adminTokenRecord is the sealed value of an admin token.
type adminTokenRecord struct {
	Name    string `json:"n"`
	Hash    string `json:"h"` // hex SHA-256 of the token
	Created int64  `json:"c"`
}

// AdminToken is what the admin interface shows of an admin token: never
// the token or its hash.
type AdminToken struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

func adminTokenKey(name string) string { return adminTokenPrefix + name }

func hashAdminToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// checkAdminTokenName checks a name against its grammar: 1 to
// MaxAdminTokenName bytes of ASCII letters, digits and . _ - @.
func checkAdminTokenName(name string) error {
	if name == "" || len(name) > MaxAdminTokenName {
		return fmt.Errorf("admin token name must have 1 to %d characters: %w", MaxAdminTokenName, schema.ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-@", c) >= 0 {
			continue
		}
		return fmt.Errorf("admin token name may hold only letters, digits and . _ - @: %w", schema.ErrInvalid)
	}
	return nil
}

// AddAdminToken creates an admin token named name and returns it; only
// its hash is stored, so nobody can see it again.
func (d *Directory) AddAdminToken(ctx context.Context, name string) (string, error) {
	if err := checkAdminTokenName(name); err != nil {
		return "", err
	}
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return "", fmt.Errorf("add admin token: %w", err)
	}
	recs, err := d.adminTokens()
	if err != nil {
		return "", fmt.Errorf("add admin token: %w", err)
	}
	if len(recs) >= MaxAdminTokens {
		return "", fmt.Errorf("add admin token: the cluster has %d admin tokens, the most it may have: revoke one first: %w", len(recs), schema.ErrInvalid)
	}
	raw := make([]byte, adminTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("add admin token: %w", err)
	}
	token := AdminTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	key := adminTokenKey(name)
	sealed, err := d.sealSetting(adminTokenOwner, key, adminTokenRecord{Name: name, Hash: hashAdminToken(token), Created: d.now().UnixNano()})
	if err != nil {
		return "", fmt.Errorf("add admin token: %w", err)
	}
	_, err = d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: key, OldAbsent: true, New: sealed})
	if errors.Is(err, schema.ErrConflict) {
		return "", fmt.Errorf("add admin token %q: %w", name, ErrAdminTokenExists)
	}
	if err != nil {
		return "", fmt.Errorf("add admin token: %w", err)
	}
	return token, nil
}

// AdminTokens lists the admin tokens by name, as the meta leader has
// them.
func (d *Directory) AdminTokens(ctx context.Context) ([]AdminToken, error) {
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	recs, err := d.adminTokens()
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	out := make([]AdminToken, 0, len(recs))
	for _, r := range recs {
		out = append(out, AdminToken{Name: r.Name, Created: time.Unix(0, r.Created).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RevokeAdminToken deletes the admin token named name; requests with it
// fail from then on, on every node once its meta replica has the change.
func (d *Directory) RevokeAdminToken(ctx context.Context, name string) error {
	if err := checkAdminTokenName(name); err != nil {
		return err
	}
	if err := d.c.CatchUpMeta(ctx); err != nil {
		return fmt.Errorf("revoke admin token: %w", err)
	}
	key := adminTokenKey(name)
	old, err := d.setting(key)
	if err != nil {
		return fmt.Errorf("revoke admin token: %w", err)
	}
	if old == nil {
		return fmt.Errorf("revoke admin token %q: %w", name, ErrNoSuchAdminToken)
	}
	_, err = d.c.Apply(ctx, MetaShard, &schema.SwapSetting{Key: key, Old: old})
	if errors.Is(err, schema.ErrConflict) {
		return fmt.Errorf("revoke admin token %q: %w", name, ErrNoSuchAdminToken)
	}
	if err != nil {
		return fmt.Errorf("revoke admin token: %w", err)
	}
	return nil
}

// CheckAdminToken returns the name of the admin token token is, and ok
// false when it is none (unknown, revoked or malformed). It reads this
// node's meta replica, so a token created through another node a moment
// ago may not be known yet. The comparison takes the same time whichever
// token matches.
func (d *Directory) CheckAdminToken(token string) (name string, ok bool, err error) {
	if !strings.HasPrefix(token, AdminTokenPrefix) || len(token) > maxAdminTokenLength {
		return "", false, nil
	}
	want, _ := hex.DecodeString(hashAdminToken(token))
	recs, err := d.adminTokens()
	if err != nil {
		return "", false, fmt.Errorf("check admin token: %w", err)
	}
	for _, r := range recs {
		have, err := hex.DecodeString(r.Hash)
		if err == nil && subtle.ConstantTimeCompare(have, want) == 1 {
			name, ok = r.Name, true
		}
	}
	return name, ok, nil
}

// AdminTokenValid reports whether the admin token named name still
// exists with the hash of token; a web session started with a token ends
// when the token is revoked.
func (d *Directory) AdminTokenValid(name, token string) (bool, error) {
	got, ok, err := d.CheckAdminToken(token)
	return ok && got == name, err
}

// adminTokens reads every admin token record of this node's replica.
func (d *Directory) adminTokens() ([]adminTokenRecord, error) {
	var out []adminTokenRecord
	err := d.c.ViewMeta(func(r *raftstore.Reader) error {
		for k, v := range r.Settings(adminTokenPrefix) {
			var rec adminTokenRecord
			if err := d.openSetting(adminTokenOwner, k, v, &rec); err != nil {
				d.log.Warn("admin token record does not open", "err", err)
				continue
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}
