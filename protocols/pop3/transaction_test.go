package pop3

import (
	"fmt"
	"strings"
	"testing"
)

var threeMessages = []string{
	message("first", "one", "two", "three"),
	message("second", ".starts with a dot", "..two dots", ".", "after the lone dot"),
	message("third", "x"),
}

func TestTransactionCommands(t *testing.T) {
	e := newEnv(t, threeMessages, func(cfg *Config) { cfg.MaxBadCommands = 100 })
	snap := e.inbox(t)
	if len(snap.Messages) != 3 {
		t.Fatalf("inbox has %d messages", len(snap.Messages))
	}
	var total uint64
	for i, m := range snap.Messages {
		if int(m.Size) != len(threeMessages[i]) {
			t.Fatalf("message %d: size %d, want %d", i+1, m.Size, len(threeMessages[i]))
		}
		total += m.Size
	}

	c := e.dial(t)
	c.cmdOK("USER " + testUser)
	if got, want := c.cmdOK("PASS "+testPassword), fmt.Sprintf("+OK maildrop locked and ready, 3 messages (%d octets)", total); got != want {
		t.Fatalf("PASS: got %q, want %q", got, want)
	}

	if got, want := c.cmd("STAT"), fmt.Sprintf("+OK 3 %d", total); got != want {
		t.Fatalf("STAT: got %q, want %q", got, want)
	}
	wantList := make([]string, 3)
	wantUIDL := make([]string, 3)
	for i, m := range snap.Messages {
		wantList[i] = fmt.Sprintf("%d %d", i+1, m.Size)
		wantUIDL[i] = fmt.Sprintf("%d %d.%d", i+1, snap.Mailbox.UIDValidity, m.UID)
	}
	if got := c.multiLines("LIST"); strings.Join(got, "|") != strings.Join(wantList, "|") {
		t.Fatalf("LIST: got %q, want %q", got, wantList)
	}
	if got := c.multiLines("UIDL"); strings.Join(got, "|") != strings.Join(wantUIDL, "|") {
		t.Fatalf("UIDL: got %q, want %q", got, wantUIDL)
	}
	for _, id := range wantUIDL {
		uid := strings.Fields(id)[1]
		if len(uid) < 1 || len(uid) > 70 || strings.ContainsFunc(uid, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			t.Fatalf("unique-id %q breaks RFC 1939", uid)
		}
	}
	if got := c.cmd("LIST 2"); got != "+OK "+wantList[1] {
		t.Fatalf("LIST 2: got %q", got)
	}
	if got := c.cmd("UIDL 3"); got != "+OK "+wantUIDL[2] {
		t.Fatalf("UIDL 3: got %q", got)
	}

	// RETR returns the message exactly; textproto's dot reader undoes the
	// stuffing, and turns CRLF into LF.
	for i, m := range threeMessages {
		got := c.multi(fmt.Sprintf("RETR %d", i+1))
		if want := strings.ReplaceAll(m, "\r\n", "\n"); got != want {
			t.Fatalf("RETR %d: got %q, want %q", i+1, got, want)
		}
	}

	header := "From: bob@example.net\nTo: " + testUser + "\nSubject: first\n\n"
	for _, tc := range []struct {
		n    string
		want string
	}{
		{"0", header},
		{"1", header + "one\n"},
		{"2", header + "one\ntwo\n"},
		{"3", header + "one\ntwo\nthree\n"},
		{"100", header + "one\ntwo\nthree\n"},
	} {
		if got := c.multi("TOP 1 " + tc.n); got != tc.want {
			t.Errorf("TOP 1 %s: got %q, want %q", tc.n, got, tc.want)
		}
	}

	// Errors for bad arguments, with the session going on.
	for _, tc := range []struct{ line, want string }{
		{"LIST 0", "-ERR no such message"},
		{"LIST 4", "-ERR no such message"},
		{"LIST x", "-ERR invalid message number"},
		{"LIST -1", "-ERR invalid message number"},
		{"LIST 1 2", "-ERR syntax"},
		{"UIDL 9", "-ERR no such message"},
		{"RETR", "-ERR syntax"},
		{"RETR 99999999999", "-ERR invalid message number"},
		{"TOP 1", "-ERR syntax"},
		{"TOP 1 x", "-ERR invalid number of lines"},
		{"TOP 1 -1", "-ERR invalid number of lines"},
		{"TOP 5 1", "-ERR no such message"},
		{"DELE", "-ERR syntax"},
		{"STAT 1", "-ERR syntax"},
		{"NOOP x", "-ERR syntax"},
		{"RSET x", "-ERR syntax"},
		{"CAPA x", "-ERR syntax"},
	} {
		c.cmdErr(tc.line, tc.want)
	}
	c.cmdOK("NOOP")

	// DELE marks; marked messages vanish from STAT, LIST and UIDL and
	// cannot be used; RSET brings them back.
	c.cmdOK("DELE 2")
	c.cmdErr("DELE 2", "-ERR message 2 already deleted")
	for _, cmd := range []string{"RETR 2", "TOP 2 0", "LIST 2", "UIDL 2"} {
		c.cmdErr(cmd, "-ERR message 2 already deleted")
	}
	rest := snap.Messages[0].Size + snap.Messages[2].Size
	if got, want := c.cmd("STAT"), fmt.Sprintf("+OK 2 %d", rest); got != want {
		t.Fatalf("STAT after DELE: got %q, want %q", got, want)
	}
	if got := c.multiLines("LIST"); strings.Join(got, "|") != wantList[0]+"|"+wantList[2] {
		t.Fatalf("LIST after DELE: %q", got)
	}
	if got := c.multiLines("UIDL"); strings.Join(got, "|") != wantUIDL[0]+"|"+wantUIDL[2] {
		t.Fatalf("UIDL after DELE: %q", got)
	}
	if got, want := c.cmd("RSET"), fmt.Sprintf("+OK maildrop has 3 messages (%d octets)", total); got != want {
		t.Fatalf("RSET: got %q, want %q", got, want)
	}
	c.cmdOK("RETR 2")
	if _, err := c.tp.ReadDotBytes(); err != nil {
		t.Fatal(err)
	}

	// Commands of the AUTHORIZATION state are refused now.
	for _, cmd := range []string{"USER x", "PASS x", "AUTH PLAIN", "STLS"} {
		c.cmdErr(cmd, "-ERR command not valid in the transaction state")
	}
	if got := c.multiLines("CAPA"); strings.Join(got, " ") != "TOP UIDL RESP-CODES AUTH-RESP-CODE PIPELINING" {
		t.Fatalf("CAPA in transaction: %q", got)
	}
	// RSET'd: QUIT deletes nothing.
	c.cmdOK("QUIT")
	c.expectClosed()
	if n := len(e.inbox(t).Messages); n != 3 {
		t.Fatalf("after RSET and QUIT: %d messages, want 3", n)
	}
}

// TestDotStuffingOnTheWire checks the bytes themselves, not through a
// client's un-stuffing.
func TestDotStuffingOnTheWire(t *testing.T) {
	e := newEnv(t, threeMessages[1:2])
	c := e.login(t)
	c.cmdOK("RETR 1")
	var lines []string
	for {
		l := c.readLine()
		if l == "." {
			break
		}
		lines = append(lines, l)
	}
	blank := 0
	for blank < len(lines) && lines[blank] != "" {
		blank++
	}
	body := strings.Join(lines[min(blank+1, len(lines)):], "|")
	if want := "..starts with a dot|...two dots|..|after the lone dot"; body != want {
		t.Fatalf("stuffed body: got %q, want %q", body, want)
	}
	// TOP stuffs as well.
	c.cmdOK("TOP 1 1")
	var top []string
	for l := c.readLine(); l != "."; l = c.readLine() {
		top = append(top, l)
	}
	if last := top[len(top)-1]; last != "..starts with a dot" {
		t.Fatalf("TOP last line %q", last)
	}
}

func TestEmptyMaildrop(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t)
	c.cmdOK("USER " + testUser)
	if got := c.cmd("PASS " + testPassword); got != "+OK maildrop locked and ready, 0 messages (0 octets)" {
		t.Fatalf("PASS: %q", got)
	}
	if got := c.cmd("STAT"); got != "+OK 0 0" {
		t.Fatalf("STAT: %q", got)
	}
	if got := c.multiLines("LIST"); got != nil {
		t.Fatalf("LIST: %q", got)
	}
	if got := c.multiLines("UIDL"); got != nil {
		t.Fatalf("UIDL: %q", got)
	}
	c.cmdErr("RETR 1", "-ERR no such message")
	c.cmdOK("QUIT")
}
