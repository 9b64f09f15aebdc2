package raftstore

import (
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
