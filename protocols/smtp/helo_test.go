package smtp

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestAcceptableHelo(t *testing.T) {
	tests := []struct {
		helo string
		want bool
	}{
		{"client.example", true},
		{"client.example.", true},
		{"localhost", true},
		{"DESKTOP-4F2K9Q", true},
		{"mail_1.client.example", true},
		{"xn--bcher-kva.example", true},
		{"bücher.example", true},
		{"例え.テスト", true},
		{"192.0.2.1", true}, // a bare address is label-shaped; tolerated
		{"[192.0.2.1]", true},
		{"[IPv6:2001:db8::1]", true},
		{strings.Repeat("a", 63) + ".example", true},

		{"", false},
		{"\x00\x00", false},
		{"client.example\x00", false},
		{"client\r\n.example", false},
		{"client\texample", false},
		{"client example", false},
		{"\x7f", false},
		{".", false},
		{"..", false},
		{"a..example", false},
		{".client.example", false},
		{"-client.example", false},
		{"client-.example", false},
		{"client@example", false},
		{"(client)", false},
		{"client/example", false},
		{"[192.0.2.1", false},
		{"[300.0.2.1]", false},
		{"[2001:db8::1]", false},
		{"[IPv6:192.0.2.1]", false},
		{"[client.example]", false},
		{"bad\xffutf8.example", false},
		{"evil\u202etxt.example", false}, // bidi override, not printable
		{"no\u00a0break.example", false},
		{strings.Repeat("a", 64) + ".example", false},
		{strings.Repeat("a.", 128) + "a", false},
	}
	for _, tt := range tests {
		if got := acceptableHelo(tt.helo); got != tt.want {
			t.Errorf("acceptableHelo(%q) = %v, want %v", tt.helo, got, tt.want)
		}
	}
}

// TestHeloRefused checks that a HELO/EHLO argument that is not a domain
// name or an address literal is refused with 501 5.5.4 instead of being
// echoed (it was: "250-Hello \x00\x00"), that the client may try again,
// and that the refusal is logged without the raw bytes.
func TestHeloRefused(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeMX), false)

	t.Run("first greeting", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		for _, cmd := range []string{"EHLO \x00\x00", "HELO \x01", "EHLO client.example\x1b[2J", "EHLO -"} {
			code, msg := r.cmd("%s", cmd)
			if code != 501 || !strings.HasPrefix(msg, "5.5.4 ") {
				t.Errorf("%q: got %d %q, want 501 5.5.4", cmd, code, msg)
			}
			if strings.ContainsAny(msg, "\x00\x01\x1b") {
				t.Errorf("%q: reply %q echoes control bytes", cmd, msg)
			}
		}
		// No session was started: the client has not introduced itself.
		r.mustCmd(502, "MAIL FROM:<%s>", remote)
		msg := r.mustCmd(250, "EHLO bücher.example")
		if !strings.HasPrefix(msg, "Hello bücher.example\n") {
			t.Errorf("EHLO reply %q", msg)
		}
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(250, "RCPT TO:<%s>", alice)
		r.mustCmd(354, "DATA")
		r.send(testMessage(remote, alice, "after-bad-helo") + ".\r\n")
		r.expect(250)
		r.mustCmd(221, "QUIT")
		findMessage(t, f.inbox(alice, alicePW), "after-bad-helo")
	})

	t.Run("after STARTTLS", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(220, "STARTTLS")
		r.startTLS(f.clientTLS)
		if code, msg := r.cmd("EHLO \x00"); code != 501 || !strings.HasPrefix(msg, "5.5.4 ") {
			t.Errorf("EHLO after STARTTLS: got %d %q, want 501 5.5.4", code, msg)
		}
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
	})

	t.Run("repeated greeting", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "EHLO other.example") // a valid new name is fine
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		// go-smtp answers a repeated EHLO itself, so a bad one cannot get
		// a 501: the server hangs up rather than echo it.
		code, msg := r.cmd("EHLO \x00bad")
		if code != 421 || !strings.HasPrefix(msg, "4.5.4 ") || strings.Contains(msg, "\x00") {
			t.Errorf("repeated bad EHLO: got %d %q, want 421 4.5.4", code, msg)
		}
		if line, err := r.text.ReadLine(); !errors.Is(err, io.EOF) {
			t.Errorf("after the 421: read %q, %v; want the end of the connection", line, err)
		}
	})

	logs := f.logs.String()
	if strings.ContainsAny(logs, "\x00\x01\x1b") {
		t.Errorf("logs contain raw control bytes")
	}
	if !strings.Contains(f.infoLogs.String(), "op=helo") || !strings.Contains(logs, `x00\\x00`) {
		t.Errorf("refused HELO not logged, quoted, at info level:\n%s", f.infoLogs)
	}
}
