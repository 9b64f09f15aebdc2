package imap

import (
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// wireLog is a raw session that keeps every untagged line it received, so
// that the order of FLAGS and FETCH responses can be checked across
// commands.
type wireLog struct {
	rc    *rawConn
	lines []string
}

func (l *wireLog) ok(command string) []string {
	l.rc.t.Helper()
	got := l.rc.mustOK(command)
	l.lines = append(l.lines, got...)
	return got
}

// keywordOrder checks that every FETCH line showing kw comes after a FLAGS
// line listing it, and reports whether a FLAGS line listed it.
func (l *wireLog) keywordOrder(t *testing.T, kw string) bool {
	t.Helper()
	inFlags := false
	for _, line := range l.lines {
		switch {
		case strings.HasPrefix(line, "* FLAGS ") && strings.Contains(line, kw):
			inFlags = true
		case strings.Contains(line, " FETCH ") && strings.Contains(line, kw) && !inFlags:
			t.Errorf("%q shows %s before any FLAGS response lists it (session: %q)", line, kw, l.lines)
		}
	}
	return inFlags
}

func loginRaw(t *testing.T, ts *testServer) *wireLog {
	t.Helper()
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	return &wireLog{rc: rc}
}

// TestKeywordsInMailboxFlags: a keyword set on a message is in the
// mailbox's FLAGS before any FETCH shows it, in the session that set it
// and in every other session of the mailbox, whichever command brings the
// news; PERMANENTFLAGS carries \*.
func TestKeywordsInMailboxFlags(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 3)

	// B, a real client, selected before any keyword exists.
	var mu sync.Mutex
	var flagsSeen [][]imap.Flag
	b := ts.login(t, &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.Flags != nil {
				mu.Lock()
				flagsSeen = append(flagsSeen, d.Flags)
				mu.Unlock()
			}
		},
	})
	sel := selectMailbox(t, b, "INBOX", false)
	if !hasFlag(sel.PermanentFlags, imap.FlagWildcard) {
		t.Errorf("PERMANENTFLAGS %v lack \\*", sel.PermanentFlags)
	}
	if hasFlag(sel.Flags, "Work") {
		t.Fatalf("FLAGS %v before any keyword", sel.Flags)
	}

	a := loginRaw(t, ts)
	a.ok("SELECT INBOX")
	c := loginRaw(t, ts)
	c.ok("SELECT INBOX")

	// A's own STORE: FLAGS first, then the FETCH.
	got := a.ok("STORE 1 +FLAGS (Work)")
	if !a.keywordOrder(t, "Work") {
		t.Errorf("STORE of a new keyword: no FLAGS response in %q", got)
	}
	if n := countPrefix(got, "* 1 FETCH"); n != 1 {
		t.Errorf("STORE reported message 1 %d times: %q", n, got)
	}
	// A silent STORE still tells FLAGS, without FETCH.
	got = a.ok("STORE 2 +FLAGS.SILENT (Quiet)")
	if !a.keywordOrder(t, "Quiet") || countPrefix(got, "* 2 FETCH") != 0 {
		t.Errorf("STORE .SILENT of a new keyword: %q", got)
	}

	// C learns at NOOP: FLAGS before the FETCH updates.
	c.ok("NOOP")
	if !c.keywordOrder(t, "Work") || !c.keywordOrder(t, "Quiet") {
		t.Errorf("other session's NOOP did not tell FLAGS: %q", c.lines)
	}

	// A keyword C hears of while a FETCH runs is left out of that FETCH
	// and told, FLAGS first, before the command ends.
	a.ok("STORE 3 +FLAGS.SILENT (Later)")
	got = c.ok("FETCH 1:3 (FLAGS)")
	if !c.keywordOrder(t, "Later") {
		t.Errorf("FETCH during another session's new keyword: no FLAGS in %q", got)
	}
	if !strings.Contains(got[len(got)-1], "Later") {
		t.Errorf("the FETCH's last update does not carry the keyword: %q", got)
	}

	// An APPEND with a new keyword, and a FETCH that sets \Seen on a
	// message with a keyword not told yet.
	a.ok("STORE 1 +FLAGS.SILENT (Urgent)")
	body := simpleMessage("x@example.net", testUser, "kw", "Mon, 01 Jan 2024 10:00:00 +0000", "new")
	cmd := b.Append("INBOX", int64(len(body)), &imap.AppendOptions{Flags: []imap.Flag{"Filed"}})
	cmd.Write([]byte(body))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	c.ok("FETCH 1 (BODY[TEXT])")
	c.ok("NOOP")
	for _, kw := range []string{"Urgent", "Filed"} {
		if !c.keywordOrder(t, kw) {
			t.Errorf("%s never told in FLAGS: %q", kw, c.lines)
		}
	}

	// B, the real client, got FLAGS updates with every keyword.
	if err := b.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B's FLAGS update", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(flagsSeen) == 0 {
			return false
		}
		last := flagsSeen[len(flagsSeen)-1]
		return hasFlag(last, "Work") && hasFlag(last, "Quiet") && hasFlag(last, "Later") && hasFlag(last, "Urgent") && hasFlag(last, "Filed")
	})

	// A new session's SELECT lists them all.
	d := ts.login(t, nil)
	sel = selectMailbox(t, d, "INBOX", true)
	for _, kw := range []imap.Flag{"Work", "Quiet", "Later", "Urgent", "Filed"} {
		if !hasFlag(sel.Flags, kw) {
			t.Errorf("SELECT FLAGS %v lack %s", sel.Flags, kw)
		}
	}
}

func countPrefix(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}
