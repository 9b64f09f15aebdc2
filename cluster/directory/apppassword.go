package directory

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// App passwords are generated, never chosen: 16 characters from a
// 32-letter alphabet, printed in four groups of four ("abcd-efgh-jkmn-
// pqrs"). That is 80 random bits: no online guessing within the lockout
// limits, and no offline search of a leaked argon2id hash, comes close,
// which is why an app password may still log in while its user is
// locked out (see protocols.AuthGuard.Login). Lowercase letters and
// digits, without l, o, 0 and 1, are quick to type on a phone keyboard
// and cannot be misread; dashes and spaces are ignored when one is
// typed, and letters match in either case.
const (
	codeAlphabet      = "abcdefghijkmnpqrstuvwxyz23456789"
	appPasswordGroups = 4
	appPasswordGroup  = 4
	appPasswordLength = appPasswordGroups * appPasswordGroup
)

// Limits of app passwords.
const (
	// MaxAppPasswords is how many app passwords one user may have.
	MaxAppPasswords = 50
	// MaxAppPasswordName is the longest app password name, in bytes.
	MaxAppPasswordName = 64
)

// appPassword is one app password in the sealed user record.
type appPassword struct {
	// ID is random; it names the record of the last use.
	ID   string `json:"i"`
	Name string `json:"n"`
	// Hash is the argon2id PHC string of the normalised password.
	Hash string `json:"h"`
	// Hint is a 16-bit keyed tag of the password (see appPasswordHint).
	Hint uint16 `json:"k"`
	// Scope lists the protocols it logs in with, in schema.LoginProtocols
	// order.
	Scope   []string `json:"s"`
	Created int64    `json:"c"`
}

// AppPassword is what the admin interface shows of an app password: never
// the password or its hash.
type AppPassword struct {
	Name    string    `json:"name"`
	Scope   []string  `json:"scope"`
	Created time.Time `json:"created"`
	// LastUsed and LastIP are those of a successful login, recorded at
	// most once an hour (zero and "" when never used).
	LastUsed time.Time `json:"last_used,omitzero"`
	LastIP   string    `json:"last_ip,omitempty"`
}

// randomCode returns groups of size characters of codeAlphabet, joined by
// dashes. 32 letters make each random byte's low five bits one letter,
// without bias.
func randomCode(groups, size int) string {
	b := make([]byte, groups*size)
	if _, err := rand.Read(b); err != nil {
		panic("directory: crypto/rand: " + err.Error()) // never fails on supported systems
	}
	var sb strings.Builder
	for i, c := range b {
		if i > 0 && i%size == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(codeAlphabet[c&31])
	}
	return sb.String()
}

// normalizeCode returns a generated code as it is hashed: without dashes
// and spaces, in lower case. ok is false for a string that cannot be a
// code of length characters, which then costs no hash check at all.
func normalizeCode(s string, length int) (code string, ok bool) {
	if len(s) > 4*length {
		return "", false
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-' || c == ' ':
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if strings.IndexByte(codeAlphabet, c) < 0 {
			return "", false
		}
		sb.WriteByte(c)
	}
	if sb.Len() != length {
		return "", false
	}
	return sb.String(), true
}

// appPasswordHint is a 16-bit tag of a normalised app password under a
// key derived from the master key, stored (sealed) with its hash. A login
// checks with argon2id only the app passwords whose tag matches, so a
// user with many app passwords costs a wrong guess one hash check, not
// one per app password. The tag says almost nothing of an 80-bit
// password, and only to a holder of the master key.
func (d *Directory) appPasswordHint(user schema.ID, normalized string) uint16 {
	m := hmac.New(sha256.New, d.keys.appHint[:])
	m.Write(user[:])
	m.Write([]byte(normalized))
	return binary.BigEndian.Uint16(m.Sum(nil))
}

// checkAppPasswordName checks a name against its grammar: 1 to
// MaxAppPasswordName bytes of ASCII letters, digits, spaces and
// . _ - + @ ( ), neither starting nor ending with a space.
func checkAppPasswordName(name string) error {
	if name == "" || len(name) > MaxAppPasswordName {
		return fmt.Errorf("app password name must have 1 to %d characters: %w", MaxAppPasswordName, schema.ErrInvalid)
	}
	if name[0] == ' ' || name[len(name)-1] == ' ' {
		return fmt.Errorf("app password name starts or ends with a space: %w", schema.ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(" ._-+@()", c) >= 0 {
			continue
		}
		return fmt.Errorf("app password name may hold only letters, digits, spaces and . _ - + @ ( ): %w", schema.ErrInvalid)
	}
	return nil
}

// appPassword returns the app password with id, or nil.
func (u *userInfo) appPassword(id string) *appPassword {
	for i := range u.AppPasswords {
		if u.AppPasswords[i].ID == id {
			return &u.AppPasswords[i]
		}
	}
	return nil
}

// allows reports whether credential matched ("" for the account password,
// else an app password's id) may log in over protocol, when the account
// password may (accountOK) or may not.
func (u *userInfo) allows(matched string, accountOK bool, protocol string) bool {
	if matched == "" {
		return accountOK
	}
	ap := u.appPassword(matched)
	return ap != nil && schema.ScopeAllows(ap.Scope, protocol)
}

// verifyLogin checks password against the credentials this attempt may
// use: the account password when accountOK, and the app passwords whose
// scope has the protocol and whose hint matches. It returns which one
// matched. When none may match, a dummy hash is checked, so a refusal
// costs what a wrong password does; except while the user is locked out
// (cred.OnlyAppPassword), where, as before app passwords existed, a
// guess that cannot be one costs nothing (the guard's failure delay
// answers it in the same time).
func (d *Directory) verifyLogin(ctx context.Context, rec schema.UserRecord, info userInfo, accountOK bool, cred schema.Credentials) (matched string, ok bool, err error) {
	type candidate struct{ id, hash, secret string }
	var cands []candidate
	// App passwords first: a password of their form whose hint matches
	// is almost surely one.
	if norm, isCode := normalizeCode(cred.Password, appPasswordLength); isCode && len(info.AppPasswords) > 0 {
		hint := d.appPasswordHint(rec.ID, norm)
		for _, ap := range info.AppPasswords {
			if ap.Hint == hint && schema.ScopeAllows(ap.Scope, cred.Protocol) {
				cands = append(cands, candidate{ap.ID, ap.Hash, norm})
			}
		}
	}
	if accountOK {
		cands = append(cands, candidate{"", info.Password, cred.Password})
	}
	if len(cands) == 0 {
		if cred.OnlyAppPassword {
			return "", false, nil
		}
		_, err := d.hash.verify(ctx, "", cred.Password)
		return "", false, err
	}
	for _, c := range cands {
		ok, err := d.hash.verify(ctx, c.hash, c.secret)
		if err != nil {
			return "", false, err
		}
		if ok {
			return c.id, true, nil
		}
	}
	return "", false, nil
}

// AddAppPassword gives a user a new app password named name, for the
// protocols of scope (nil for imap, pop3 and smtp), and returns it. The
// password is generated here and returned only this once: the record
// keeps its argon2id hash.
func (d *Directory) AddAppPassword(ctx context.Context, address, name string, scope []string) (string, error) {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return "", err
	}
	if err := checkAppPasswordName(name); err != nil {
		return "", err
	}
	if scope, err = schema.CanonicalScope(scope); err != nil {
		return "", err
	}
	if _, _, err := d.lookupUser(ctx, addr); err != nil {
		return "", fmt.Errorf("add app password: %w", err) // before spending a hash
	}
	password := randomCode(appPasswordGroups, appPasswordGroup)
	norm, _ := normalizeCode(password, appPasswordLength)
	hash, err := d.hash.hash(ctx, norm)
	if err != nil {
		return "", err
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("add app password: %w", err)
	}
	_, err = d.updateUser(ctx, addr, func(rec schema.UserRecord, info *userInfo) error {
		if len(info.AppPasswords) >= MaxAppPasswords {
			return fmt.Errorf("the user has %d app passwords, the most allowed: revoke one first: %w", len(info.AppPasswords), schema.ErrInvalid)
		}
		for _, ap := range info.AppPasswords {
			if strings.EqualFold(ap.Name, name) {
				return fmt.Errorf("the user already has an app password named %q: %w", ap.Name, schema.ErrInvalid)
			}
		}
		info.AppPasswords = append(info.AppPasswords, appPassword{
			ID: hex.EncodeToString(id), Name: name, Hash: hash, Hint: d.appPasswordHint(rec.ID, norm),
			Scope: scope, Created: d.now().Unix(),
		})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("add app password: %w", err)
	}
	d.log.Info("app password added", "scope", strings.Join(scope, ","))
	return password, nil
}

// AppPasswords lists a user's app passwords, oldest first, with their
// last recorded use, as the meta leader has them.
func (d *Directory) AppPasswords(ctx context.Context, address string) ([]AppPassword, error) {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return nil, err
	}
	_ = d.c.CatchUpMeta(ctx) // best effort: else this node's view
	rec, info, err := d.lookupUser(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("list app passwords: %w", err)
	}
	used := d.usageOf(rec.ID)
	out := make([]AppPassword, 0, len(info.AppPasswords))
	for _, ap := range info.AppPasswords {
		p := AppPassword{Name: ap.Name, Scope: slices.Clone(ap.Scope), Created: time.Unix(ap.Created, 0).UTC()}
		if u, ok := used[ap.ID]; ok && u.Time != 0 {
			p.LastUsed, p.LastIP = time.Unix(u.Time, 0).UTC(), u.IP
		}
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b AppPassword) int { return a.Created.Compare(b.Created) })
	return out, ctx.Err()
}

// RevokeAppPassword deletes a user's app password by name (letters match
// in either case). It stops working on every node as soon as that node's
// meta replica applies the change; no cache keeps it alive.
func (d *Directory) RevokeAppPassword(ctx context.Context, address, name string) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	if err := checkAppPasswordName(name); err != nil {
		return err
	}
	var revoked string
	rec, err := d.updateUser(ctx, addr, func(_ schema.UserRecord, info *userInfo) error {
		i := slices.IndexFunc(info.AppPasswords, func(ap appPassword) bool { return strings.EqualFold(ap.Name, name) })
		if i < 0 {
			return fmt.Errorf("the user has no app password named %q: %w", name, schema.ErrInvalid)
		}
		revoked = info.AppPasswords[i].ID
		info.AppPasswords = slices.Delete(info.AppPasswords, i, i+1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke app password: %w", err)
	}
	d.usage.forget(rec.ID, revoked)
	d.forgetUsage(ctx, rec.ID, d.appPasswordIDs(rec.ID))
	d.log.Info("app password revoked")
	return nil
}

// appPasswordIDs returns the ids of a user's app passwords in this node's
// replica.
func (d *Directory) appPasswordIDs(user schema.ID) map[string]bool {
	ids := map[string]bool{}
	info, err := d.userInfoByID(user)
	if err != nil {
		return ids
	}
	for _, ap := range info.AppPasswords {
		ids[ap.ID] = true
	}
	return ids
}
