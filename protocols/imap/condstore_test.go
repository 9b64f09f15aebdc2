package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// rawLogin opens a raw connection and logs in as the test user.
func rawLogin(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	return rc
}

// codeNumber returns the number of "[NAME n]" in lines, or fails.
func codeNumber(t *testing.T, lines []string, name string) uint64 {
	t.Helper()
	re := regexp.MustCompile(`\[` + name + ` (\d+)\]`)
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in %q", name, lines)
	return 0
}

func TestCondstoreWithClient(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)
	c := ts.login(t, nil)
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.Has(imap.CapCondStore) || !caps.Has(imap.CapQResync) {
		t.Fatalf("capabilities %v lack CONDSTORE or QRESYNC", caps)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{CondStore: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.HighestModSeq == 0 {
		t.Fatal("SELECT (CONDSTORE) gave no HIGHESTMODSEQ")
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{UID: true, ModSeq: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("FETCH MODSEQ gave %d messages", len(msgs))
	}
	for _, m := range msgs {
		if m.ModSeq == 0 || m.ModSeq > sel.HighestModSeq {
			t.Fatalf("message %d: MODSEQ %d, HIGHESTMODSEQ %d", m.SeqNum, m.ModSeq, sel.HighestModSeq)
		}
	}
	// A conditional STORE that holds.
	stored, err := c.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}},
		&imap.StoreOptions{UnchangedSince: msgs[1].ModSeq}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 || stored[0].ModSeq <= sel.HighestModSeq || !slices.Contains(stored[0].Flags, imap.FlagFlagged) {
		t.Fatalf("STORE (UNCHANGEDSINCE) answered %+v", stored)
	}
	newSeq := stored[0].ModSeq
	// Only what changed since.
	changed, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{Flags: true, ChangedSince: sel.HighestModSeq}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0].SeqNum != 2 || changed[0].ModSeq != newSeq {
		t.Fatalf("FETCH (CHANGEDSINCE) answered %+v", changed)
	}
	// SEARCH MODSEQ, with the MODSEQ of the result.
	found, err := c.Search(&imap.SearchCriteria{ModSeq: &imap.SearchCriteriaModSeq{ModSeq: sel.HighestModSeq + 1}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := found.AllSeqNums(); len(got) != 1 || got[0] != 2 || found.ModSeq != newSeq {
		t.Fatalf("SEARCH MODSEQ: %v, MODSEQ %d (want [2], %d)", got, found.ModSeq, newSeq)
	}
	uidFound, err := c.UIDSearch(&imap.SearchCriteria{ModSeq: &imap.SearchCriteriaModSeq{ModSeq: 1}, Flag: []imap.Flag{imap.FlagFlagged}},
		&imap.SearchOptions{ReturnAll: true, ReturnCount: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if uidFound.Count != 1 || uidFound.ModSeq != newSeq {
		t.Fatalf("UID SEARCH RETURN (ALL COUNT) MODSEQ: %+v", uidFound)
	}
	// MODSEQ goes in before literals too (bodies, in one response each).
	bodies, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}, ModSeq: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range bodies {
		var body []byte
		for _, b := range m.BodySection {
			body = b.Bytes
		}
		if m.ModSeq == 0 || !bytes.Contains(body, []byte(fmt.Sprintf("Subject: message %d", m.SeqNum))) {
			t.Fatalf("FETCH (BODY.PEEK[] MODSEQ) of %d: MODSEQ %d, body %q", m.SeqNum, m.ModSeq, body)
		}
	}
	st, err := c.Status("INBOX", &imap.StatusOptions{HighestModSeq: true, NumMessages: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st.HighestModSeq != newSeq || st.NumMessages == nil || *st.NumMessages != 3 {
		t.Fatalf("STATUS (HIGHESTMODSEQ MESSAGES): %+v", st)
	}
}

func TestCondstoreUnchangedSince(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)
	rc := rawLogin(t, ts)
	hms := codeNumber(t, rc.mustOK("SELECT INBOX (CONDSTORE)"), "HIGHESTMODSEQ")

	// Another session changes message 2 (UID 2) after rc read it.
	other := ts.login(t, nil)
	selectMailbox(t, other, "INBOX", false)
	if err := other.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{"$Label1"}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}

	untagged, status := rc.cmd(fmt.Sprintf("STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)", hms))
	if status != "OK [MODIFIED 2] STORE completed" {
		t.Fatalf("status %q (untagged %q)", status, untagged)
	}
	// .SILENT still reports the new MODSEQs of the stored messages.
	fetched := 0
	for _, l := range untagged {
		if strings.Contains(l, "FETCH") && !strings.HasPrefix(l, "* 2 FETCH (MODSEQ (") { // 2: the other session's change
			if !regexp.MustCompile(`^\* [13] FETCH \(MODSEQ \(\d+\) UID [13]\)$`).MatchString(l) {
				t.Fatalf("silent STORE answered %q", l)
			}
			fetched++
		}
	}
	if fetched != 2 {
		t.Fatalf("silent STORE: %d FETCH responses in %q", fetched, untagged)
	}
	// UID STORE names UIDs; UNCHANGEDSINCE 0 always fails.
	_, status = rc.cmd("UID STORE 1:3 (UNCHANGEDSINCE 0) -FLAGS (\\Deleted)")
	if !strings.HasPrefix(status, "OK [MODIFIED 1:3] ") {
		t.Fatalf("UNCHANGEDSINCE 0: %q", status)
	}
	if _, status := rc.cmd("STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("bad UNCHANGEDSINCE: %q", status)
	}
	// The message changed by the other session still has no \Deleted.
	for _, l := range rc.mustOK("FETCH 2 (FLAGS)") {
		if strings.Contains(l, `\Deleted`) {
			t.Fatalf("modified message was stored: %q", l)
		}
	}
}

func TestCondstoreUnsolicitedModSeq(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	rc := rawLogin(t, ts)
	if got := rc.mustOK("ENABLE CONDSTORE"); len(got) != 1 || got[0] != "* ENABLED CONDSTORE" {
		t.Fatalf("ENABLE: %q", got)
	}
	rc.mustOK("SELECT INBOX")
	other := ts.login(t, nil)
	selectMailbox(t, other, "INBOX", false)
	stored, err := other.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagAnswered}}, nil).Collect()
	if err != nil || len(stored) != 1 {
		t.Fatalf("store: %v %v", stored, err)
	}
	// The other session did not enable CONDSTORE: its answer has no
	// MODSEQ, ours must.
	if stored[0].ModSeq != 0 {
		t.Fatalf("MODSEQ %d for a session without CONDSTORE", stored[0].ModSeq)
	}
	want := regexp.MustCompile(`^\* 2 FETCH \(MODSEQ \(\d+\) UID 2 FLAGS \(\\Answered( \\Recent)?\)\)$`)
	waitFor(t, "the unsolicited FETCH", func() bool {
		got := rc.mustOK("NOOP")
		return slices.ContainsFunc(got, want.MatchString)
	})
	// A FETCH that asks for MODSEQ (or CHANGEDSINCE) gets it, one that
	// does not and changes nothing does not (RFC 7162 section 3.1), and
	// one that sets \Seen gets MODSEQ and UID.
	got := rc.mustOK("FETCH 1 (FLAGS)")
	if len(got) != 1 || strings.Contains(got[0], "MODSEQ") {
		t.Fatalf("FETCH without MODSEQ after ENABLE CONDSTORE: %q", got)
	}
	for _, cmd := range []string{"FETCH 1 (FLAGS MODSEQ)", "FETCH 1 (FLAGS) (CHANGEDSINCE 1)"} {
		got = rc.mustOK(cmd)
		if len(got) != 1 || !strings.HasPrefix(got[0], "* 1 FETCH (MODSEQ (") {
			t.Fatalf("%s: %q", cmd, got)
		}
	}
	got = rc.mustOK("FETCH 1 (BODY[TEXT])")
	if len(got) != 1 || !regexp.MustCompile(`^\* 1 FETCH \(MODSEQ \(\d+\) UID 1 FLAGS \(\\Seen( \\Recent)?\) BODY\[TEXT\] \{\d+\}`).MatchString(got[0]) {
		t.Fatalf("FETCH that sets \\Seen under CONDSTORE: %q", got)
	}
}

// TestQresyncPhoneSync is a phone's resynchronisation: it remembers
// UIDVALIDITY and HIGHESTMODSEQ, goes away while another client changes
// flags and expunges, and comes back with SELECT (QRESYNC ...): it gets
// exactly the vanished UIDs and the changed messages.
func TestQresyncPhoneSync(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 5)
	phone := rawLogin(t, ts)
	phone.mustOK("ENABLE QRESYNC")
	sel := phone.mustOK("SELECT INBOX (CONDSTORE)")
	uv, hms := codeNumber(t, sel, "UIDVALIDITY"), codeNumber(t, sel, "HIGHESTMODSEQ")
	phone.mustOK("LOGOUT")

	desk := ts.login(t, nil)
	selectMailbox(t, desk, "INBOX", false)
	if err := desk.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := desk.Store(imap.UIDSetNum(3, 5), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := desk.Expunge().Close(); err != nil {
		t.Fatal(err)
	}

	phone = rawLogin(t, ts)
	if _, status := phone.cmd(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d))", uv, hms)); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("QRESYNC before ENABLE: %q", status)
	}
	phone.mustOK("ENABLE QRESYNC")
	lines := phone.mustOK(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d 1:5))", uv, hms))
	var vanished, fetches []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "* VANISHED"):
			vanished = append(vanished, l)
		case strings.Contains(l, " FETCH "):
			fetches = append(fetches, l)
		}
	}
	if !slices.Equal(vanished, []string{"* VANISHED (EARLIER) 3,5"}) {
		t.Fatalf("VANISHED: %q (all %q)", vanished, lines)
	}
	if len(fetches) != 1 || !regexp.MustCompile(`^\* 2 FETCH \(UID 2 FLAGS \(\\Seen( \\Recent)?\) MODSEQ \(\d+\)\)$`).MatchString(fetches[0]) {
		t.Fatalf("FETCH: %q (all %q)", fetches, lines)
	}
	now := codeNumber(t, lines, "HIGHESTMODSEQ")
	if now <= hms {
		t.Fatalf("HIGHESTMODSEQ %d after changes, was %d", now, hms)
	}
	// In sync: nothing to tell.
	lines = phone.mustOK(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d 1:5))", uv, now))
	for _, l := range lines {
		if strings.HasPrefix(l, "* VANISHED") || strings.Contains(l, " FETCH ") {
			t.Fatalf("resync when in sync: %q", lines)
		}
	}
	// A wrong UIDVALIDITY gets a plain SELECT, after CLOSED.
	lines = phone.mustOK(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d))", uv+1, hms))
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "* OK [CLOSED]") }) {
		t.Fatalf("no CLOSED: %q", lines)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "* VANISHED") || strings.Contains(l, " FETCH ") {
			t.Fatalf("resync with a wrong UIDVALIDITY: %q", lines)
		}
	}
}

func TestQresyncVanished(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 4)
	rc := rawLogin(t, ts)
	rc.mustOK("ENABLE QRESYNC")
	rc.mustOK("SELECT INBOX")

	// Expunged elsewhere: VANISHED, not EXPUNGE.
	other := ts.login(t, nil)
	selectMailbox(t, other, "INBOX", false)
	if err := other.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	waitFor(t, "the VANISHED response", func() bool {
		for _, l := range rc.mustOK("NOOP") {
			if strings.Contains(l, "EXPUNGE") || strings.Contains(l, "VANISHED") {
				got = append(got, l)
			}
		}
		return len(got) > 0
	})
	if !slices.Equal(got, []string{"* VANISHED 2"}) {
		t.Fatalf("unsolicited expunge: %q", got)
	}
	// Our own EXPUNGE and UID EXPUNGE.
	// Their tagged OK gives the HIGHESTMODSEQ the expunge took.
	rc.mustOK(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	if lines, status := rc.cmd("EXPUNGE"); !slices.Contains(lines, "* VANISHED 1") || !strings.HasPrefix(status, "OK [HIGHESTMODSEQ ") {
		t.Fatalf("EXPUNGE: %q %q", lines, status)
	}
	rc.mustOK(`UID STORE 4 +FLAGS.SILENT (\Deleted)`)
	lines, status := rc.cmd("UID EXPUNGE 4")
	if !slices.Contains(lines, "* VANISHED 4") || !strings.HasPrefix(status, "OK [HIGHESTMODSEQ ") {
		t.Fatalf("UID EXPUNGE: %q %q", lines, status)
	}
	after := codeNumber(t, []string{status}, "HIGHESTMODSEQ")
	st := rc.mustOK("STATUS INBOX (HIGHESTMODSEQ)")
	if len(st) != 1 || st[0] != fmt.Sprintf(`* STATUS "INBOX" (HIGHESTMODSEQ %d)`, after) {
		t.Fatalf("STATUS after UID EXPUNGE [HIGHESTMODSEQ %d]: %q", after, st)
	}
	// UID FETCH with VANISHED: the gone UIDs first, then the changes.
	lines = rc.mustOK("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
	if len(lines) != 2 || lines[0] != "* VANISHED (EARLIER) 1:2,4" || !regexp.MustCompile(`^\* 1 FETCH \(MODSEQ \(\d+\) UID 3 FLAGS \((\\Recent)?\)\)$`).MatchString(lines[1]) {
		t.Fatalf("UID FETCH (CHANGEDSINCE VANISHED): %q", lines)
	}
	if _, status := rc.cmd("FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("VANISHED without UID: %q", status)
	}
}

func TestSearchAndSortModSeq(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)
	rc := rawLogin(t, ts)
	rc.mustOK("SELECT INBOX")
	// "MODSEQ" as a string is no MODSEQ key: no MODSEQ in the answer,
	// and CONDSTORE stays off.
	if lines := rc.mustOK("SEARCH SUBJECT MODSEQ"); !slices.Equal(lines, []string{"* SEARCH"}) {
		t.Fatalf("SEARCH SUBJECT MODSEQ: %q", lines)
	}
	if lines := rc.mustOK("FETCH 1 (FLAGS)"); strings.Contains(lines[0], "MODSEQ") {
		t.Fatalf("CONDSTORE on after a search for the word MODSEQ: %q", lines)
	}
	rc.mustOK(`STORE 3 +FLAGS.SILENT (\Flagged)`)
	// The first CONDSTORE enabling command in the selected state tells
	// HIGHESTMODSEQ; RETURN (SAVE) alone answers nothing else.
	lines := rc.mustOK("SEARCH RETURN (SAVE) MODSEQ 4")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "* OK [HIGHESTMODSEQ ") {
		t.Fatalf("SEARCH RETURN (SAVE): %q", lines)
	}
	if lines := rc.mustOK("SEARCH OR UID $ DELETED MODSEQ 1"); len(lines) != 1 || !regexp.MustCompile(`^\* SEARCH 3 \(MODSEQ \d+\)$`).MatchString(lines[0]) {
		t.Fatalf("SEARCH of the saved result: %q", lines)
	}
	if lines := rc.mustOK("SORT (REVERSE ARRIVAL) UTF-8 MODSEQ 1"); len(lines) != 1 || !regexp.MustCompile(`^\* SORT 3 2 1 \(MODSEQ \d+\)$`).MatchString(lines[0]) {
		t.Fatalf("SORT with MODSEQ: %q", lines)
	}
	if lines := rc.mustOK("UID SEARCH RETURN (MIN COUNT) MODSEQ 1"); len(lines) != 1 || !regexp.MustCompile(`^\* ESEARCH \(TAG "T\d+"\) UID MIN 1 COUNT 3 MODSEQ \d+$`).MatchString(lines[0]) {
		t.Fatalf("ESEARCH with MODSEQ: %q", lines)
	}
	if _, status := rc.cmd("SEARCH MODSEQ -1"); !strings.HasPrefix(status, "BAD") {
		t.Fatalf("SEARCH MODSEQ -1: %q", status)
	}
}

// TestQresyncIdle: changes made elsewhere reach an idling QRESYNC
// client as FETCH with MODSEQ and as VANISHED.
func TestQresyncIdle(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)
	rc := rawLogin(t, ts)
	rc.mustOK("ENABLE QRESYNC")
	rc.mustOK("SELECT INBOX")
	rc.send("I1 IDLE\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	other := ts.login(t, nil)
	selectMailbox(t, other, "INBOX", false)
	if err := other.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	if err := other.Store(imap.UIDSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	fetch := regexp.MustCompile(`^\* 2 FETCH \(MODSEQ \(\d+\) UID 3 FLAGS \(\\Seen( \\Recent)?\)\)$`)
	for !slices.ContainsFunc(got, fetch.MatchString) {
		l := rc.line()
		if strings.Contains(l, "FETCH") && strings.Contains(l, `\Deleted`) {
			continue // the \Deleted flag before the expunge
		}
		got = append(got, l)
	}
	if got[0] != "* VANISHED 1" {
		t.Fatalf("during IDLE: %q", got)
	}
	rc.send("DONE\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "I1 OK") {
		t.Fatalf("DONE: %q", l)
	}
}

func TestListStatusHighestModSeq(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	rc := rawLogin(t, ts)
	rc.mustOK("CREATE Work")
	hms := codeNumber(t, rc.mustOK("EXAMINE INBOX"), "HIGHESTMODSEQ")
	lines := rc.mustOK(`LIST "" "*" RETURN (STATUS (MESSAGES HIGHESTMODSEQ))`)
	if !slices.Contains(lines, fmt.Sprintf("* STATUS INBOX (MESSAGES 2 HIGHESTMODSEQ %d)", hms)) ||
		!slices.ContainsFunc(lines, regexp.MustCompile(`^\* STATUS "Work" \(MESSAGES 0 HIGHESTMODSEQ \d+\)$`).MatchString) {
		t.Fatalf("LIST-STATUS with HIGHESTMODSEQ: %q", lines)
	}
	lines = rc.mustOK(`LIST "" "INBOX" RETURN (STATUS (HIGHESTMODSEQ))`)
	if !slices.Contains(lines, fmt.Sprintf("* STATUS INBOX (HIGHESTMODSEQ %d)", hms)) {
		t.Fatalf("LIST-STATUS with HIGHESTMODSEQ alone: %q", lines)
	}
}

func TestQresyncMoveAndClose(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	rc := rawLogin(t, ts)
	rc.mustOK("ENABLE QRESYNC")
	rc.mustOK("CREATE Work")
	rc.mustOK("SELECT INBOX")
	lines, status := rc.cmd("UID MOVE 1 Work")
	if !slices.Contains(lines, "* VANISHED 1") || slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, "EXPUNGE") }) ||
		!strings.HasPrefix(status, "OK [HIGHESTMODSEQ ") {
		t.Fatalf("UID MOVE under QRESYNC: %q %q", lines, status)
	}
	rc.mustOK(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	lines, status = rc.cmd("CLOSE")
	if len(lines) != 0 || status != "OK CLOSE completed" {
		t.Fatalf("CLOSE under QRESYNC: %q %q", lines, status)
	}
	if st := rc.mustOK("STATUS INBOX (MESSAGES)"); !slices.Equal(st, []string{`* STATUS INBOX (MESSAGES 0)`}) {
		t.Fatalf("after CLOSE: %q", st)
	}
}

// TestQresyncOffAfterUnauthenticate: UNAUTHENTICATE turns off what
// ENABLE turned on (RFC 8437 section 3).
func TestQresyncOffAfterUnauthenticate(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 1)
	rc := rawLogin(t, ts)
	rc.mustOK("ENABLE QRESYNC")
	rc.mustOK("UNAUTHENTICATE")
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	rc.mustOK(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	if lines := rc.mustOK("EXPUNGE"); !slices.Equal(lines, []string{"* 1 EXPUNGE"}) {
		t.Fatalf("EXPUNGE after UNAUTHENTICATE: %q", lines)
	}
}

// TestCondstoreWithoutEnable checks that nothing changes for a client
// that never asks for CONDSTORE.
func TestCondstoreWithoutEnable(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	rc := rawLogin(t, ts)
	rc.mustOK("SELECT INBOX")
	rc.mustOK(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	if lines := rc.mustOK("FETCH 1:2 (FLAGS)"); strings.Contains(strings.Join(lines, "\n"), "MODSEQ") {
		t.Fatalf("MODSEQ without CONDSTORE: %q", lines)
	}
	if lines := rc.mustOK("EXPUNGE"); !slices.Equal(lines, []string{"* 1 EXPUNGE"}) {
		t.Fatalf("EXPUNGE without QRESYNC: %q", lines)
	}
}

func TestVanishedEarlierLines(t *testing.T) {
	var gone rangeSet
	for u := uint32(1); u < 20000; u += 2 {
		gone = append(gone, numRange{u, u})
	}
	lines := vanishedEarlierLines(gone)
	if len(lines) < 2 {
		t.Fatalf("%d lines", len(lines))
	}
	var back []string
	for _, l := range lines {
		if len(l) > maxVanishedLine+len("* VANISHED (EARLIER) ") {
			t.Fatalf("line of %d bytes", len(l))
		}
		back = append(back, strings.TrimPrefix(l, "* VANISHED (EARLIER) "))
	}
	if strings.Join(back, ",") != gone.wire() {
		t.Fatal("split lines do not add up to the set")
	}
}

// TestQresyncParams checks the QRESYNC parameter's forms.
func TestQresyncParams(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)
	rc := rawLogin(t, ts)
	rc.mustOK("ENABLE QRESYNC")
	sel := rc.mustOK("EXAMINE INBOX")
	uv, hms := codeNumber(t, sel, "UIDVALIDITY"), codeNumber(t, sel, "HIGHESTMODSEQ")
	for _, bad := range []string{
		"SELECT INBOX (QRESYNC)", "SELECT INBOX (QRESYNC ())", "SELECT INBOX (QRESYNC (0 1))",
		fmt.Sprintf("SELECT INBOX (QRESYNC (%d 0))", uv), fmt.Sprintf("SELECT INBOX (QRESYNC (%d 1 1:*))", uv),
		fmt.Sprintf("SELECT INBOX (QRESYNC (%d 1 1:3 (1:2)))", uv), "SELECT INBOX (FOO)", "SELECT INBOX (CONDSTORE) extra",
	} {
		if _, status := rc.cmd(bad); !strings.HasPrefix(status, "BAD") {
			t.Errorf("%s: %q", bad, status)
		}
	}
	// With sequence match data, and CONDSTORE beside QRESYNC.
	lines := rc.mustOK(fmt.Sprintf("SELECT INBOX (CONDSTORE QRESYNC (%d %d 1:3 (1:3 1:3)))", uv, hms-1))
	var fetches []string
	for _, l := range lines {
		if strings.Contains(l, " FETCH ") {
			fetches = append(fetches, l)
		}
	}
	if len(fetches) != 1 || !strings.HasPrefix(fetches[0], "* 3 FETCH (UID 3 ") {
		t.Fatalf("QRESYNC one MODSEQ back: %q", lines)
	}
}

// TestParseFetchExt checks what the front forwards of a FETCH.
func TestParseFetchExt(t *testing.T) {
	cases := []struct {
		in, wire      string
		modSeq, since bool
		vanished      bool
	}{
		{"a FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 3)", "a FETCH 1:* (FLAGS UID)", true, true, false},
		{"a FETCH 1 MODSEQ", "a FETCH 1 UID", true, false, false},
		{"a UID FETCH 1 BODY[HEADER.FIELDS (MODSEQ)] (CHANGEDSINCE 3 VANISHED)", "a UID FETCH 1 BODY[HEADER.FIELDS (MODSEQ)]", false, true, true},
		{"a FETCH 1 (MODSEQ)", "a FETCH 1 (UID)", true, false, false},
		{"a FETCH 1 FAST", "a FETCH 1 FAST", false, false, false},
	}
	for _, tc := range cases {
		cmd := readOne(t, tc.in)
		fe, err := parseFetchExt(cmd)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if got := strings.TrimSuffix(string(fe.wire), "\r\n"); got != tc.wire || fe.modSeq != tc.modSeq || fe.hasChangedSince != tc.since || fe.vanished != tc.vanished {
			t.Errorf("%s: %q %+v", tc.in, got, fe)
		}
	}
	for _, in := range []string{"a FETCH 1 FLAGS (CHANGEDSINCE x)", "a FETCH 1 FLAGS (FOO)", "a FETCH 1 FLAGS (CHANGEDSINCE 0)"} {
		if _, err := parseFetchExt(readOne(t, in)); err == nil {
			t.Errorf("%s: accepted", in)
		}
	}
}

func readOne(t testing.TB, line string) *imapwire.Command {
	t.Helper()
	cmd, err := imapwire.NewReader(bufio.NewReader(strings.NewReader(line+"\r\n")), imapwire.Limits{}).ReadCommand()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return cmd
}

// FuzzCondstoreArgs runs the front's readers of CONDSTORE and QRESYNC
// arguments over any command; what they forward must read again as a
// command.
func FuzzCondstoreArgs(f *testing.F) {
	for _, s := range []string{
		"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:10 41:50)))",
		"a SELECT INBOX (CONDSTORE)",
		"a UID FETCH 1:* (FLAGS MODSEQ BODY[HEADER.FIELDS (A)]) (CHANGEDSINCE 12345 VANISHED)",
		"a FETCH 1 BODY[HEADER.FIELDS (FROM)] (CHANGEDSINCE 1)",
		"a STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Deleted)",
		"a SEARCH RETURN (MIN MAX SAVE) CHARSET UTF-8 MODSEQ \"/flags/\\\\draft\" all 620162338 OR (MODSEQ 1) NOT MODSEQ 2",
		"a STATUS INBOX (MESSAGES HIGHESTMODSEQ)", "a ENABLE CONDSTORE QRESYNC IMAP4rev2",
		"a LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN STATUS (HIGHESTMODSEQ MESSAGES))",
		"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 7 PARTIAL -1:-30)", "a UID SEARCH RETURN (COUNT PARTIAL 500:1) UNDELETED",
		"a FETCH 1 (MODSEQ BINARY.PEEK[1]<40> BINARY[2.1]<0.10> BINARY[3])", "a UID FETCH 1 BINARY.PEEK[]<7> (CHANGEDSINCE 3)",
	} {
		f.Add([]byte(s + "\r\n"))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		cmd, err := imapwire.NewReader(bufio.NewReader(bytes.NewReader(input)), imapwire.Limits{MaxCommand: 2048, MaxTokens: 256}).ReadCommand()
		if err != nil {
			return
		}
		_, _ = parseSelectExt(cmd.Args)
		_, _, _, _, _ = parseStoreExt(cmd.Args)
		wire := cmd.Wire
		cuts := listStatusModSeq(cmd.Args)
		for k := len(cuts) - 1; k >= 0; k-- {
			wire = imapwire.Cut(wire, cuts[k][0], cuts[k][1])
		}
		_, _ = parseSearch(cmd)
		fe, err := parseFetchExt(cmd)
		if err == nil && fe != nil {
			if _, err := imapwire.NewReader(bufio.NewReader(bytes.NewReader(fe.wire)), imapwire.Limits{}).ReadCommand(); err != nil {
				var we *imapwire.Error
				if !errors.As(err, &we) {
					t.Fatalf("forwarded FETCH %q does not read: %v", fe.wire, err)
				}
			}
		}
	})
}

// TestESearchModSeqMinMax: with MIN or MAX alone (no ALL or COUNT) the
// MODSEQ result option is the MODSEQ of the message MIN or MAX names,
// the higher of the two with both (RFC 7162 section 3.1.5); imaptest's
// esearch-condstore test found the highest of all the matches there.
func TestESearchModSeqMinMax(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 4)
	rc := rawLogin(t, ts)
	rc.mustOK("ENABLE CONDSTORE")
	rc.mustOK("SELECT INBOX")
	modseq := map[int]string{}
	for _, n := range []int{1, 3, 2, 4} {
		lines := rc.mustOK(fmt.Sprintf(`STORE %d +FLAGS (\Seen)`, n))
		m := regexp.MustCompile(`MODSEQ \((\d+)\)`).FindStringSubmatch(strings.Join(lines, " "))
		if m == nil {
			t.Fatalf("STORE %d: %q", n, lines)
		}
		modseq[n] = m[1]
	}
	for cmd, want := range map[string]string{
		`SEARCH RETURN (MIN) 1:3 MODSEQ 1`:                       "MIN 1 MODSEQ " + modseq[1],
		`SEARCH RETURN (MAX) 1:3 MODSEQ 1`:                       "MAX 3 MODSEQ " + modseq[3],
		`SEARCH RETURN (MIN MAX) 1,3 MODSEQ 1`:                   "MIN 1 MAX 3 MODSEQ " + modseq[3],
		`SEARCH RETURN (MIN MAX) 2:3 MODSEQ 1`:                   "MIN 2 MAX 3 MODSEQ " + modseq[2],
		`SEARCH RETURN (ALL) 1:3 MODSEQ 1`:                       "ALL 1:3 MODSEQ " + modseq[2],
		`SEARCH RETURN (MIN COUNT) 1:3 MODSEQ 1`:                 "MIN 1 COUNT 3 MODSEQ " + modseq[2],
		`SORT RETURN (MIN) (REVERSE ARRIVAL) UTF-8 1:3 MODSEQ 1`: "MIN 3 MODSEQ " + modseq[3],
		`SORT RETURN (MAX) (REVERSE ARRIVAL) UTF-8 1:3 MODSEQ 1`: "MAX 1 MODSEQ " + modseq[1],
	} {
		lines := rc.mustOK(cmd)
		if len(lines) != 1 || !strings.HasSuffix(lines[0], ") "+want) {
			t.Errorf("%s: %q, want ... %s", cmd, lines, want)
		}
	}
}
