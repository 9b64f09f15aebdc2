package directory

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	authCacheTTL     = 5 * time.Minute
	authCacheEntries = 10000
)

// authCache remembers recently verified credentials so that a client that
// reconnects often (IMAP clients open several connections) does not pay
// for argon2id each time. Entries are keyed by an HMAC of the credentials
// under a key that exists only in this process's memory, and are tied to
// the exact user record they were checked against: a password change, an
// app password revoked, MFA switched on, or a deletion, on any node,
// changes that record and so invalidates them. An entry remembers which
// credential matched (the account password or one app password) but not
// whether it may log in: the caller applies the user's policy (MFA, the
// domain's requirement, the app password's scope) on every hit.
type authCache struct {
	key [32]byte

	mu      sync.Mutex
	entries map[[32]byte]authEntry
}

type authEntry struct {
	user    schema.ID
	record  [32]byte // hash of the sealed user record
	cred    string   // "" for the account password, else the app password's id
	expires time.Time
}

func newAuthCache() *authCache {
	a := &authCache{entries: make(map[[32]byte]authEntry)}
	if _, err := rand.Read(a.key[:]); err != nil {
		panic("cluster: crypto/rand: " + err.Error())
	}
	return a
}

func (a *authCache) slot(address, password string) [32]byte {
	m := hmac.New(sha256.New, a.key[:])
	m.Write([]byte(address))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return k
}

// check reports whether address and password were verified against rec
// recently, and which credential they matched.
func (a *authCache) check(rec schema.UserRecord, address, password string) (cred string, ok bool) {
	k := a.slot(address, password)
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[k]
	if !ok {
		return "", false
	}
	if time.Now().After(e.expires) || e.user != rec.ID || e.record != sha256.Sum256(rec.Sealed) {
		delete(a.entries, k)
		return "", false
	}
	return e.cred, true
}

// remember records that address and password match credential cred of
// rec.
func (a *authCache) remember(rec schema.UserRecord, address, password, cred string) {
	k := a.slot(address, password)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.entries) >= authCacheEntries {
		now := time.Now()
		for key, e := range a.entries {
			if now.After(e.expires) {
				delete(a.entries, key)
			}
		}
		if len(a.entries) >= authCacheEntries {
			a.entries = make(map[[32]byte]authEntry)
		}
	}
	a.entries[k] = authEntry{user: rec.ID, record: sha256.Sum256(rec.Sealed), cred: cred, expires: time.Now().Add(authCacheTTL)}
}

func (a *authCache) forget(user schema.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, e := range a.entries {
		if e.user == user {
			delete(a.entries, k)
		}
	}
}
