package mailstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// A subscription is the mailbox's own attribute while the mailbox exists.
// When a subscribed mailbox is deleted its name stays subscribed (RFC 3501
// section 6.3.6): the name moves to the user's "subscriptions" value, a
// sealed list of names, changed by compare-and-set so that concurrent
// sessions cannot lose each other's changes.
const (
	subscriptionsValue = "subscriptions"
	// maxKeptSubscriptions bounds the names kept for deleted mailboxes;
	// past it the oldest are dropped.
	maxKeptSubscriptions = 1000
	// maxSwapAttempts bounds the retries of a compare-and-set that lost a
	// race.
	maxSwapAttempts = 16
)

// keptSubscriptions reads the subscribed names kept apart from mailboxes,
// with the raw value a swap must expect.
func (a *Account) keptSubscriptions(ctx context.Context) ([]string, []byte, error) {
	res, err := a.query(ctx, raftstore.Query{Kind: raftstore.QueryUserValue, Name: subscriptionsValue})
	if err != nil {
		return nil, nil, fmt.Errorf("read subscriptions: %w", err)
	}
	if res.Value == nil {
		return nil, nil, nil
	}
	b, err := a.s.sealer.Open(a.keys.Ring(), seal.KindUserValue, a.user[:], []byte(subscriptionsValue), res.Value)
	if err != nil {
		return nil, nil, fmt.Errorf("open subscriptions: %w", err)
	}
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return nil, nil, fmt.Errorf("decode subscriptions: %w", err)
	}
	return names, res.Value, nil
}

// updateKeptSubscriptions applies change to the kept names and writes
// them back if they changed, retrying when another session wrote first.
func (a *Account) updateKeptSubscriptions(ctx context.Context, change func([]string) ([]string, bool)) error {
	for attempt := 0; ; attempt++ {
		names, old, err := a.keptSubscriptions(ctx)
		if err != nil {
			return err
		}
		names, changed := change(names)
		if !changed {
			return nil
		}
		if len(names) > maxKeptSubscriptions {
			names = names[len(names)-maxKeptSubscriptions:]
		}
		p := &schema.SwapUserValue{User: a.user, Name: subscriptionsValue, OldAbsent: old == nil, Old: old}
		if len(names) > 0 {
			b, err := json.Marshal(names)
			if err != nil {
				return fmt.Errorf("encode subscriptions: %w", err)
			}
			if p.New, err = a.s.sealer.Seal(a.keys.Ring(), seal.KindUserValue, a.user[:], []byte(subscriptionsValue), b); err != nil {
				return fmt.Errorf("seal subscriptions: %w", err)
			}
		}
		_, err = a.applyUnwatched(ctx, p)
		if err == nil || !errors.Is(err, schema.ErrConflict) || attempt+1 >= maxSwapAttempts {
			if err != nil {
				return fmt.Errorf("write subscriptions: %w", err)
			}
			return nil
		}
	}
}

// Subscriptions lists the subscribed names, sorted: the subscribed
// mailboxes and the names kept subscribed after their mailbox was deleted.
func (a *Account) Subscriptions(ctx context.Context) ([]string, error) {
	boxes, err := a.Mailboxes(ctx)
	if err != nil {
		return nil, err
	}
	kept, _, err := a.keptSubscriptions(ctx)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(boxes)+len(kept))
	for _, b := range boxes {
		if b.Subscribed {
			set[b.Name] = true
		}
	}
	for _, n := range kept {
		set[n] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, ctx.Err()
}

// keepSubscription adds name to the kept names.
func (a *Account) keepSubscription(ctx context.Context, name string) error {
	return a.updateKeptSubscriptions(ctx, func(names []string) ([]string, bool) {
		for _, n := range names {
			if n == name {
				return names, false
			}
		}
		return append(names, name), true
	})
}

// dropSubscription removes name from the kept names and reports whether
// it was there.
func (a *Account) dropSubscription(ctx context.Context, name string) (bool, error) {
	found := false
	err := a.updateKeptSubscriptions(ctx, func(names []string) ([]string, bool) {
		found = false
		out := names[:0:0]
		for _, n := range names {
			if n == name {
				found = true
				continue
			}
			out = append(out, n)
		}
		return out, found
	})
	return found, err
}
