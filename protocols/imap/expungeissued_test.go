package imap

import (
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestExpungeIssued: another session expunges message 2; until this
// session is sent its EXPUNGE, message 2 still has its sequence number
// here, and SEARCH, SORT, THREAD and FETCH leave it out (RFC 2180
// section 4.1). Their tagged OK then carries EXPUNGEISSUED (RFC 5530
// section 3) when the message might have been in the answer, and not
// when the criteria rule it out on what is still known of it. imaptest
// reports "SEARCH result missing" for an answer short of a message
// without the code.
func TestExpungeIssued(t *testing.T) {
	ts := newTestServer(t)
	for _, subject := range []string{"first", "second", "third"} {
		ts.deliver(t, simpleMessage("a@example.net", testUser, subject, "Mon, 1 Jan 2024 00:00:00 +0000", "hello "+subject))
	}
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")

	other := ts.login(t, nil)
	selectMailbox(t, other, "INBOX", false)
	if _, err := other.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}

	// answer runs a command and returns its response of the kind
	// (prefix) and its tagged status.
	answer := func(cmd, prefix string) (string, string) {
		t.Helper()
		untagged, st := rc.cmd(cmd)
		if !strings.HasPrefix(st, "OK") {
			t.Fatalf("%s: %q (untagged %q)", cmd, st, untagged)
		}
		var got []string
		for _, l := range untagged {
			if strings.HasPrefix(l, prefix) {
				got = append(got, l)
			}
		}
		return strings.Join(got, "\n"), st
	}
	const issued = "OK [EXPUNGEISSUED] "

	// SEARCH (which sends no EXPUNGE) until the session has heard of it.
	waitFor(t, "the expunge to reach the session", func() bool {
		res, st := answer("SEARCH ALL", "* SEARCH")
		switch res {
		case "* SEARCH 1 2 3":
			if strings.HasPrefix(st, issued) {
				t.Errorf("SEARCH ALL with nothing expunged: %q", st)
			}
			return false
		case "* SEARCH 1 3":
			if !strings.HasPrefix(st, issued) {
				t.Errorf("SEARCH ALL without message 2: %q, want %s...", st, issued)
			}
			return true
		}
		t.Fatalf("SEARCH ALL: %q %q", res, st)
		return false
	})

	for _, tc := range []struct {
		cmd, prefix, want string
		issued            bool
	}{
		// Message 2 had \Deleted when it went, and its header and body
		// are gone: it might have matched.
		{"SEARCH DELETED", "* SEARCH", "* SEARCH", true},
		{"SEARCH SUBJECT second", "* SEARCH", "* SEARCH", true},
		{"SEARCH BODY hello", "* SEARCH", "* SEARCH 1 3", true},
		{"SEARCH RETURN (COUNT) ALL", "* ESEARCH", `* ESEARCH (TAG "T%d") COUNT 2`, true},
		{"SEARCH RETURN (PARTIAL 1:10) ALL", "* ESEARCH", `* ESEARCH (TAG "T%d") PARTIAL (1:10 1,3)`, true},
		{"SORT (ARRIVAL) UTF-8 ALL", "* SORT", "* SORT 1 3", true},
		{"SORT (SUBJECT) UTF-8 ALL", "* SORT", "* SORT 1 3", true},
		{"THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD", "* THREAD (1)(3)", true},
		{"FETCH 1:3 (FLAGS)", "* ", "* 1 FETCH (FLAGS (\\Recent))\n* 3 FETCH (FLAGS (\\Recent))", true},
		{"FETCH 2 (BODY.PEEK[])", "* ", "", true},
		// Ruled out on what the session still knows of message 2, or
		// not asked for: a plain OK, also right after a front command
		// that carried the code.
		{"SEARCH 1", "* SEARCH", "* SEARCH 1", false},
		{"SEARCH UNDELETED", "* SEARCH", "* SEARCH 1 3", false},
		{"SORT (ARRIVAL) UTF-8 UNDELETED", "* SORT", "* SORT 1 3", false},
		{"FETCH 3 (FLAGS)", "* ", "* 3 FETCH (FLAGS (\\Recent))", false},
		// STORE leaves message 2 alone and says why; one that names
		// only messages still there gets a plain OK.
		{"STORE 2:3 +FLAGS (\\Flagged)", "* ", "* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))", true},
		{"STORE 3 -FLAGS (\\Flagged)", "* ", "* 3 FETCH (UID 3 FLAGS (\\Recent))", false},
	} {
		want := strings.Replace(tc.want, "%d", strconv.Itoa(rc.tag+1), 1)
		res, st := answer(tc.cmd, tc.prefix)
		if res != want {
			t.Errorf("%s: %q, want %q", tc.cmd, res, want)
		}
		if got := strings.HasPrefix(st, issued); got != tc.issued {
			t.Errorf("%s: tagged %q, EXPUNGEISSUED wanted %v", tc.cmd, st, tc.issued)
		}
	}

	// Once told, the answers are whole again.
	if untagged := rc.mustOK("NOOP"); !strings.Contains(strings.Join(untagged, "\n"), "* 2 EXPUNGE") {
		t.Fatalf("NOOP: %q", untagged)
	}
	for _, cmd := range []string{"SEARCH ALL", "SORT (ARRIVAL) UTF-8 ALL", "FETCH 1:2 (FLAGS)"} {
		if _, st := answer(cmd, "*"); strings.HasPrefix(st, issued) {
			t.Errorf("%s after the EXPUNGE: %q", cmd, st)
		}
	}
}
