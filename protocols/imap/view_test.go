package imap

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// recorder is an updateWriter that records what it is asked to write.
type recorder struct{ out []string }

func (r *recorder) WriteExpunge(seq uint32) error {
	r.out = append(r.out, fmt.Sprintf("EXPUNGE %d", seq))
	return nil
}

func (r *recorder) WriteNumMessages(n uint32) error {
	r.out = append(r.out, fmt.Sprintf("EXISTS %d", n))
	return nil
}

func (r *recorder) WriteNumRecent(n uint32) error {
	r.out = append(r.out, fmt.Sprintf("RECENT %d", n))
	return nil
}

func (r *recorder) WriteMailboxFlags(flags []imap.Flag) error {
	r.out = append(r.out, fmt.Sprintf("FLAGS %v", flags))
	return nil
}

func (r *recorder) WriteMessageFlags(seq uint32, uid imap.UID, flags []imap.Flag) error {
	r.out = append(r.out, fmt.Sprintf("FETCH %d UID %d %v", seq, uid, flags))
	return nil
}

// recentClaims is the part of protocols.Account a view's \Recent claims
// use, over a counter.
type recentClaims struct {
	protocols.Account
	claimed schema.UID
	calls   int // ClaimRecent calls
}

// Refresh has nothing to wait for: the test's channel holds every change.
func (r *recentClaims) Refresh(context.Context, schema.ID, bool) {}

func (r *recentClaims) ClaimRecent(_ context.Context, _ schema.ID, upTo schema.UID) (schema.UID, error) {
	r.calls++
	prev := r.claimed
	if upTo > prev {
		r.claimed = upTo
	}
	return prev, nil
}

// testView is a view over the given UIDs, fed by a channel the test owns.
// Its messages were claimed as \Recent by another session.
func testView(uids ...schema.UID) (*view, chan schema.Change) {
	ch := make(chan schema.Change, 16)
	claims := &recentClaims{}
	if n := len(uids); n > 0 {
		claims.claimed = uids[n-1]
	}
	v := &view{acct: claims, id: schema.ID{1}, byUID: map[schema.UID]*viewMsg{}, changes: ch, index: 10}
	for _, u := range uids {
		m := &viewMsg{info: schema.MessageInfo{UID: u, ModSeq: 1}}
		v.msgs = append(v.msgs, m)
		v.byUID[u] = m
	}
	return v, ch
}

func TestViewMembers(t *testing.T) {
	v, _ := testView(3, 5, 7, 9)
	v.searchRes = []schema.UID{9, 5, 42}
	cases := []struct {
		set    imap.NumSet
		strict bool
		want   string
	}{
		{imap.SeqSet{{Start: 1, Stop: 2}}, true, "[true true false false]"},
		{imap.SeqSet{{Start: 0, Stop: 0}}, true, "[false false false true]"},
		{imap.SeqSet{{Start: 3, Stop: 0}}, true, "[false false true true]"},
		{imap.SeqSet{{Start: 9, Stop: 0}}, true, "[false false false true]"}, // 9:* is *:9
		{imap.SeqSet{{Start: 2, Stop: 2}, {Start: 1, Stop: 4}, {Start: 1, Stop: 4}}, true, "[true true true true]"},
		{imap.UIDSet{{Start: 4, Stop: 8}}, true, "[false true true false]"},
		{imap.UIDSet{{Start: 100, Stop: 0}}, true, "[false false false true]"},
		{imap.UIDSet{{Start: 1, Stop: 2}}, true, "[false false false false]"},
		{imap.SearchRes(), true, "[false true false true]"},
		{imap.SeqSet{{Start: 2, Stop: 6}}, false, "[false true true true]"},
	}
	for _, tc := range cases {
		in, err := v.members(tc.set, tc.strict)
		if err != nil {
			t.Errorf("%v: %v", tc.set, err)
			continue
		}
		if got := fmt.Sprint(in); got != tc.want {
			t.Errorf("members(%v) = %s, want %s", tc.set, got, tc.want)
		}
	}
	if _, err := v.members(imap.SeqSet{{Start: 2, Stop: 6}}, true); err != errBadSeq {
		t.Errorf("out of range sequence: %v", err)
	}
	empty, _ := testView()
	if in, err := empty.members(imap.SeqSet{{Start: 1, Stop: 0}}, true); err != nil || len(in) != 0 {
		t.Errorf("1:* on an empty mailbox: %v %v", in, err)
	}
}

func TestViewUpdates(t *testing.T) {
	v, ch := testView(1, 2, 3, 4)
	info := func(uid schema.UID, modseq uint64, flags ...string) *schema.MessageInfo {
		return &schema.MessageInfo{UID: uid, ModSeq: modseq, Flags: flags}
	}
	ch <- schema.Change{Kind: schema.ChangeFlags, Index: 5, UID: 1, Message: info(1, 9, `\Seen`)} // in snapshot already
	ch <- schema.Change{Kind: schema.ChangeFlags, Index: 11, UID: 2, Message: info(2, 3, `\Flagged`)}
	ch <- schema.Change{Kind: schema.ChangeExpunged, Index: 12, UID: 3}
	ch <- schema.Change{Kind: schema.ChangeAdded, Index: 13, UID: 5, Message: info(5, 4)}
	ch <- schema.Change{Kind: schema.ChangeAdded, Index: 14, UID: 6, Message: info(6, 5)}
	ch <- schema.Change{Kind: schema.ChangeExpunged, Index: 15, UID: 6}                             // never announced
	ch <- schema.Change{Kind: schema.ChangeFlags, Index: 16, UID: 2, Message: info(2, 2, `\Draft`)} // stale
	ch <- schema.Change{Kind: schema.ChangeFlags, Index: 17, UID: 9, Message: info(9, 9)}           // unknown
	ch <- schema.Change{Kind: schema.ChangeFlags, Index: 18, Mailbox: schema.ID{2}, UID: 4, Message: info(4, 9, `\Seen`)}

	// During FETCH/STORE/SEARCH: no EXPUNGE, sequence numbers stay.
	r := &recorder{}
	if _, err := v.flush(context.Background(), r, false, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.out, "; "); got != `EXISTS 5; RECENT 1; FETCH 2 UID 2 [\Flagged]` {
		t.Errorf("flush without expunge: %s", got)
	}
	// Then the pending expunge goes out and the numbers close up.
	r = &recorder{}
	if _, err := v.flush(context.Background(), r, true, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.out, "; "); got != "EXPUNGE 3" {
		t.Errorf("flush with expunge: %s", got)
	}
	var uids []schema.UID
	for _, m := range v.msgs {
		uids = append(uids, m.info.UID)
	}
	if fmt.Sprint(uids) != "[1 2 4 5]" {
		t.Errorf("view after flush: %v", uids)
	}

	// Own expunge: EXPUNGE numbers account for earlier removals.
	r = &recorder{}
	v.remove(func(m *viewMsg) bool { return m.info.UID == 1 || m.info.UID == 5 }, r)
	if got := strings.Join(r.out, "; "); got != "EXPUNGE 1; EXPUNGE 3" {
		t.Errorf("remove: %s", got)
	}
	// A closed channel stops updates without error.
	close(ch)
	v.drain()
	if v.changes != nil {
		t.Error("closed channel still watched")
	}
}

// TestViewAnnouncesNewMessagesOnce: a message that arrived and had its
// flags changed before the session learnt of it is announced by EXISTS
// alone; a change after that is a FETCH.
func TestViewAnnouncesNewMessagesOnce(t *testing.T) {
	v, ch := testView(1, 2)
	ch <- schema.Change{Kind: schema.ChangeAdded, Index: 11, UID: 3, Message: &schema.MessageInfo{UID: 3, ModSeq: 4}}
	ch <- schema.Change{Kind: schema.ChangeFlags, Index: 12, UID: 3, Message: &schema.MessageInfo{UID: 3, ModSeq: 5, Flags: []string{`\Flagged`}}}
	r := &recorder{}
	if _, err := v.flush(context.Background(), r, false, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.out, "; "); got != "EXISTS 3; RECENT 1" {
		t.Errorf("first flush: %s", got)
	}
	ch <- schema.Change{Kind: schema.ChangeFlags, Index: 13, UID: 3, Message: &schema.MessageInfo{UID: 3, ModSeq: 6, Flags: []string{`\Flagged`, `\Seen`}}}
	r = &recorder{}
	if _, err := v.flush(context.Background(), r, false, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.out, "; "); got != `FETCH 3 UID 3 [\Flagged \Seen \Recent]` {
		t.Errorf("second flush: %s", got)
	}
}

// snapshotAccount answers Snapshot with a fixed state of the mailbox.
type snapshotAccount struct {
	recentClaims
	snap schema.MailboxSnapshot
}

func (a *snapshotAccount) Snapshot(context.Context, schema.ID) (schema.MailboxSnapshot, error) {
	return a.snap, nil
}

// TestViewResyncKeepsLostMessages: a watcher that falls behind its
// session (more changes than its buffer while the client sends nothing)
// replaces what it could not hand over by one resync, and the changes
// after that still come. The messages whose changes were lost must be
// announced with the later ones, in UID order. The view used to apply
// the later changes and then take from the reload only the messages
// above the last one it held, so the lost ones never showed in that
// session: a session on a node that was paused while 1,377 messages
// arrived missed 1,024 of them, its watcher's buffer.
func TestViewResyncKeepsLostMessages(t *testing.T) {
	v, ch := testView(1, 2)
	acct := &snapshotAccount{recentClaims: recentClaims{claimed: 2}}
	v.acct = acct
	added := func(index uint64, uid schema.UID) schema.Change {
		return schema.Change{Kind: schema.ChangeAdded, Index: index, UID: uid, Message: &schema.MessageInfo{UID: uid, ModSeq: index}}
	}
	ch <- added(11, 3)
	ch <- schema.Change{Kind: schema.ChangeResync, Index: 13} // 4 and 5 lost
	ch <- added(14, 6)
	ch <- added(15, 7)
	for uid := schema.UID(1); uid <= 7; uid++ {
		acct.snap.Messages = append(acct.snap.Messages, schema.MessageInfo{UID: uid, ModSeq: uint64(uid)})
	}
	acct.snap.Index = 15

	r := &recorder{}
	if _, err := v.flush(context.Background(), r, true, false); err != nil {
		t.Fatal(err)
	}
	if len(r.out) == 0 || r.out[0] != "EXISTS 7" {
		t.Errorf("flush after a resync: %q, want EXISTS 7 first", r.out)
	}
	var uids []schema.UID
	for _, m := range v.msgs {
		uids = append(uids, m.info.UID)
	}
	if fmt.Sprint(uids) != "[1 2 3 4 5 6 7]" {
		t.Errorf("view after the resync: %v, want [1 2 3 4 5 6 7]", uids)
	}
	// Changes the reload already holds are not applied again.
	ch <- added(15, 7)
	ch <- added(16, 8)
	acct.snap.Messages = append(acct.snap.Messages, schema.MessageInfo{UID: 8, ModSeq: 16})
	r = &recorder{}
	if _, err := v.flush(context.Background(), r, true, false); err != nil {
		t.Fatal(err)
	}
	if len(r.out) == 0 || r.out[0] != "EXISTS 8" {
		t.Errorf("flush after the reload: %q, want EXISTS 8 first", r.out)
	}
}

func TestSameFlags(t *testing.T) {
	cases := []struct {
		a, b []string
		want bool
	}{
		{nil, nil, true},
		{[]string{`\Seen`}, []string{`\seen`}, true},
		{[]string{`\Seen`, "a"}, []string{"A", `\SEEN`}, true},
		{[]string{`\Seen`}, nil, false},
		{[]string{"a", "a"}, []string{"a", "b"}, false},
	}
	for _, tc := range cases {
		if got := sameFlags(tc.a, tc.b); got != tc.want {
			t.Errorf("sameFlags(%v, %v) = %v", tc.a, tc.b, got)
		}
	}
}

func TestStaticRanges(t *testing.T) {
	rs := staticRanges([][2]uint32{{5, 3}, {0, 0}, {1, 1}, {2, 2}, {8, 9}}, 10)
	if got := fmt.Sprint(rs); got != "[{1 5} {8 10}]" {
		t.Errorf("ranges %s", got)
	}
	for n, want := range map[uint32]bool{1: true, 5: true, 6: false, 7: false, 8: true, 10: true, 11: false} {
		if rs.contains(n) != want {
			t.Errorf("contains(%d) != %v", n, want)
		}
	}
	if rs := staticRanges([][2]uint32{{0, 0}}, 0); len(rs) != 0 {
		t.Errorf("* in empty mailbox: %v", rs)
	}
	if got := fmt.Sprint(uidSetOf([]schema.UID{7, 1, 2, 3, 9, 8})); got != "1:3,7:9" {
		t.Errorf("uidSetOf = %s", got)
	}
	if got := fmt.Sprint(seqSetOf([]uint32{1, 2, 4})); got != "1:2,4" {
		t.Errorf("seqSetOf = %s", got)
	}
}

// TestOwnClaimsSettleRecent: the messages this session's own APPENDs
// claimed in their commits are settled without a claim of the view's:
// \Recent here when inside one of those claims, not when another
// session claimed them in between; messages above them are claimed as
// usual, once.
func TestOwnClaimsSettleRecent(t *testing.T) {
	v, ch := testView(1, 2)
	claims := v.acct.(*recentClaims)
	// UID 3 is delivered unseen; this session appends 4, whose commit
	// moves the claim from 2 to 4.
	claims.claimed = 4
	v.noteOwnClaim(2, 4)
	// Another session claims 5; this session appends 6 (5 to 6), then 7
	// (6 to 7, one claim with the one before).
	claims.claimed = 7
	v.noteOwnClaim(5, 6)
	v.noteOwnClaim(6, 7)
	for i, uid := range []schema.UID{3, 4, 5, 6, 7} {
		ch <- schema.Change{Kind: schema.ChangeAdded, Index: uint64(11 + i), UID: uid, Message: &schema.MessageInfo{UID: uid, ModSeq: 4}}
	}
	r := &recorder{}
	if _, err := v.flush(context.Background(), r, false, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.out, "; "); got != "EXISTS 7; RECENT 4" {
		t.Errorf("flush: %s", got)
	}
	var recent []schema.UID
	for _, m := range v.msgs {
		if m.recent {
			recent = append(recent, m.info.UID)
		}
	}
	if fmt.Sprint(recent) != "[3 4 6 7]" || claims.calls != 0 {
		t.Errorf("recent %v after %d claims, want [3 4 6 7] after none", recent, claims.calls)
	}
	if len(v.ownClaims) != 0 {
		t.Errorf("own claims kept after their messages came: %v", v.ownClaims)
	}

	// A delivery above them is claimed as usual.
	ch <- schema.Change{Kind: schema.ChangeAdded, Index: 20, UID: 8, Message: &schema.MessageInfo{UID: 8, ModSeq: 5}}
	r = &recorder{}
	if _, err := v.flush(context.Background(), r, false, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.out, "; "); got != "EXISTS 8; RECENT 5" || claims.calls != 1 || claims.claimed != 8 {
		t.Errorf("flush after a delivery: %s, %d claims up to %d", got, claims.calls, claims.claimed)
	}
}
