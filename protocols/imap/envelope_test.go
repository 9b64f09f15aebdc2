package imap

import (
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// addrString renders addresses as the ENVELOPE does, for comparison:
// "name/mailbox/host", "[group" for a group start, "]" for its end.
func addrString(l []imap.Address) string {
	var parts []string
	for _, a := range l {
		switch {
		case a.IsGroupEnd():
			parts = append(parts, "]")
		case a.IsGroupStart():
			parts = append(parts, "["+a.Mailbox)
		default:
			parts = append(parts, a.Name+"/"+a.Mailbox+"/"+a.Host)
		}
	}
	return strings.Join(parts, " ")
}

func TestEnvelopeAddresses(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"undisclosed-recipients:;", "[undisclosed-recipients ]"},
		{"group: a@b.example, c@d.example;", "[group /a/b.example /c/d.example ]"},
		{`"Carol Sender" <carol@example.net>, team: x@y.example;, e@f.example`,
			"Carol Sender/carol/example.net [team /x/y.example ] /e/f.example"},
		{"=?utf-8?q?J=C3=B6rg?= <j@x.example>", "Jörg/j/x.example"},
		{`"Team, the best" : a@b.example;`, "[Team, the best /a/b.example ]"},
		{"Friends (old ones): a@b.example", "[Friends /a/b.example ]"}, // no ";": closed at the end
		{"a@b.example (Comment, with: colon)", "Comment, with: colon/a/b.example"},
		{`<"odd:local"@x.example>`, "/odd:local/x.example"},
		{"one: a@b.example; two: c@d.example;", "[one /a/b.example ] [two /c/d.example ]"},
		// obs-route (RFC 5322 section 4.4): the mailbox kept (imaptest's
		// fetch-envelope got From NIL); its route is the ENVELOPE's
		// at-domain-list (TestEnvelopeRoutes).
		{"<@route:user@domain>", "/user/domain"},
		{"Real Name <@a.example,@b.example:user@domain>, x@y.example", "Real Name/user/domain /x/y.example"},
		{"g: < @r.example : u@d.example>;", "[g /u/d.example ]"},
		{"a@b.example,\r\n c@d.example", "/a/b.example /c/d.example"},
		{"just text, a@b.example", "/a/b.example"},
		{"broken <a@b.example", ""},
		{"<user (comment)@ (comment) host.example>", "/user/host.example"},
		// No domain: the mailbox kept, the host filled in (imaptest's
		// sort test sorts "From: d" by "d").
		{"d", "/d/MISSING_DOMAIN"},
		{"Dee <d>, e@f.example", "Dee/d/MISSING_DOMAIN /e/f.example"},
		{`"quoted local"`, "/quoted local/MISSING_DOMAIN"},
		{"<>", ""},
		{"two words", ""},
	}
	for _, tc := range cases {
		if got := addrString(envelopeAddresses(tc.in)); got != tc.want {
			t.Errorf("envelopeAddresses(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("a@b.example, ", 3*maxEnvelopeAddresses)
	if n := len(envelopeAddresses(long)); n != maxEnvelopeAddresses {
		t.Errorf("%d addresses from an overlong field, want %d", n, maxEnvelopeAddresses)
	}
}

// TestEnvelopeRoutes: the obs-route of an address is kept as its
// at-domain-list, by field and index, without white space.
func TestEnvelopeRoutes(t *testing.T) {
	h := "From: <@route:user@domain>\r\n" +
		"To: a@b.example, Real Name <@a.example, @b.example:user@domain>\r\n" +
		"Cc: g: < @r.example : u@d.example>;\r\n" +
		"Bcc: plain@c.example\r\n\r\n"
	env, routes := routedEnvelopeOf([]byte(h))
	want := []envelopeRoute{
		{field: 0, index: 0, adl: "@route"},
		{field: 3, index: 1, adl: "@a.example,@b.example"},
		{field: 4, index: 1, adl: "@r.example"},
	}
	if len(routes) != len(want) {
		t.Fatalf("routes %+v, want %+v", routes, want)
	}
	for i, r := range routes {
		if r != want[i] {
			t.Errorf("route %d = %+v, want %+v", i, r, want[i])
		}
		if a := (*envelopeFields[r.field].list(env))[r.index]; a.Mailbox == "" || a.Host == "" {
			t.Errorf("route %d names %+v, not a mailbox", i, a)
		}
	}
	if _, routes := routedEnvelopeOf([]byte("From: a@b.example\r\nTo: <c@d.example>\r\n\r\n")); routes != nil {
		t.Errorf("routes %+v for addresses without one", routes)
	}
}

// TestEnvelopeGroups: ENVELOPE keeps group syntax as RFC 3501's group
// markers, for the message and for an attached message in BODYSTRUCTURE.
func TestEnvelopeGroups(t *testing.T) {
	ts := newTestServer(t)
	inner := "From: inner@example.net\r\nTo: list: x@y.example;\r\nSubject: inner\r\n\r\nhi\r\n"
	ts.deliver(t, "From: \"Carol Sender\" <carol@example.net>\r\n"+
		"To: undisclosed-recipients:;\r\n"+
		"Cc: team: a@b.example, c@d.example;, e@f.example\r\n"+
		"Subject: groups\r\n"+
		"MIME-Version: 1.0\r\n"+
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n"+
		"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"+
		"--b\r\nContent-Type: message/rfc822\r\n\r\n"+inner+
		"--b--\r\n")
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", true)

	m := fetchOne(t, c, imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}})
	env := m.Envelope
	if env == nil {
		t.Fatal("no envelope")
	}
	for _, tc := range []struct {
		field string
		got   []imap.Address
		want  string
	}{
		{"From", env.From, "Carol Sender/carol/example.net"},
		{"To", env.To, "[undisclosed-recipients ]"},
		{"Cc", env.Cc, "[team /a/b.example /c/d.example ] /e/f.example"},
	} {
		if got := addrString(tc.got); got != tc.want {
			t.Errorf("ENVELOPE %s = %q, want %q", tc.field, got, tc.want)
		}
	}
	mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || len(mp.Children) != 2 {
		t.Fatalf("BODYSTRUCTURE %#v", m.BodyStructure)
	}
	att, ok := mp.Children[1].(*imap.BodyStructureSinglePart)
	if !ok || att.MessageRFC822 == nil || att.MessageRFC822.Envelope == nil {
		t.Fatalf("attached message structure %#v", mp.Children[1])
	}
	if got := addrString(att.MessageRFC822.Envelope.To); got != "[list /x/y.example ]" {
		t.Errorf("attached message's ENVELOPE To = %q", got)
	}

	// On the wire: a group start is (NIL NIL "name" NIL), its end
	// (NIL NIL NIL NIL). (The library's encoder puts a space between
	// the addresses of a list, which RFC 3501's grammar does not.)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("EXAMINE INBOX")
	got := rc.mustOK("FETCH 1 (ENVELOPE)")
	want := regexp.MustCompile(`\(\(NIL NIL "undisclosed-recipients" NIL\) ?\(NIL NIL NIL NIL\)\) ` +
		`\(\(NIL NIL "team" NIL\) ?\(NIL NIL "a" "b.example"\) ?\(NIL NIL "c" "d.example"\) ?\(NIL NIL NIL NIL\) ?\(NIL NIL "e" "f.example"\)\)`)
	if len(got) != 1 || !want.MatchString(got[0]) {
		t.Errorf("FETCH ENVELOPE = %q, want it to match %s", got, want)
	}
}

// FuzzEnvelopeAddresses: any field value parses without panic into a
// bounded list whose group markers are balanced, and has a normal form
// for SEARCH.
func FuzzEnvelopeAddresses(f *testing.F) {
	for _, s := range []string{
		"undisclosed-recipients:;", "g: a@b.c, \"x, y\" <d@e.f>;, h@i.j", `a@b.c (x: y; z)`,
		`"unterminated`, "((", "<a:b@c;d>", "[1.2.3.4]: x@[5.6.7.8];", `\`, "<@r1, @r2:u@h>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		normalAddresses(s)
		var routes []envelopeRoute
		l := routedAddresses(s, 3, &routes)
		for _, r := range routes {
			if r.field != 3 || r.index >= len(l) || l[r.index].Host == "" || !strings.HasPrefix(r.adl, "@") {
				t.Fatalf("route %+v in %q", r, addrString(l))
			}
		}
		if len(l) > maxEnvelopeAddresses+2 {
			t.Fatalf("%d addresses", len(l))
		}
		open := false
		for _, a := range l {
			switch {
			case a.IsGroupStart():
				if open {
					t.Fatalf("nested group start in %q", addrString(l))
				}
				open = true
			case a.IsGroupEnd():
				if !open {
					t.Fatalf("group end without start in %q", addrString(l))
				}
				open = false
			}
		}
		if open {
			t.Fatalf("unclosed group in %q", addrString(l))
		}
	})
}
