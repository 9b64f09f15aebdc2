package protocoltest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// CheckSubscriptions checks the subscription rules every protocols.Account
// must keep, on a fresh account: a subscribed mailbox's name stays
// subscribed after the mailbox is deleted (RFC 3501 section 6.3.6), can
// then be unsubscribed once, and a mailbox made again under a subscribed
// name is subscribed; other names without a mailbox are
// schema.ErrNoSuchMailbox.
func CheckSubscriptions(t testing.TB, a protocols.Account) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	subscribed := func() []string {
		t.Helper()
		subs, err := a.Subscriptions(ctx)
		must("subscriptions", err)
		var ours []string
		for _, s := range subs {
			if strings.HasPrefix(s, "Subs/") {
				ours = append(ours, s)
			}
		}
		return ours
	}
	must("create", a.CreateMailbox(ctx, "Subs/kept", schema.SpecialNone))
	must("create", a.CreateMailbox(ctx, "Subs/plain", schema.SpecialNone))
	must("subscribe", a.SetSubscribed(ctx, "Subs/kept", true))
	if got := subscribed(); !slices.Equal(got, []string{"Subs/kept"}) {
		t.Fatalf("subscriptions %q", got)
	}
	must("delete", a.DeleteMailbox(ctx, "Subs/kept"))
	must("delete", a.DeleteMailbox(ctx, "Subs/plain"))
	if got := subscribed(); !slices.Equal(got, []string{"Subs/kept"}) {
		t.Fatalf("subscriptions after the delete: %q, want the deleted mailbox's name", got)
	}
	if err := a.SetSubscribed(ctx, "Subs/plain", true); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Errorf("subscribe to a name without a mailbox: %v", err)
	}
	if err := a.SetSubscribed(ctx, "Subs/kept", true); err != nil {
		t.Errorf("subscribe again to a kept name: %v", err)
	}

	// Made again, the mailbox is subscribed; deleted again, still kept.
	must("create again", a.CreateMailbox(ctx, "Subs/kept", schema.SpecialNone))
	if got := subscribed(); !slices.Equal(got, []string{"Subs/kept"}) {
		t.Fatalf("subscriptions with the mailbox made again: %q", got)
	}
	must("unsubscribe", a.SetSubscribed(ctx, "Subs/kept", false))
	if got := subscribed(); len(got) != 0 {
		t.Fatalf("subscriptions after unsubscribing: %q", got)
	}
	must("subscribe", a.SetSubscribed(ctx, "Subs/kept", true))
	must("delete again", a.DeleteMailbox(ctx, "Subs/kept"))
	must("unsubscribe a kept name", a.SetSubscribed(ctx, "Subs/kept", false))
	if got := subscribed(); len(got) != 0 {
		t.Fatalf("subscriptions after unsubscribing a kept name: %q", got)
	}
	if err := a.SetSubscribed(ctx, "Subs/kept", false); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Errorf("unsubscribe a name no longer subscribed: %v", err)
	}
}
