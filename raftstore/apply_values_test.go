package raftstore

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestUserValuesAreCompareAndSet: a user value changes only from the
// value the proposer read; a mailbox's values go with the mailbox.
func TestUserValuesAreCompareAndSet(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	value := func(scope schema.ID, name string) []byte {
		t.Helper()
		res, err := s.Query(Query{Kind: QueryUserValue, User: f.user, Mailbox: scope, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return res.Value
	}
	swap := func(p *schema.SwapUserValue) error {
		p.User = f.user
		_, err := applyErr(s, schema.NewID(), p)
		return err
	}

	if err := swap(&schema.SwapUserValue{Scope: f.other, Name: "recent", OldAbsent: true, New: []byte{5}}); err != nil {
		t.Fatal(err)
	}
	// Two sessions read 5; only the first moves it on.
	claim := &schema.SwapUserValue{Scope: f.other, Name: "recent", Old: []byte{5}, New: []byte{7}}
	if err := swap(claim); err != nil {
		t.Fatal(err)
	}
	if err := swap(&schema.SwapUserValue{Scope: f.other, Name: "recent", Old: []byte{5}, New: []byte{6}}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("second claim: %v, want conflict", err)
	}
	if err := swap(&schema.SwapUserValue{Scope: f.other, Name: "recent", OldAbsent: true, New: []byte{1}}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("create over a value: %v, want conflict", err)
	}
	if got := value(f.other, "recent"); string(got) != "\x07" {
		t.Fatalf("value %q", got)
	}

	// User-wide values are apart from mailbox-scoped ones.
	if err := swap(&schema.SwapUserValue{Name: "recent", OldAbsent: true, New: []byte("u")}); err != nil {
		t.Fatal(err)
	}
	if got := value(schema.ID{}, "recent"); string(got) != "u" {
		t.Fatalf("user value %q", got)
	}

	// Refused: a missing mailbox, no name, a value over the limit.
	if err := swap(&schema.SwapUserValue{Scope: schema.NewID(), Name: "x", OldAbsent: true, New: []byte{1}}); !errors.Is(err, schema.ErrNoSuchMailbox) {
		t.Errorf("value of a missing mailbox: %v", err)
	}
	if err := swap(&schema.SwapUserValue{OldAbsent: true, New: []byte{1}}); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("value without a name: %v", err)
	}
	if err := swap(&schema.SwapUserValue{Name: "big", OldAbsent: true, New: make([]byte, schema.MaxUserValue+1)}); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("oversize value: %v", err)
	}

	// Deleting the mailbox deletes its values, not the user's.
	apply(t, s, &schema.DeleteMailbox{User: f.user, Mailbox: f.other})
	if got := value(f.other, "recent"); got != nil {
		t.Errorf("value of a deleted mailbox: %q", got)
	}
	if got := value(schema.ID{}, "recent"); string(got) != "u" {
		t.Errorf("user value after a mailbox delete: %q", got)
	}
	// A nil New deletes.
	if err := swap(&schema.SwapUserValue{Name: "recent", Old: []byte("u")}); err != nil {
		t.Fatal(err)
	}
	if got := value(schema.ID{}, "recent"); got != nil {
		t.Errorf("deleted value: %q", got)
	}
}

// TestAppendClaimsRecent: an Append with ClaimRecent raises the
// mailbox's \Recent claim to its UID in the same commit and reports the
// claim before it, the value sessions move with SwapUserValue; a retry
// answers with the first claim, and an Append without the flag leaves
// the claim alone.
func TestAppendClaimsRecent(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	claim := func() []byte {
		t.Helper()
		res, err := s.Query(Query{Kind: QueryUserValue, User: f.user, Mailbox: f.inbox, Name: schema.RecentValue})
		if err != nil {
			t.Fatal(err)
		}
		// A mailbox's snapshot carries the same claim, for SELECT's.
		snap, err := s.Query(Query{Kind: QuerySnapshot, User: f.user, Mailbox: f.inbox})
		if err != nil || !snap.ValueRead || !bytes.Equal(snap.Value, res.Value) {
			t.Fatalf("snapshot's claim %x (read %v, %v), want %x", snap.Value, snap.ValueRead, err, res.Value)
		}
		return res.Value
	}
	msg := func(claimRecent bool) *schema.Append {
		return &schema.Append{User: f.user, Mailbox: f.inbox, Message: schema.NewID(), Blob: schema.NewID(),
			Size: 1, Chunks: [][]byte{{'x'}}, ClaimRecent: claimRecent}
	}

	first := apply(t, s, msg(true))
	if !first.RecentClaimed || first.RecentBefore != 0 || string(claim()) != "\x00\x00\x00\x01" {
		t.Fatalf("first claim: %+v, value %x", first, claim())
	}
	apply(t, s, msg(false)) // UID 2: not claimed
	if string(claim()) != "\x00\x00\x00\x01" {
		t.Fatalf("an append without the flag moved the claim to %x", claim())
	}
	// Another session claims through UID 2 as ClaimRecent does.
	if _, err := applyErr(s, schema.NewID(), &schema.SwapUserValue{User: f.user, Scope: f.inbox, Name: schema.RecentValue,
		Old: []byte{0, 0, 0, 1}, New: []byte{0, 0, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	req := schema.NewID()
	p := msg(true)
	third, err := applyErr(s, req, p)
	if err != nil || !third.RecentClaimed || third.RecentBefore != 2 || third.UIDs[0] != 3 {
		t.Fatalf("third: %+v, %v", third, err)
	}
	again, err := applyErr(s, req, p)
	if err != nil || !again.RecentClaimed || again.RecentBefore != 2 || again.UIDs[0] != 3 {
		t.Fatalf("retry: %+v, %v", again, err)
	}
	if string(claim()) != "\x00\x00\x00\x03" {
		t.Fatalf("value %x after the third claim", claim())
	}
	// The claim is per mailbox.
	other := apply(t, s, &schema.Append{User: f.user, Mailbox: f.other, Message: schema.NewID(), Blob: schema.NewID(),
		Size: 1, Chunks: [][]byte{{'y'}}, ClaimRecent: true})
	if !other.RecentClaimed || other.RecentBefore != 0 {
		t.Fatalf("other mailbox: %+v", other)
	}
}
