package smtp

import (
	"strings"
	"testing"
)

// sizedMessage returns a message of exactly n bytes (n >= 64) that ends
// with CRLF and carries marker in its Subject.
func sizedMessage(t *testing.T, n int, marker string) string {
	t.Helper()
	msg := "From: <" + remote + ">\r\nSubject: " + marker + "\r\n\r\n"
	for len(msg)+100 < n {
		msg += strings.Repeat("y", 98) + "\r\n"
	}
	if n-len(msg) < 2 {
		t.Fatalf("sizedMessage: %d bytes is too small", n)
	}
	msg += strings.Repeat("z", n-len(msg)-2) + "\r\n"
	if len(msg) != n {
		t.Fatalf("sizedMessage built %d bytes, want %d", len(msg), n)
	}
	return msg
}

// TestSizeLimit checks RFC 1870: EHLO advertises the configured limit
// itself (it said limit+1), and a declared SIZE above it and a message above
// it are refused with one and the same 552 5.3.4 reply (MAIL got two
// texts), whether go-smtp or the session detects it.
func TestSizeLimit(t *testing.T) {
	const limit = 4096
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.MaxMessageBytes = limit
	addr, _ := f.start(cfg, false)

	c := dialMX(t, addr)
	if size, ok := c.MaxMessageSize(); !ok || size != limit {
		t.Errorf("EHLO SIZE = %d, %v; want %d", size, ok, limit)
	}
	c.Close()

	// Every refusal for size, whoever detects it, reads the same.
	refusals := map[string]string{} // reply text -> first case that got it
	refused := func(what, reply string) {
		t.Helper()
		if !strings.HasPrefix(reply, "5.3.4 ") {
			t.Errorf("%s: reply %q, want 552 5.3.4", what, reply)
		}
		if _, ok := refusals[reply]; !ok {
			refusals[reply] = what
		}
	}

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(250, "MAIL FROM:<%s> SIZE=%d", remote, limit)
	r.mustCmd(250, "RSET")
	for _, size := range []int{limit + 1, limit + 2, 1 << 30} {
		refused("MAIL SIZE="+itoa(size), r.mustCmd(552, "MAIL FROM:<%s> SIZE=%d", remote, size))
	}

	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send(sizedMessage(t, limit+1, "data-over-limit") + ".\r\n")
	refused("DATA of limit+1 bytes", r.expect(552))

	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	body := sizedMessage(t, limit+1, "bdat-over-limit")
	r.send("BDAT " + itoa(len(body)) + " LAST\r\n" + body)
	refused("BDAT of limit+1 bytes", r.expect(552))

	// A message of the limit, declared and sent with BDAT, is accepted.
	r.mustCmd(250, "MAIL FROM:<%s> SIZE=%d", remote, limit)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	body = sizedMessage(t, limit, "bdat-at-limit")
	r.send("BDAT " + itoa(len(body)) + " LAST\r\n" + body)
	r.expect(250)

	r.mustCmd(250, "MAIL FROM:<%s> SIZE=%d", remote, limit-1)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send(sizedMessage(t, limit-1, "data-under-limit") + ".\r\n")
	r.expect(250)

	// A DATA message of exactly the limit is accepted too: the MX front
	// hands DATA to go-smtp as BDAT, whose limit is exact (go-smtp's own
	// DATA reader refuses a message of its limit, see NewServer).
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send(sizedMessage(t, limit, "data-at-limit") + ".\r\n")
	r.expect(250)

	// The session is still in step after all of this.
	r.mustCmd(250, "NOOP")

	if len(refusals) != 1 {
		t.Errorf("size refusals read differently: %q", refusals)
	}
	msgs := f.inbox(alice, alicePW)
	if len(msgs) != 3 {
		t.Fatalf("INBOX holds %d messages, want 3", len(msgs))
	}
	findMessage(t, msgs, "bdat-at-limit")
	findMessage(t, msgs, "data-under-limit")
	findMessage(t, msgs, "data-at-limit")
}
