package imap

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestRouteTokens: tokenise gives each routed address a placeholder and
// leaves the envelope it was given alone; replace writes the route and
// the real mailbox in the placeholder's place, in any piece, and clear
// forgets them.
func TestRouteTokens(t *testing.T) {
	env := &imap.Envelope{
		From: []imap.Address{{Mailbox: "user", Host: "domain"}},
		To:   []imap.Address{{Mailbox: "a", Host: "b"}, {Name: "N", Mailbox: `q"t`, Host: "d"}},
		Cc:   []imap.Address{{Mailbox: "jörg", Host: "x"}},
	}
	routes := []envelopeRoute{
		{field: 0, index: 0, adl: "@route"},
		{field: 3, index: 1, adl: "@r1,@r2"},
		{field: 4, index: 0, adl: "@r3"},   // 8-bit mailbox: left NIL
		{field: 3, index: 9, adl: "@gone"}, // no such address
	}
	var tok routeTokens
	out := tok.tokenise(env, routes)
	if env.From[0].Mailbox != "user" || env.To[1].Mailbox != `q"t` {
		t.Fatalf("tokenise modified its envelope: %+v", env)
	}
	if out.Cc[0].Mailbox != "jörg" || out.To[0].Mailbox != "a" {
		t.Errorf("unrouted addresses changed: %+v %+v", out.Cc, out.To)
	}
	if got := tok.pending.Load(); got != 2 {
		t.Errorf("%d tokens pending, want 2", got)
	}
	// As the library writes the From and To lists, and Sender from
	// From again.
	from := fmt.Sprintf(`((NIL NIL "%s" "domain"))`, out.From[0].Mailbox)
	line := "* 6 FETCH (ENVELOPE (NIL NIL " + from + " " + from + " " + from +
		fmt.Sprintf(` ((NIL NIL "a" "b") ("N" NIL "%s" "d")) NIL NIL NIL NIL))`, out.To[1].Mailbox) + "\r\n"
	want := `* 6 FETCH (ENVELOPE (NIL NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain"))` +
		` ((NIL NIL "a" "b") ("N" "@r1,@r2" "q\"t" "d")) NIL NIL NIL NIL))` + "\r\n"
	if got := string(tok.replace([]byte(line))); got != want {
		t.Errorf("replace:\n got %s\nwant %s", got, want)
	}
	// A token of another number, or of another connection, stays.
	other := `("x" NIL "adl-0000000000000000-1" "h") ` + string(tok.needle) + `99" "h")`
	if got := string(tok.replace([]byte(other))); got != other {
		t.Errorf("unknown tokens replaced: %s", got)
	}
	tok.clear()
	if got := string(tok.replace([]byte(line))); got != line {
		t.Errorf("replaced after clear: %s", got)
	}
}

// TestRouteTokensBounded: one command's tokens stop at maxRouteTokens;
// the addresses beyond keep their mailbox and a NIL route.
func TestRouteTokensBounded(t *testing.T) {
	var tok routeTokens
	env := &imap.Envelope{To: make([]imap.Address, maxRouteTokens+10)}
	var routes []envelopeRoute
	for i := range env.To {
		env.To[i] = imap.Address{Mailbox: fmt.Sprint("u", i), Host: "h"}
		routes = append(routes, envelopeRoute{field: 3, index: i, adl: "@r"})
	}
	out := tok.tokenise(env, routes)
	if got := tok.pending.Load(); got != maxRouteTokens {
		t.Errorf("%d tokens, want %d", got, maxRouteTokens)
	}
	if last := out.To[len(out.To)-1].Mailbox; last != fmt.Sprint("u", maxRouteTokens+9) {
		t.Errorf("address beyond the bound has mailbox %q", last)
	}
}

// TestEnvelopeRoutesOnTheWire: FETCH ENVELOPE answers an obs-route as
// the address's at-domain-list, as imaptest's fetch-envelope expects,
// also in a response line longer than the relay's buffer and next to a
// literal; a client library reads the real mailbox.
func TestEnvelopeRoutesOnTheWire(t *testing.T) {
	ts := newTestServer(t)
	ts.deliver(t, "Date: Thu, 01 Feb 2007 01:02:03 +0200\r\nFrom: <@route:user@domain>\r\n\r\nbody\r\n")
	var to []string
	for i := 0; i < maxEnvelopeAddresses; i++ {
		to = append(to, fmt.Sprintf("<@relay%d.example,@hop.example:user%d@d.example>", i, i))
	}
	ts.deliver(t, "From: Real Name <@a.example:x@y.example>\r\nTo: "+strings.Join(to, ",\r\n ")+"\r\nSubject: many\r\n\r\nbody\r\n")

	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("EXAMINE INBOX")
	for round := 0; round < 2; round++ {
		got := rc.mustOK("FETCH 1 (ENVELOPE)")
		want := `* 1 FETCH (ENVELOPE ("Thu, 01 Feb 2007 01:02:03 +0200" NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL))`
		if len(got) != 1 || got[0] != want {
			t.Fatalf("round %d: FETCH ENVELOPE = %q, want %q", round, got, want)
		}
	}
	got := rc.mustOK("FETCH 2 (BODY.PEEK[TEXT] ENVELOPE)")
	if len(got) != 1 {
		t.Fatalf("FETCH 2: %q", got)
	}
	if len(got[0]) <= relayBuffer {
		t.Fatalf("the response line (%d bytes) fits the relay's buffer (%d): the test does not cross it", len(got[0]), relayBuffer)
	}
	if strings.Contains(got[0], "adl-") {
		t.Errorf("a placeholder reached the client: %.300s", got[0][strings.Index(got[0], "adl-")-20:])
	}
	for i := 0; i < maxEnvelopeAddresses; i++ {
		addr := fmt.Sprintf(`(NIL "@relay%d.example,@hop.example" "user%d" "d.example")`, i, i)
		if !strings.Contains(got[0], addr) {
			t.Fatalf("address %d missing: want %s", i, addr)
		}
	}
	if !strings.Contains(got[0], `(("Real Name" "@a.example" "x" "y.example"))`) {
		t.Errorf("From without its route: %.400s", got[0])
	}

	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", true)
	m := fetchOne(t, c, imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true})
	if m.Envelope == nil || addrString(m.Envelope.From) != "/user/domain" {
		t.Errorf("the client read From %+v", m.Envelope)
	}
}
