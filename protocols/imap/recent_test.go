package imap

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// hasLine reports whether lines hold want exactly.
func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// TestRecent: a message is \Recent in the first session that sees it
// (SELECT, or the update after a delivery or a COPY) and in no other;
// SELECT and the updates count them (* n RECENT), FETCH FLAGS shows
// \Recent, SEARCH RECENT, NEW and OLD select by it, EXAMINE and STATUS
// (RECENT) report without taking it away (RFC 3501 sections 2.3.2, 6.3.1,
// 6.3.2, 6.3.10, 6.4.4, 7.3.2).
func TestRecent(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)

	a := dialRaw(t, ts.addr)
	a.mustOK("LOGIN " + testUser + " " + testPassword)
	if got := a.mustOK("SELECT INBOX"); !hasLine(got, "* 2 RECENT") {
		t.Errorf("first SELECT: %q, want * 2 RECENT", got)
	}
	if got := a.mustOK("FETCH 1:2 (FLAGS)"); len(got) != 2 || !strings.Contains(got[0], `\Recent`) || !strings.Contains(got[1], `\Recent`) {
		t.Errorf("FETCH FLAGS in the first session: %q", got)
	}

	b := dialRaw(t, ts.addr)
	b.mustOK("LOGIN " + testUser + " " + testPassword)
	if got := b.mustOK("SELECT INBOX"); !hasLine(got, "* 0 RECENT") {
		t.Errorf("second SELECT: %q, want * 0 RECENT", got)
	}
	if got := b.mustOK("FETCH 1:2 (FLAGS)"); strings.Contains(strings.Join(got, ""), `\Recent`) {
		t.Errorf("FETCH FLAGS in the second session: %q", got)
	}

	// A delivery: EXAMINE and STATUS see it recent without taking it.
	deliverN(t, ts, 1)
	e := dialRaw(t, ts.addr)
	e.mustOK("LOGIN " + testUser + " " + testPassword)
	if got := e.mustOK(`STATUS INBOX (MESSAGES RECENT)`); len(got) != 1 || !strings.Contains(got[0], "RECENT 1") {
		t.Errorf("STATUS after a delivery: %q", got)
	}
	if got := e.mustOK("EXAMINE INBOX"); !hasLine(got, "* 1 RECENT") {
		t.Errorf("EXAMINE after a delivery: %q, want * 1 RECENT", got)
	}
	e.mustOK("CLOSE")
	if got := e.mustOK(`STATUS INBOX (RECENT)`); len(got) != 1 || !strings.Contains(got[0], "RECENT 1") {
		t.Errorf("STATUS after EXAMINE: %q", got)
	}

	// The first session to hear of it gets it: A at NOOP.
	got := a.mustOK("NOOP")
	if !hasLine(got, "* 3 EXISTS") || !hasLine(got, "* 3 RECENT") {
		t.Errorf("NOOP after a delivery, first session: %q", got)
	}
	got = b.mustOK("NOOP")
	if !hasLine(got, "* 3 EXISTS") || !hasLine(got, "* 0 RECENT") {
		t.Errorf("NOOP after a delivery, second session: %q", got)
	}
	if got := e.mustOK(`STATUS INBOX (RECENT)`); len(got) != 1 || !strings.Contains(got[0], "RECENT 0") {
		t.Errorf("STATUS once claimed: %q", got)
	}
	if got := a.mustOK(`STATUS INBOX (RECENT)`); len(got) != 1 || !strings.Contains(got[0], "RECENT 3") {
		t.Errorf("STATUS of its selected mailbox in the claiming session: %q", got)
	}

	// SEARCH RECENT, NEW (RECENT UNSEEN) and OLD (NOT RECENT).
	a.mustOK(`STORE 1 +FLAGS.SILENT (\Seen)`)
	for _, tc := range []struct {
		rc       *rawConn
		criteria string
		want     string
	}{
		{a, "RECENT", "* SEARCH 1 2 3"},
		{a, "NEW", "* SEARCH 2 3"},
		{a, "OLD", "* SEARCH"},
		{b, "RECENT", "* SEARCH"},
		{b, "NEW", "* SEARCH"},
		{b, "OLD", "* SEARCH 1 2 3"},
	} {
		// (Other lines are updates: A's STORE reaching B.)
		if got := tc.rc.mustOK("SEARCH " + tc.criteria); !hasLine(got, tc.want) {
			who := "first"
			if tc.rc == b {
				who = "second"
			}
			t.Errorf("SEARCH %s in the %s session: %q, want %q", tc.criteria, who, got, tc.want)
		}
	}

	// A COPY makes new messages for whoever selects the target first,
	// a session that selected it before the COPY included.
	c := ts.login(t, nil)
	arch := selectMailbox(t, c, "Archive", false)
	if arch.NumMessages != 0 {
		t.Fatalf("Archive: %+v", arch)
	}
	a.mustOK("COPY 1:2 Archive")
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 2}}, &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("FETCH in Archive: %v %v", msgs, err)
	}
	for _, m := range msgs {
		if !hasFlag(m.Flags, `\Recent`) {
			t.Errorf("copied message %d: flags %v", m.SeqNum, m.Flags)
		}
	}
	data, err := c.Search(&imap.SearchCriteria{Flag: []imap.Flag{`\Recent`}}, nil).Wait()
	if err != nil || fmt.Sprint(data.AllSeqNums()) != "[1 2]" {
		t.Errorf("SEARCH RECENT in Archive: %v %v", data, err)
	}
	if got := b.mustOK("SELECT Archive"); !hasLine(got, "* 0 RECENT") {
		t.Errorf("SELECT Archive in another session: %q", got)
	}

	// IMAP4rev2 has no \Recent (RFC 9051 appendix E): none is shown.
	deliverN(t, ts, 1)
	r2 := dialRaw(t, ts.addr)
	r2.mustOK("LOGIN " + testUser + " " + testPassword)
	r2.mustOK("ENABLE IMAP4rev2")
	got = r2.mustOK("SELECT INBOX")
	got = append(got, r2.mustOK("FETCH 1:* (FLAGS)")...)
	if strings.Contains(strings.Join(got, "\n"), "RECENT") || strings.Contains(strings.Join(got, "\n"), `\Recent`) {
		t.Errorf("IMAP4rev2 session: %q", got)
	}
}

// TestAppendToSelectedIsRecentHere: a message APPENDed to the mailbox the
// session has selected read-write is \Recent in that session (its commit
// claimed it), and so is a delivery that came before it unseen; no other
// session gets either. APPEND to another mailbox claims nothing there.
func TestAppendToSelectedIsRecentHere(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 1)

	a := dialRaw(t, ts.addr)
	a.mustOK("LOGIN " + testUser + " " + testPassword)
	if got := a.mustOK("SELECT INBOX"); !hasLine(got, "* 1 RECENT") {
		t.Fatalf("SELECT: %q", got)
	}
	b := dialRaw(t, ts.addr)
	b.mustOK("LOGIN " + testUser + " " + testPassword)
	b.mustOK("SELECT INBOX")

	deliverN(t, ts, 1) // UID 2, unseen by either session
	msg := "Subject: appended\r\n\r\nbody\r\n"
	got := a.mustOK("APPEND INBOX {" + itoaTest(len(msg)) + "+}\r\n" + msg)
	if !hasLine(got, "* 3 EXISTS") || !hasLine(got, "* 3 RECENT") {
		t.Errorf("APPEND to the selected mailbox: %q, want * 3 EXISTS and * 3 RECENT", got)
	}
	if got := a.mustOK("FETCH 2:3 (FLAGS)"); len(got) != 2 || !strings.Contains(got[0], `\Recent`) || !strings.Contains(got[1], `\Recent`) {
		t.Errorf("FETCH FLAGS in the appending session: %q", got)
	}
	got = b.mustOK("NOOP")
	if !hasLine(got, "* 3 EXISTS") || !hasLine(got, "* 0 RECENT") {
		t.Errorf("NOOP in the other session: %q", got)
	}

	// Into a mailbox not selected here: the first session to select it
	// gets it.
	a.mustOK("APPEND Archive {" + itoaTest(len(msg)) + "+}\r\n" + msg)
	if got := b.mustOK("SELECT Archive"); !hasLine(got, "* 1 RECENT") {
		t.Errorf("SELECT Archive after an APPEND from another session: %q", got)
	}
}
