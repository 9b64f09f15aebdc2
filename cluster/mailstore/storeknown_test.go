package mailstore_test

import (
	"slices"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestStoreFlagsKnown: a flag change decided on the state a session
// holds reads nothing when that state is current, and when it is old
// (another session changed or expunged the message since) the result is
// the one a change decided on the stored state gives.
func TestStoreFlagsKnown(t *testing.T) {
	rec, a := newRecordedAccount(t, "known@example.test")
	inbox := mailbox(t, a, "INBOX").ID
	for i := range 4 {
		if _, err := a.Append(ctx(t), inbox, []byte("Subject: known\r\n\r\nbody\r\n"), []string{schema.FlagFlagged}, time.Now()); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	view := func() []schema.MessageInfo {
		t.Helper()
		snap, err := a.Snapshot(ctx(t), inbox)
		if err != nil {
			t.Fatal(err)
		}
		return snap.Messages
	}
	flagsOf := func(infos []schema.MessageInfo, uid schema.UID) []string {
		for _, m := range infos {
			if m.UID == uid {
				return m.Flags
			}
		}
		return nil
	}
	check := func(what string, infos []schema.MessageInfo, uid schema.UID, want ...string) {
		t.Helper()
		stored := flagsOf(view(), uid)
		if !schema.SameFlags(stored, want) || (infos != nil && !schema.SameFlags(flagsOf(infos, uid), want)) {
			t.Errorf("%s: stored %v, returned %v, want %v", what, stored, flagsOf(infos, uid), want)
		}
	}

	// Current state: one write, no read.
	known := view()
	rec.reads()
	infos, _, err := a.StoreFlagsKnown(ctx(t), inbox, known[:1], schema.FlagsAdd, []string{schema.FlagSeen}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := rec.reads(); n != 0 {
		t.Errorf("a change on the current state read the messages %d times, want none", n)
	}
	check("current state", infos, known[0].UID, schema.FlagFlagged, schema.FlagSeen)

	// Old state: message 2 got \Answered and message 3 lost \Flagged
	// through another session; message 4 was expunged.
	old := view()
	if _, err := a.StoreFlags(ctx(t), inbox, []schema.UID{old[1].UID}, schema.FlagsAdd, []string{schema.FlagAnswered}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.StoreFlags(ctx(t), inbox, []schema.UID{old[2].UID}, schema.FlagsRemove, []string{schema.FlagFlagged}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Expunge(ctx(t), inbox, []schema.ExpungeTarget{{UID: old[3].UID}}); err != nil {
		t.Fatal(err)
	}
	infos, _, err = a.StoreFlagsKnown(ctx(t), inbox, old[1:], schema.FlagsRemove, []string{schema.FlagSeen}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("removing a flag the message lacks, on a changed message", infos, old[1].UID, schema.FlagFlagged, schema.FlagAnswered)
	if len(infos) != 2 {
		t.Errorf("returned %d messages, want the 2 that exist: %v", len(infos), infos)
	}
	infos, _, err = a.StoreFlagsKnown(ctx(t), inbox, old[1:3], schema.FlagsAdd, []string{schema.FlagFlagged}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Message 3's old state already has \Flagged: the change must not
	// be skipped on it.
	check("adding a flag the old state has", infos, old[2].UID, schema.FlagFlagged)
	check("adding a flag the message has", infos, old[1].UID, schema.FlagFlagged, schema.FlagAnswered)
	// A change the old state makes: decided again on the stored state,
	// so \Answered, set since, stays.
	infos, _, err = a.StoreFlagsKnown(ctx(t), inbox, old[1:2], schema.FlagsAdd, []string{schema.FlagSeen}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("a change decided on an old state", infos, old[1].UID, schema.FlagFlagged, schema.FlagAnswered, schema.FlagSeen)

	// A known state without a MODSEQ cannot make the update
	// conditional: it is read first.
	noModSeq := view()[1]
	noModSeq.ModSeq, noModSeq.Flags = 0, nil
	infos, _, err = a.StoreFlagsKnown(ctx(t), inbox, []schema.MessageInfo{noModSeq}, schema.FlagsAdd, []string{schema.FlagDraft}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("a known state without a MODSEQ", infos, noModSeq.UID, schema.FlagFlagged, schema.FlagAnswered, schema.FlagSeen, schema.FlagDraft)

	// UNCHANGEDSINCE decided on the stored MODSEQ, not the known one.
	old = view()
	if _, err := a.StoreFlags(ctx(t), inbox, []schema.UID{old[0].UID}, schema.FlagsAdd, []string{schema.FlagDraft}); err != nil {
		t.Fatal(err)
	}
	limit := old[0].ModSeq
	_, modified, err := a.StoreFlagsKnown(ctx(t), inbox, old[:1], schema.FlagsAdd, []string{schema.FlagDeleted}, &limit)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(modified, []schema.UID{old[0].UID}) {
		t.Errorf("UNCHANGEDSINCE %d on a message changed since: modified %v, want [%d]", limit, modified, old[0].UID)
	}
	check("UNCHANGEDSINCE refused", nil, old[0].UID, schema.FlagFlagged, schema.FlagSeen, schema.FlagDraft)
}

// The IMAP frontend finds the method through this interface.
var _ protocols.KnownFlagStore = (*mailstore.Account)(nil)
