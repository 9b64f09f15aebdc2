package directory

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	keyCacheTTL     = 10 * time.Minute
	keyCacheEntries = 10000
)

// keyCache keeps unwrapped user keys for a while, so that delivering to
// or serving a user does not unwrap its key through the hierarchy each
// time. An entry is tied to the exact wrapped key and domain it was
// unwrapped from; a deleted user's entry is dropped, and a user whose
// record is gone is never looked up here.
type keyCache struct {
	mu      sync.Mutex
	entries map[schema.ID]keyEntry
}

type keyEntry struct {
	source  [32]byte
	keys    *UserKeys
	expires time.Time
}

func newKeyCache() *keyCache { return &keyCache{entries: map[schema.ID]keyEntry{}} }

func keySource(u schema.UserRecord) [32]byte {
	h := sha256.New()
	h.Write(u.Domain[:])
	h.Write(u.WrappedKey)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func (c *keyCache) get(u schema.UserRecord) *UserKeys {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[u.ID]
	if !ok || time.Now().After(e.expires) || e.source != keySource(u) {
		return nil
	}
	return e.keys
}

func (c *keyCache) put(u schema.UserRecord, k *UserKeys) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= keyCacheEntries {
		now := time.Now()
		for id, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, id)
			}
		}
		if len(c.entries) >= keyCacheEntries {
			c.entries = map[schema.ID]keyEntry{}
		}
	}
	c.entries[u.ID] = keyEntry{source: keySource(u), keys: k, expires: time.Now().Add(keyCacheTTL)}
}

func (c *keyCache) forget(user schema.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, user)
}
