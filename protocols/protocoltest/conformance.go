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

// CheckRecentClaims checks the \Recent claims of two sessions a and b of
// one user (on different nodes, for a cluster store) in a mailbox no
// session has selected yet: a claim returns the highest UID
// claimed before and never goes back, a read (upTo 0) claims nothing, of
// two concurrent claims to the same UID exactly one gets the messages,
// an append that claims moves the same claim, and a deleted mailbox has
// no claims.
func CheckRecentClaims(t testing.TB, a, b protocols.Account, mbox schema.ID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	claim := func(acct protocols.Account, upTo schema.UID, want schema.UID) {
		t.Helper()
		prev, err := acct.ClaimRecent(ctx, mbox, upTo)
		if err != nil || prev != want {
			t.Fatalf("ClaimRecent(%d) = %d, %v; want %d", upTo, prev, err, want)
		}
	}
	claim(a, 0, 0) // a read claims nothing
	claim(b, 0, 0)
	claim(a, 2, 0) // a sees 1 and 2 first
	claim(b, 2, 2) // b sees nothing new
	claim(b, 1, 2) // a claim never goes back
	claim(a, 0, 2)

	// Both see message 3 at once: exactly one gets it.
	prevs := make(chan schema.UID, 2)
	errs := make(chan error, 2)
	for _, acct := range []protocols.Account{a, b} {
		go func(acct protocols.Account) {
			prev, err := acct.ClaimRecent(ctx, mbox, 3)
			prevs <- prev
			errs <- err
		}(acct)
	}
	winners := 0
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent claim: %v", err)
		}
		switch prev := <-prevs; prev {
		case 2:
			winners++
		case 3:
		default:
			t.Fatalf("concurrent claim returned %d", prev)
		}
	}
	if winners != 1 {
		t.Fatalf("%d sessions got message 3 as \\Recent, want 1", winners)
	}
	claim(b, 0, 3)

	// An append that claims in its own commit moves the same claim, and
	// reports it as it was before.
	before := schema.UID(3)
	for _, acct := range []protocols.Account{a, b} {
		res, err := acct.AppendClaimingRecent(ctx, mbox, []byte("Subject: claimed\r\n\r\nx\r\n"), nil, time.Time{})
		if err != nil || !res.RecentClaimed || res.RecentBefore != before {
			t.Fatalf("AppendClaimingRecent = %+v, %v; want the claim before it, %d", res, err, before)
		}
		before = max(before, res.UID)
		claim(a, 0, before)
	}
	if res, err := a.Append(ctx, mbox, []byte("Subject: plain\r\n\r\nx\r\n"), nil, time.Time{}); err != nil || res.RecentClaimed {
		t.Fatalf("Append = %+v, %v; want no claim", res, err)
	}
	claim(b, 0, before)

	if _, err := a.ClaimRecent(ctx, schema.NewID(), 1); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Errorf("claim in a missing mailbox: %v", err)
	}
}

// CheckStoreFlagsIf checks the conditional flag change of STORE
// UNCHANGEDSINCE (RFC 7162) with two sessions a and b of one user (on
// different nodes, for a cluster store): a message b changed after a
// read its MODSEQ is left alone and reported modified, the others are
// changed and take new MODSEQs, and a bound of 0 changes nothing.
func CheckStoreFlagsIf(t testing.TB, a, b protocols.Account, mbox schema.ID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var uids []schema.UID
	for i := range 3 {
		res, err := a.Append(ctx, mbox, []byte("Subject: m"+string(rune('1'+i))+"\r\n\r\nbody\r\n"), nil, time.Now())
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		uids = append(uids, res.UID)
	}
	snap, err := a.Snapshot(ctx, mbox)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	known := snap.Mailbox.HighestModSeq
	if _, err := b.StoreFlags(ctx, mbox, uids[1:2], schema.FlagsAdd, []string{"$Other"}); err != nil {
		t.Fatalf("store by the other session: %v", err)
	}
	infos, modified, err := a.StoreFlagsIf(ctx, mbox, uids, schema.FlagsAdd, []string{schema.FlagSeen}, known)
	if err != nil {
		t.Fatalf("StoreFlagsIf: %v", err)
	}
	if !slices.Equal(modified, uids[1:2]) || len(infos) != 2 {
		t.Fatalf("StoreFlagsIf: modified %v, stored %+v; want modified %v", modified, infos, uids[1:2])
	}
	for _, info := range infos {
		if info.UID == uids[1] || !info.HasFlag(schema.FlagSeen) || info.ModSeq <= known {
			t.Fatalf("StoreFlagsIf stored %+v", info)
		}
	}
	infos, modified, err = a.StoreFlagsIf(ctx, mbox, uids, schema.FlagsRemove, []string{schema.FlagSeen}, 0)
	if err != nil || len(infos) != 0 || !slices.Equal(modified, uids) {
		t.Fatalf("StoreFlagsIf(0): %+v %v %v", infos, modified, err)
	}
	after, err := b.Snapshot(ctx, mbox)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	for _, m := range after.Messages {
		if seen := m.HasFlag(schema.FlagSeen); seen == (m.UID == uids[1]) {
			t.Fatalf("after the conditional stores: %+v", m)
		}
	}
}
