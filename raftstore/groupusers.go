package raftstore

import (
	"sync"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// groupUsers knows which users' mail the pending group has opened, so
// that a read of anyone else's mail can read the state file as committed,
// which holds that mail exactly as the last applied entry left it,
// instead of waiting behind the group's applies and its commit (see
// fsm.readUser). The pending group's transaction serves one caller at a
// time: without this, every read on a busy shard queued behind the
// writer, and a commit's syncs held them all.
type groupUsers struct {
	mu sync.Mutex
	// committed is the applied index of the state file as last committed;
	// applied is the last index applied and handed out (events, waiters).
	committed, applied uint64
	// touched holds every user whose mail an entry in (committed,
	// applied] read or wrote. A batch being applied adds its users only
	// once it is done, before it is handed out: until then no read needs
	// to show it, and the committed file does not.
	touched map[schema.ID]struct{}
}

func newGroupUsers(applied uint64) *groupUsers {
	return &groupUsers{committed: applied, applied: applied, touched: map[schema.ID]struct{}{}}
}

// add records the users of a batch applied through index, before the
// batch is handed out.
func (g *groupUsers) add(users map[schema.ID]struct{}, through uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for u := range users {
		g.touched[u] = struct{}{}
	}
	g.applied = max(g.applied, through)
}

// reset says the state file as committed holds everything through index
// and nothing is pending: after a commit, a discarded group or a restore.
func (g *groupUsers) reset(index uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.committed, g.applied = index, index
	clear(g.touched)
}

// drop forgets a pending group that was not committed: the state file
// holds what it held.
func (g *groupUsers) drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.applied = g.committed
	clear(g.touched)
}

// untouched reports whether the pending group left user's mail as the
// committed state file holds it, with that file's applied index and the
// last applied one.
func (g *groupUsers) untouched(user schema.ID) (committed, applied uint64, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, touched := g.touched[user]
	return g.committed, g.applied, !touched
}
