package raftstore

import (
	"context"
	"sync"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// eventHistory is how many recent events a replica keeps at least (and
// twice as many at most) so that a watcher that reconnects (a session on
// another node whose stream broke) resumes without a gap; one that asks
// for older events gets a resync.
const eventHistory = 8192

// Event is a change to a user's mail, as the FSM applied it. Message is
// the sealed record for ChangeAdded and ChangeFlags events.
type Event struct {
	Index   uint64
	ReqID   schema.ID
	User    schema.ID
	Kind    schema.ChangeKind
	Mailbox schema.ID
	UID     schema.UID
	Message *schema.MessageRecord
}

// notifier hands events to per-user subscribers, remembers the recent
// ones, and tracks up to which log index events have been handed out.
type notifier struct {
	mu   sync.Mutex
	next int
	subs map[schema.ID]map[int]func([]Event)
	// ring holds every event with an index above floor, oldest first.
	ring  []Event
	floor uint64
	// published is the highest applied index whose events are out.
	published uint64
	advanced  chan struct{} // closed and replaced when published grows
}

func newNotifier(applied uint64) *notifier {
	return &notifier{
		subs:      make(map[schema.ID]map[int]func([]Event)),
		floor:     applied,
		published: applied,
		advanced:  make(chan struct{}),
	}
}

// subscribe registers fn for user's events applied after from; events
// between from and now are replayed first. If they are no longer known,
// fn first receives a ChangeResync. fn runs under the notifier's lock and
// must not block.
func (n *notifier) subscribe(user schema.ID, from uint64, fn func([]Event)) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if from < n.published {
		if from < n.floor {
			fn([]Event{{User: user, Kind: schema.ChangeResync, Index: n.published}})
		} else {
			var replay []Event
			for _, e := range n.ring {
				if e.Index > from && e.User == user {
					replay = append(replay, e)
				}
			}
			if len(replay) > 0 {
				fn(replay)
			}
		}
	}
	n.next++
	id := n.next
	if n.subs[user] == nil {
		n.subs[user] = make(map[int]func([]Event))
	}
	n.subs[user][id] = fn
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.subs[user], id)
		if len(n.subs[user]) == 0 {
			delete(n.subs, user)
		}
	}
}

// publish delivers events grouped by user, preserving their order, and
// records that everything up to index is out.
func (n *notifier) publish(events []Event, index uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.remember(events)
	if len(n.subs) > 0 && len(events) > 0 {
		byUser := make(map[schema.ID][]Event)
		var order []schema.ID
		for _, e := range events {
			if _, ok := n.subs[e.User]; !ok {
				continue
			}
			if _, seen := byUser[e.User]; !seen {
				order = append(order, e.User)
			}
			byUser[e.User] = append(byUser[e.User], e)
		}
		for _, u := range order {
			for _, fn := range n.subs[u] {
				fn(byUser[u])
			}
		}
	}
	if index > n.published {
		n.published = index
		close(n.advanced)
		n.advanced = make(chan struct{})
	}
}

// remember adds events to the history. The history keeps at least the
// newest eventHistory events and at most twice as many: it is cut back
// in place, and only when it reaches the double, so that an apply costs
// in proportion to its own events and not to the history's length.
func (n *notifier) remember(events []Event) {
	n.ring = append(n.ring, events...)
	if len(n.ring) <= 2*eventHistory {
		return
	}
	cut := len(n.ring) - eventHistory
	// Never split one index's events: the floor must be a whole index.
	for cut < len(n.ring) && n.ring[cut].Index == n.ring[cut-1].Index {
		cut++
	}
	n.floor = n.ring[cut-1].Index
	kept := copy(n.ring, n.ring[cut:])
	clear(n.ring[kept:]) // let go of the dropped events' records
	n.ring = n.ring[:kept]
}

// resyncAll tells every subscriber that state was replaced wholesale (a
// snapshot restored at index) and forgets the history.
func (n *notifier) resyncAll(index uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ring = nil
	n.floor = index
	for u, subs := range n.subs {
		for _, fn := range subs {
			fn([]Event{{User: u, Kind: schema.ChangeResync, Index: index}})
		}
	}
	if index > n.published {
		n.published = index
	}
	close(n.advanced)
	n.advanced = make(chan struct{})
}

// publishedIndex returns the highest index whose events are out.
func (n *notifier) publishedIndex() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.published
}

// wait blocks until the events of index have been handed out.
func (n *notifier) wait(ctx context.Context, index uint64, closed <-chan struct{}) error {
	for {
		n.mu.Lock()
		if n.published >= index {
			n.mu.Unlock()
			return nil
		}
		ch := n.advanced
		n.mu.Unlock()
		select {
		case <-ch:
		case <-closed:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
