package imap

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// mailboxCount returns the number of messages in a mailbox (STATUS).
func mailboxCount(t *testing.T, ts *testServer, name string) uint32 {
	t.Helper()
	c := ts.login(t, nil)
	st, err := c.Status(name, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatalf("STATUS %s: %v", name, err)
	}
	c.Close()
	return *st.NumMessages
}

// TestMultiAppend: two messages in one APPEND are stored together with
// their own flags and dates and APPENDUID carries both UIDs; a bad second
// message (too large, malformed flags, garbage after it, over quota)
// leaves nothing stored and the session in step.
func TestMultiAppend(t *testing.T) {
	ts := newTestServer(t, withMaxMessageSize(32<<10))
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	m1 := simpleMessage("a@example.net", testUser, "multi one", "Mon, 02 Jan 2026 15:04:05 +0000", "first")
	m2 := simpleMessage("a@example.net", testUser, "multi two", "Mon, 02 Jan 2026 15:04:06 +0000", "second")

	rc.send("m1 APPEND Archive (\\Seen) {" + itoaTest(len(m1)) + "}\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("first literal: %q", l)
	}
	rc.send(m1 + " (\\Flagged $Work) \" 3-Feb-2025 10:00:00 +0100\" {" + itoaTest(len(m2)) + "}\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("second literal: %q", l)
	}
	rc.send(m2 + "\r\n")
	st := rc.expectTagged("m1")
	if !strings.HasPrefix(st, "OK [APPENDUID ") || !strings.Contains(st, " 1:2]") {
		t.Fatalf("MULTIAPPEND: %q", st)
	}

	c := ts.login(t, nil)
	selectMailbox(t, c, "Archive", true)
	msgs, err := c.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{Flags: true, InternalDate: true, RFC822Size: true, UID: true}).Collect()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("fetch: %d messages, %v", len(msgs), err)
	}
	if !slices.Contains(msgs[0].Flags, imap.FlagSeen) || slices.Contains(msgs[0].Flags, imap.FlagFlagged) || msgs[0].RFC822Size != int64(len(m1)) {
		t.Errorf("first message: flags %v size %d", msgs[0].Flags, msgs[0].RFC822Size)
	}
	if !slices.Contains(msgs[1].Flags, imap.FlagFlagged) || !slices.Contains(msgs[1].Flags, "$Work") || msgs[1].RFC822Size != int64(len(m2)) || msgs[1].InternalDate.UTC().Format("2006-01-02 15:04") != "2025-02-03 09:00" {
		t.Errorf("second message: flags %v size %d date %v", msgs[1].Flags, msgs[1].RFC822Size, msgs[1].InternalDate)
	}
	c.Close()

	// A second literal too large: refused at once (no "+"), nothing
	// stored.
	rc.send("m2 APPEND Archive {" + itoaTest(len(m1)) + "}\r\n")
	rc.line() // +
	rc.send(m1 + " {" + itoaTest(40<<10) + "}\r\n")
	if st := rc.expectTagged("m2"); !strings.HasPrefix(st, "NO [TOOBIG]") {
		t.Fatalf("second literal too large: %q", st)
	}
	rc.stillInSync()
	// Malformed flags of the second message, sent without waiting.
	rc.send("m3 APPEND Archive {" + itoaTest(len(m1)) + "+}\r\n" + m1 + " (\\Bogus) {" + itoaTest(len(m2)) + "+}\r\n" + m2 + "\r\n")
	if st := rc.expectTagged("m3"); !strings.HasPrefix(st, "BAD") {
		t.Fatalf("second message with a bad flag: %q", st)
	}
	rc.stillInSync()
	// Garbage after the second message.
	rc.send("m4 APPEND Archive {" + itoaTest(len(m1)) + "+}\r\n" + m1 + " {" + itoaTest(len(m2)) + "+}\r\n" + m2 + " junk\r\n")
	if st := rc.expectTagged("m4"); !strings.HasPrefix(st, "BAD") {
		t.Fatalf("garbage after the second message: %q", st)
	}
	rc.stillInSync()
	// A missing mailbox.
	rc.send("m5 APPEND NoSuchBox {" + itoaTest(len(m1)) + "+}\r\n" + m1 + " {" + itoaTest(len(m2)) + "+}\r\n" + m2 + "\r\n")
	if st := rc.expectTagged("m5"); !strings.HasPrefix(st, "NO [TRYCREATE]") {
		t.Fatalf("MULTIAPPEND to a missing mailbox: %q", st)
	}
	// Over quota together: neither is stored.
	q, err := ts.env.Login(t, testUser, testPassword).Quota(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.env.Mem.SetQuota(testUser, q.Usage+uint64(len(m1))+10); err != nil {
		t.Fatal(err)
	}
	rc.send("m6 APPEND Archive {" + itoaTest(len(m1)) + "+}\r\n" + m1 + " {" + itoaTest(len(m2)) + "+}\r\n" + m2 + "\r\n")
	if st := rc.expectTagged("m6"); !strings.HasPrefix(st, "NO [OVERQUOTA]") {
		t.Fatalf("MULTIAPPEND over quota: %q", st)
	}
	rc.stillInSync()
	// One message with a malformed date or flag: refused before the
	// library sees it, the message never read as commands.
	body := "m9 LOGOUT\r\n"
	for _, prefix := range []string{`"31-Foo-2025 10:00:00 +0000"`, `("\\Seen")`, `(\Seen) "x" "y"`} {
		rc.send("m7 APPEND Archive " + prefix + " {" + itoaTest(len(body)) + "}\r\n")
		if l := rc.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("literal after %s: %q", prefix, l)
		}
		rc.send(body + "\r\n")
		if st := rc.expectTagged("m7"); !strings.HasPrefix(st, "BAD") {
			t.Fatalf("APPEND with %s: %q", prefix, st)
		}
		rc.stillInSync()
	}
	if n := mailboxCount(t, ts, "Archive"); n != 2 {
		t.Fatalf("Archive has %d messages after the refused appends, want 2", n)
	}
}

// FuzzAppendTail: whatever follows an APPEND message, the front's
// reading of it (tokens, flags, date) never panics.
func FuzzAppendTail(f *testing.F) {
	for _, s := range []string{``, ` (\Seen $x) "03-Feb-2025 10:00:00 +0100" {12}`, ` ( {3+}`, ` ")" ~{5}`, ` junk`, ` (((a))) {1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		toks, _, err := imapwire.LexTail(b)
		if err != nil {
			return
		}
		if it, err := parseAppendPrefix(toks); err == nil && len(it.flags) > len(toks) {
			t.Fatalf("%d flags from %d tokens", len(it.flags), len(toks))
		}
	})
}

// White space after the message literal of a one-message APPEND is
// answered like a bare CRLF. The library, given it, stored the message
// and answered nothing (go-imap v2.0.0-beta.8), and the session waited
// for that answer until the idle timeout, client gone or not (found by
// FuzzSession).
func TestAppendWhiteSpaceAfterLiteral(t *testing.T) {
	ts := newTestServer(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	m := simpleMessage("a@example.net", testUser, "spaced", "Mon, 02 Jan 2026 15:04:05 +0000", "body")
	rc.send("s1 APPEND INBOX {" + itoaTest(len(m)) + "}\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("literal: %q", l)
	}
	rc.send(m + "  \r\n")
	if st := rc.expectTagged("s1"); !strings.HasPrefix(st, "OK [APPENDUID ") {
		t.Fatalf("APPEND with spaces after the literal: %q", st)
	}
	rc.send("s2 APPEND INBOX (\\Seen) {" + itoaTest(len(m)) + "+}\r\n" + m + "   \r\n")
	if st := rc.expectTagged("s2"); !strings.HasPrefix(st, "OK [APPENDUID ") {
		t.Fatalf("APPEND with spaces after a non-synchronizing literal: %q", st)
	}
	rc.stillInSync()
	acct := ts.env.Login(t, testUser, testPassword)
	inbox, err := acct.Mailbox(context.Background(), schema.InboxName)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acct.Snapshot(context.Background(), inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Messages) != 2 {
		t.Fatalf("%d messages stored, want 2", len(snap.Messages))
	}
}
