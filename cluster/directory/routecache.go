package directory

import (
	"sync"
)

// routeEntries bounds the addresses a routeCache keeps between two meta
// entries; past it, the cache starts over.
const routeEntries = 4096

// routeCache keeps the users recipient addresses resolved to, as of one
// applied index of this node's meta replica. A message costs several
// lookups of each recipient (RCPT, its quota check, the delivery, the
// delivery log), each of them a few read transactions of the replica,
// keyed hashes of the names and an opened user record. The replica's
// state at a given index is the same whenever it is read, so an entry
// holds exactly until the replica applies another entry; any entry (a
// user, an alias, a catch-all, a key rotation, or none of these)
// empties the cache. Failures are not kept: a miss catches up with the
// meta leader (resolveRecipients) every time.
type routeCache struct {
	mu      sync.Mutex
	index   uint64 // the meta index the entries were read at
	entries map[string][]User
}

// get returns a copy of what address resolved to at index.
func (c *routeCache) get(index uint64, address string) ([]*User, bool) {
	if index == 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.index != index {
		return nil, false
	}
	us, ok := c.entries[address]
	if !ok {
		return nil, false
	}
	return copyUsers(us), true
}

// put keeps what address resolved to on a read that started at index. A
// read that started before the entries' index is dropped: what it read
// may be older than they are.
func (c *routeCache) put(index uint64, address string, users []*User) {
	if index == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case index < c.index:
		return
	case index > c.index || len(c.entries) >= routeEntries:
		c.index, c.entries = index, make(map[string][]User)
	}
	kept := make([]User, len(users))
	for i, u := range users {
		kept[i] = *u
	}
	c.entries[address] = kept
}

// copyUsers returns fresh Users: callers may change what they get.
func copyUsers(us []User) []*User {
	out := make([]*User, len(us))
	for i := range us {
		u := us[i]
		out[i] = &u
	}
	return out
}
