package imap

import (
	"bufio"
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// TestLiteralCapability: LITERAL+ is offered once, before and after
// login, and never LITERAL- with it (RFC 7888); a non-synchronizing
// literal works before login.
func TestLiteralCapability(t *testing.T) {
	ts := newTestServer(t)
	rc := dialRaw(t, ts.addr)
	check := func(when string) {
		t.Helper()
		caps := strings.Fields(strings.Join(rc.mustOK("CAPABILITY"), " "))
		n := 0
		for _, c := range caps {
			switch c {
			case "LITERAL+":
				n++
			case "LITERAL-":
				t.Errorf("%s: LITERAL- advertised: %q", when, caps)
			}
		}
		if n != 1 {
			t.Errorf("%s: LITERAL+ %d times: %q", when, n, caps)
		}
	}
	check("before login")
	// ENABLE is listed before login too (clients that read the list
	// once), and stays an authenticated-state command.
	if caps := strings.Fields(rc.mustOK("CAPABILITY")[0]); !slices.Contains(caps, "ENABLE") {
		t.Errorf("ENABLE not listed before login: %q", caps)
	}
	if _, st := rc.cmd("ENABLE UTF8=ACCEPT"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("ENABLE before login: %q", st)
	}
	rc.mustOK("LOGIN {" + strconv.Itoa(len(testUser)) + "+}\r\n" + testUser + " " + testPassword)
	check("after login")
	if caps := strings.Fields(rc.mustOK("CAPABILITY")[0]); countOf(caps, "ENABLE") != 1 {
		t.Errorf("ENABLE after login: %q", caps)
	}
	caps := rc.mustOK("CAPABILITY")
	if !strings.Contains(caps[0], " UTF8=ACCEPT") {
		t.Errorf("UTF8=ACCEPT not advertised: %q", caps)
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// TestUTF8AcceptRaw: after ENABLE UTF8=ACCEPT (RFC 6855) mailbox names
// are UTF-8 both ways, "&" an ordinary character; APPEND takes UTF8
// (~{n}...) data; a session that did not enable it keeps modified UTF-7.
func TestUTF8AcceptRaw(t *testing.T) {
	ts := newTestServer(t)
	plain := rawLogin(t, ts)
	plain.mustOK(`CREATE "A&-B"`)
	if _, st := plain.cmd(`CREATE "X&Y"`); !strings.HasPrefix(st, "NO [CANNOT]") {
		t.Errorf("X&Y without UTF8=ACCEPT: %q, want NO [CANNOT] (not modified UTF-7)", st)
	}
	// The other commands that name a mailbox alike (imaptest wants NO
	// or OK, not BAD).
	for _, cmd := range []string{`SELECT "X&Y"`, `STATUS "X&Y" (MESSAGES)`, `RENAME "A&-B" "X&Y"`} {
		if _, st := plain.cmd(cmd); !strings.HasPrefix(st, "NO [CANNOT]") {
			t.Errorf("%s without UTF8=ACCEPT: %q, want NO [CANNOT]", cmd, st)
		}
	}
	// A LIST pattern or reference that does not decode matches no name:
	// OK with nothing listed, as Dovecot answers (imaptest's "atoms").
	for _, cmd := range []string{`LIST "" "X&Y*"`, `LIST "&" "*"`, "LIST \"\" !#$$&'+,-.0123456789:;<=>?@^_`|[}%*", `LSUB "" "&Jjo*"`} {
		lines, st := plain.cmd(cmd)
		if !strings.HasPrefix(st, "OK") || len(lines) != 0 {
			t.Errorf("%s without UTF8=ACCEPT: %q %q, want OK and nothing listed", cmd, lines, st)
		}
	}
	plain.stillInSync()

	rc := rawLogin(t, ts)
	if got := rc.mustOK("ENABLE CONDSTORE UTF8=ACCEPT"); len(got) != 1 || !strings.Contains(got[0], "UTF8=ACCEPT") || !strings.Contains(got[0], "CONDSTORE") {
		t.Fatalf("ENABLE: %q", got)
	}
	rc.mustOK(`CREATE "Café"`)
	rc.mustOK(`CREATE "X&Y"`)
	rc.mustOK(`CREATE "Q&AOk-"`) // UTF-8 mode: a name, not a shift
	names := func(rc *rawConn, pattern string) []string {
		t.Helper()
		var out []string
		for _, l := range rc.mustOK(`LIST "" ` + pattern) {
			out = append(out, l[strings.LastIndex(l, `" `)+2:])
		}
		return out
	}
	got := names(rc, `"*"`)
	for _, want := range []string{`"A&B"`, `"Café"`, `"X&Y"`, `"Q&AOk-"`} {
		if !slices.Contains(got, want) {
			t.Errorf("LIST after UTF8=ACCEPT lacks %s: %q", want, got)
		}
	}
	if got := names(rc, `"X&*"`); !slices.Equal(got, []string{`"X&Y"`}) {
		t.Errorf(`LIST "X&*": %q`, got)
	}
	got = names(plain, `"*"`)
	for _, want := range []string{`"A&-B"`, `"Caf&AOk-"`, `"X&-Y"`, `"Q&-AOk-"`} {
		if !slices.Contains(got, want) {
			t.Errorf("LIST in modified UTF-7 lacks %s: %q", want, got)
		}
	}
	for cmd, want := range map[string]string{
		`STATUS "X&Y" (MESSAGES)`:                `* STATUS "X&Y" (MESSAGES 0)`,
		`STATUS "Café" (MESSAGES HIGHESTMODSEQ)`: `* STATUS "Café" (MESSAGES 0 HIGHESTMODSEQ 1)`,
	} {
		if got := rc.mustOK(cmd); len(got) != 1 || got[0] != want {
			t.Errorf("%s: %q, want %q", cmd, got, want)
		}
	}
	rc.mustOK(`RENAME "X&Y" "Y&Z"`)
	rc.mustOK(`SUBSCRIBE "Y&Z"`)
	if got := rc.mustOK(`LSUB "" "Y*"`); len(got) != 1 || !strings.HasSuffix(got[0], `"Y&Z"`) {
		t.Errorf("LSUB: %q", got)
	}

	// APPEND with UTF8 data: one message, closed by ")".
	msg := "From: Jörg <jörg@exämple.de>\r\nTo: " + testUser + "\r\nSubject: Grüße\r\n\r\nHallo\r\n"
	rc.send("A1 APPEND \"Y&Z\" UTF8 (~{" + strconv.Itoa(len(msg)) + "+}\r\n" + msg + ")\r\n")
	if st := rc.expectTagged("A1"); !strings.HasPrefix(st, "OK [APPENDUID") {
		t.Fatalf("APPEND UTF8: %q", st)
	}
	rc.mustOK(`SELECT "Y&Z"`)
	if got := rc.mustOK(`SEARCH SUBJECT "grüße"`); len(got) != 1 || got[0] != "* SEARCH 1" {
		t.Errorf("SEARCH: %q", got)
	}
	if got := rc.mustOK("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]"); len(got) != 1 || !strings.Contains(got[0], "Subject: Grüße") {
		t.Errorf("FETCH: %q", got)
	}
	// UTF8 data must close after the message.
	rc.send("A2 APPEND INBOX UTF8 (~{" + strconv.Itoa(len(msg)) + "+}\r\n" + msg + ") extra\r\n")
	if st := rc.expectTagged("A2"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("APPEND UTF8 with garbage: %q", st)
	}
	// ... and holds a literal8.
	rc.send("A3 APPEND INBOX UTF8 ({" + strconv.Itoa(len(msg)) + "+}\r\n" + msg + ")\r\n")
	if st := rc.expectTagged("A3"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("APPEND UTF8 with a plain literal: %q", st)
	}
	rc.stillInSync()

	// IMAP4rev2 includes UTF8=ACCEPT (RFC 9755 section 1).
	rev2 := rawLogin(t, ts)
	rev2.mustOK("ENABLE IMAP4rev2")
	if got := names(rev2, `"*&*"`); !slices.Contains(got, `"A&B"`) || !slices.Contains(got, `"Y&Z"`) {
		t.Errorf("LIST after ENABLE IMAP4rev2: %q", got)
	}
	rev2.mustOK(`CREATE "R&D"`)

	// UNAUTHENTICATE turns it off (RFC 8437).
	rc.mustOK("UNAUTHENTICATE")
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	if got := names(rc, `"A*"`); !slices.Contains(got, `"A&-B"`) {
		t.Errorf("LIST after UNAUTHENTICATE: %q", got)
	}
}

// TestUTF8AcceptClient: go-imap's client enables UTF8=ACCEPT, creates,
// lists, appends to and selects a mailbox named in UTF-8; a client that
// did not enable it reads the same name in modified UTF-7.
func TestUTF8AcceptClient(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	if !c.Caps().Has(imap.CapUTF8Accept) {
		t.Fatalf("UTF8=ACCEPT not advertised: %v", c.Caps())
	}
	data, err := c.Enable(imap.CapUTF8Accept).Wait()
	if err != nil || !data.Caps.Has(imap.CapUTF8Accept) {
		t.Fatalf("ENABLE: %v %v", data, err)
	}
	const name = "Grüße/Привет"
	if err := c.Create(name, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msg := "From: jörg@exämple.de\r\nSubject: Привет\r\n\r\nhi\r\n"
	ac := c.Append(name, int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
	ac.Write([]byte(msg))
	ac.Close()
	if _, err := ac.Wait(); err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	list, err := c.List("", "Gr*", nil).Collect()
	if err != nil || len(list) != 2 || list[1].Mailbox != name {
		t.Fatalf("LIST: %+v %v", list, err)
	}
	sel := selectMailbox(t, c, name, false)
	if sel.NumMessages != 1 {
		t.Errorf("SELECT: %d messages", sel.NumMessages)
	}
	other := ts.login(t, nil)
	list, err = other.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range list {
		names = append(names, l.Mailbox)
	}
	if !slices.Contains(names, name) {
		t.Errorf("LIST without UTF8=ACCEPT: %q", names)
	}
	enc, _ := imapwire.DecodeMailbox([]byte("Gr&APwA3w-e"))
	if enc != "Grüße" {
		t.Errorf("modified UTF-7 check: %q", enc)
	}
}

// FuzzEscapeNames: under UTF8=ACCEPT, the command the front forwards
// still reads as one command, and each mailbox name in it decodes (as
// the library reads it, modified UTF-7) to the UTF-8 name the client
// sent.
func FuzzEscapeNames(f *testing.F) {
	for _, s := range []string{
		`a CREATE "X&Y"`, `a RENAME A&B "C&D"`, `a LIST "" "X&*" RETURN (STATUS (MESSAGES))`,
		`a UID MOVE 1:* "Tr&sh"`, "a APPEND \"A&\" {3+}\r\nabc", `a SELECT "Caf&AOk-" (CONDSTORE)`,
	} {
		f.Add([]byte(s + "\r\n"))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		cmd, err := imapwire.NewReader(bufio.NewReader(bytes.NewReader(input)), imapwire.Limits{MaxCommand: 2048, MaxTokens: 256}).ReadCommand()
		if err != nil || cmd.Pending != nil {
			return
		}
		f := &frontConn{utf8Accept: true}
		wire := f.escapeNames(cmd, cmd.Wire)
		back, err := imapwire.NewReader(bufio.NewReader(bytes.NewReader(wire)), imapwire.Limits{}).ReadCommand()
		if err != nil {
			t.Fatalf("forwarded %q does not read: %v", wire, err)
		}
		was, now := nameTokens(cmd), nameTokens(back)
		if len(was) != len(now) {
			t.Fatalf("%q: names %d, forwarded %d", wire, len(was), len(now))
		}
		for k := range was {
			want, err := imapwire.DecodeMailboxUTF8(cmd.Args[was[k]].Value)
			if err != nil {
				continue
			}
			if got, err := imapwire.DecodeMailbox(back.Args[now[k]].Value); err != nil || got != want {
				t.Fatalf("%q: name %q forwarded as %q (%v)", input, want, back.Args[now[k]].Value, err)
			}
		}
	})
}
