package raftstore

import (
	"sync"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

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

// notifier hands events to per-user subscribers.
type notifier struct {
	mu   sync.Mutex
	next int
	subs map[schema.ID]map[int]func([]Event)
}

func newNotifier() *notifier {
	return &notifier{subs: make(map[schema.ID]map[int]func([]Event))}
}

func (n *notifier) subscribe(user schema.ID, fn func([]Event)) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
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

// publish delivers events grouped by user, preserving their order.
func (n *notifier) publish(events []Event) {
	if len(events) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.subs) == 0 {
		return
	}
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

// resyncAll tells every subscriber that state was replaced wholesale.
func (n *notifier) resyncAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u, subs := range n.subs {
		for _, fn := range subs {
			fn([]Event{{User: u, Kind: schema.ChangeResync}})
		}
	}
}
