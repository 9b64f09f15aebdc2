package node

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestNoopShowsChangesFromOtherNodes: two IMAP clients of one user on
// the two nodes of a cluster, the same mailbox selected. Whatever one
// does, the other's next NOOP or CHECK reports: new messages, flag
// changes and expunges. One of the two nodes follows the user's shard,
// and its replica learns of a commit only with the leader's next append,
// after the other client's command has returned; RFC 9051 section 6.1.2
// has NOOP poll for exactly such changes, and imaptest's scripted tests
// expect them there.
func TestNoopShowsChangesFromOtherNodes(t *testing.T) {
	ic := startIMAPCluster(t, "finn@example.test", "finn-two-clients-pw")
	a := ic.loginLines(t, ic.n1, ic.cfg1)
	b := ic.loginLines(t, ic.n2, ic.cfg2)
	a.ok("SELECT INBOX")
	b.ok("SELECT INBOX")
	appendMsg := func(c *imapLines, subject string) {
		t.Helper()
		msg := "From: x@example.test\r\nSubject: " + subject + "\r\n\r\nbody\r\n"
		c.ok(fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(msg), msg))
	}
	// expect runs command on c and wants a line that starts with want
	// and, after that, holds flagged or not.
	const anyFlags, flagged, notFlagged = 0, 1, 2
	expect := func(c *imapLines, command, want string, flags int, what string) {
		t.Helper()
		got := c.ok(command)
		if !slices.ContainsFunc(got, func(l string) bool {
			rest, ok := strings.CutPrefix(l, want)
			has := strings.Contains(rest, `\Flagged`)
			return ok && (flags == anyFlags || has == (flags == flagged))
		}) {
			t.Fatalf("%s: %s answered %q, want a line %q... (flags %d)", what, command, got, want, flags)
		}
	}

	appendMsg(a, "through n1")
	expect(b, "NOOP", "* 1 EXISTS", anyFlags, "append on n1, NOOP on n2")
	appendMsg(b, "through n2")
	expect(a, "CHECK", "* 2 EXISTS", anyFlags, "append on n2, CHECK on n1")

	a.ok(`STORE 1 +FLAGS.SILENT (\Flagged)`)
	expect(b, "NOOP", "* 1 FETCH (", flagged, "flag set on n1, NOOP on n2")
	b.ok(`STORE 1 -FLAGS.SILENT (\Flagged)`)
	expect(a, "NOOP", "* 1 FETCH (", notFlagged, "flag cleared on n2, NOOP on n1")

	b.ok(`STORE 2 +FLAGS.SILENT (\Deleted)`)
	b.ok("EXPUNGE")
	expect(a, "NOOP", "* 2 EXPUNGE", anyFlags, "expunge on n2, NOOP on n1")
	a.ok(`STORE 1 +FLAGS.SILENT (\Deleted)`)
	a.ok("EXPUNGE")
	expect(b, "NOOP", "* 1 EXPUNGE", anyFlags, "expunge on n1, NOOP on n2")
}
