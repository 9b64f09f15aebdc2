package smtp

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// TestMXDeliveryOverSTARTTLS delivers to a local user over STARTTLS and
// checks the stored message and its trace header fields.
func TestMXDeliveryOverSTARTTLS(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeMX), false)

	c := dialMX(t, addr)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered on MX")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered on MX before TLS")
	}
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "SIZE"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("extension %s not advertised", ext)
		}
	}
	if size, ok := c.MaxMessageSize(); !ok || size != DefaultMaxMessageBytes {
		t.Errorf("SIZE = %d, %v; want %d", size, ok, DefaultMaxMessageBytes)
	}
	c.Close()

	c, err := gosmtp.DialStartTLS(addr, f.clientTLS)
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatalf("EHLO after STARTTLS: %v", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered again after TLS")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered on MX after TLS")
	}
	// AUTH is not available on MX even over TLS.
	err = c.Auth(sasl.NewPlainClient("", alice, alicePW))
	wantCode(t, "AUTH on MX", err, 502, gosmtp.EnhancedCode{5, 5, 1})

	if err := c.Mail(remote, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	if err := sendData(c, testMessage(remote, alice, "starttls-1")); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}

	msg := f.onlyMessage(alice, alicePW)
	lines := strings.Split(headerSection(msg), "\r\n")
	if lines[0] != "Return-Path: <"+remote+">" {
		t.Errorf("first line %q, want the Return-Path", lines[0])
	}
	if !strings.HasPrefix(lines[1], "Received: from client.example ([127.0.0.1])") {
		t.Errorf("second line %q, want the Received header", lines[1])
	}
	received := unfold(fieldValue(msg, "Received"))
	for _, want := range []string{
		"by mx.example.test (mailcluster) with ESMTPS id ",
		"(version=TLS1.3 cipher=TLS_",
		"for <" + alice + ">;",
	} {
		if !strings.Contains(received, want) {
			t.Errorf("Received %q lacks %q", received, want)
		}
	}
	if !strings.HasSuffix(msg, "Body starttls-1\r\n") || !strings.Contains(msg, "Subject: test starttls-1\r\n") {
		t.Errorf("stored message lost content:\n%s", msg)
	}
}

// TestMXRecipients covers recipient checks and multi-recipient delivery
// on plain-text MX.
func TestMXRecipients(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.MaxRecipients = 4
	addr, _ := f.start(cfg, false)

	tests := []struct {
		name     string
		rcpt     string
		code     int
		enhanced gosmtp.EnhancedCode
		text     string
	}{
		{"remote domain is relaying", remote, 550, gosmtp.EnhancedCode{5, 7, 1}, "Relaying denied"},
		{"unknown local user", "nobody@example.test", 550, gosmtp.EnhancedCode{5, 1, 1}, "No such user"},
		{"non-ASCII without SMTPUTF8", "jörg@example.test", 553, gosmtp.EnhancedCode{5, 6, 7}, "SMTPUTF8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := dialRaw(t, addr, nil)
			r.mustCmd(250, "EHLO client.example")
			r.mustCmd(250, "MAIL FROM:<%s>", remote)
			code, msg := r.cmd("RCPT TO:<%s>", tt.rcpt)
			if code != tt.code || !strings.HasPrefix(msg, enhancedText(tt.enhanced)) || !strings.Contains(msg, tt.text) {
				t.Fatalf("RCPT %s: got %d %q, want %d %v %q", tt.rcpt, code, msg, tt.code, tt.enhanced, tt.text)
			}
		})
	}

	t.Run("each recipient gets the message", func(t *testing.T) {
		c := dialMX(t, addr)
		if err := c.Mail(remote, nil); err != nil {
			t.Fatalf("MAIL: %v", err)
		}
		// A duplicate (in another case) and a refused recipient in the
		// middle do not disturb the others.
		for _, rcpt := range []string{alice, "BOB@example.test", "nobody@example.test", bob, carol} {
			err := c.Rcpt(rcpt, nil)
			if (err != nil) != (rcpt == "nobody@example.test") {
				t.Fatalf("RCPT %s: %v", rcpt, err)
			}
		}
		// go-smtp counts the duplicate too, so the next RCPT exceeds
		// MaxRecipients (4).
		err := c.Rcpt("alice+tag@example.test", nil)
		wantCode(t, "RCPT over the limit", err, 452, gosmtp.EnhancedCode{4, 5, 3})
		if err := sendData(c, testMessage(remote, alice, "multi-1")); err != nil {
			t.Fatalf("DATA: %v", err)
		}
		for _, u := range []struct{ addr, pw string }{{alice, alicePW}, {bob, bobPW}, {carol, carolPW}} {
			msg := f.onlyMessage(u.addr, u.pw)
			if !strings.Contains(msg, "Subject: test multi-1") {
				t.Errorf("%s got the wrong message", u.addr)
			}
			if r := fieldValue(msg, "Received"); strings.Contains(r, " for <") {
				t.Errorf("Received names a recipient of a multi-recipient message: %q", r)
			}
		}
	})

	t.Run("null reverse-path", func(t *testing.T) {
		c := dialMX(t, addr)
		if err := c.Mail("", nil); err != nil {
			t.Fatalf("MAIL FROM:<>: %v", err)
		}
		if err := c.Rcpt(alice, nil); err != nil {
			t.Fatalf("RCPT: %v", err)
		}
		if err := sendData(c, testMessage("mailer-daemon@remote.example", alice, "bounce-1")); err != nil {
			t.Fatalf("DATA: %v", err)
		}
		msg := findMessage(t, f.inbox(alice, alicePW), "bounce-1")
		if !strings.HasPrefix(msg, "Return-Path: <>\r\n") {
			t.Errorf("bounce stored without empty Return-Path:\n%s", headerSection(msg))
		}
	})

	t.Run("SMTPUTF8", func(t *testing.T) {
		c := dialMX(t, addr)
		if err := c.Mail("jörg@remote.example", &gosmtp.MailOptions{UTF8: true}); err != nil {
			t.Fatalf("MAIL SMTPUTF8: %v", err)
		}
		if err := c.Rcpt(carol, nil); err != nil {
			t.Fatalf("RCPT: %v", err)
		}
		if err := sendData(c, testMessage("jörg@remote.example", carol, "utf8-1")); err != nil {
			t.Fatalf("DATA: %v", err)
		}
		msg := findMessage(t, f.inbox(carol, carolPW), "utf8-1")
		if !strings.HasPrefix(msg, "Return-Path: <jörg@remote.example>\r\n") {
			t.Errorf("Return-Path wrong:\n%s", headerSection(msg))
		}
		if r := fieldValue(msg, "Received"); !strings.Contains(r, " with UTF8SMTP id ") {
			t.Errorf("Received %q does not say UTF8SMTP", r)
		}
	})
}

// TestMXMessageChecks covers size limits, header parsing and line limits.
func TestMXMessageChecks(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.MaxMessageBytes = 4096
	cfg.MaxHeaderBytes = 1024
	addr, _ := f.start(cfg, false)

	header := "From: <" + remote + ">\r\nSubject: checks\r\n"
	tests := []struct {
		name     string
		msg      string
		code     int
		enhanced gosmtp.EnhancedCode
	}{
		{"too large", header + "\r\n" + strings.Repeat("0123456789abcde\r\n", 300), 552, gosmtp.EnhancedCode{5, 3, 4}},
		{"line without colon", "From: <" + remote + ">\r\nthis is not a header field\r\n\r\nbody\r\n", 554, gosmtp.EnhancedCode{5, 6, 0}},
		{"starts with continuation", " folded\r\nFrom: <" + remote + ">\r\n\r\nbody\r\n", 554, gosmtp.EnhancedCode{5, 6, 0}},
		{"bad field name", "Fr om: x\r\n\r\nbody\r\n", 554, gosmtp.EnhancedCode{5, 6, 0}},
		{"header section too large", header + strings.Repeat("X-Pad: 0123456789012345678901234567890123456789\r\n", 30) + "\r\nbody\r\n", 552, gosmtp.EnhancedCode{5, 3, 4}},
		{"line too long", header + "\r\n" + strings.Repeat("x", 2100) + "\r\n", 500, gosmtp.EnhancedCode{5, 5, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialMX(t, addr)
			if err := c.Mail(remote, nil); err != nil {
				t.Fatalf("MAIL: %v", err)
			}
			if err := c.Rcpt(alice, nil); err != nil {
				t.Fatalf("RCPT: %v", err)
			}
			err := sendData(c, tt.msg)
			wantCode(t, "DATA", err, tt.code, tt.enhanced)
		})
	}

	t.Run("SIZE parameter over the limit", func(t *testing.T) {
		for _, size := range []int64{4097, 5000} {
			c := dialMX(t, addr)
			err := c.Mail(remote, &gosmtp.MailOptions{Size: size})
			wantCode(t, "MAIL SIZE="+itoa(int(size)), err, 552, gosmtp.EnhancedCode{5, 3, 4})
		}
	})

	t.Run("one byte over the limit", func(t *testing.T) {
		body := header + "\r\n"
		for len(body) < 4097-100 {
			body += strings.Repeat("y", 98) + "\r\n"
		}
		body += strings.Repeat("z", 4097-len(body)-2) + "\r\n"
		c := dialMX(t, addr)
		if err := c.Mail(remote, nil); err != nil {
			t.Fatalf("MAIL: %v", err)
		}
		if err := c.Rcpt(alice, nil); err != nil {
			t.Fatalf("RCPT: %v", err)
		}
		wantCode(t, "DATA of MaxMessageBytes+1", sendData(c, body), 552, gosmtp.EnhancedCode{5, 3, 4})
	})

	// A message just under the limit over DATA (see
	// TestSizeLimit for the limit itself, over BDAT).
	t.Run("message just under the limit is accepted", func(t *testing.T) {
		body := header + "Subject: limit-ok\r\n\r\n"
		for len(body) < 4095-100 {
			body += strings.Repeat("y", 98) + "\r\n"
		}
		body += strings.Repeat("z", 4095-len(body)-2) + "\r\n"
		c := dialMX(t, addr)
		if err := c.Mail(remote, &gosmtp.MailOptions{Size: int64(len(body))}); err != nil {
			t.Fatalf("MAIL: %v", err)
		}
		if err := c.Rcpt(alice, nil); err != nil {
			t.Fatalf("RCPT: %v", err)
		}
		if err := sendData(c, body); err != nil {
			t.Fatalf("DATA of MaxMessageBytes-1: %v", err)
		}
	})

	// Only the message under the limit was stored.
	msgs := f.inbox(alice, alicePW)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "limit-ok") {
		t.Fatalf("INBOX holds %d messages, want only the accepted one", len(msgs))
	}
}

// TestMXBareLFIsNotEndOfData checks the SMTP smuggling defence: "\n.\n"
// does not end the data, so no second transaction can be smuggled in.
func TestMXBareLFIsNotEndOfData(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeMX), false)

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send("Subject: smuggle-1\r\n\r\nfirst\n.\nMAIL FROM:<evil@remote.example>\nRCPT TO:<" + bob + ">\nDATA\nSubject: smuggled\n\r\n.\r\n")
	r.expect(250)
	r.mustCmd(221, "QUIT")

	msg := f.onlyMessage(alice, alicePW)
	if !strings.Contains(msg, "evil@remote.example") {
		t.Errorf("the would-be smuggled commands are not part of the message")
	}
	if n := len(f.inbox(bob, bobPW)); n != 0 {
		t.Fatalf("smuggled message delivered to bob (%d messages)", n)
	}
}

// TestMXChunking sends messages with BDAT (RFC 3030).
func TestMXChunking(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.MaxMessageBytes = 2048
	addr, _ := f.start(cfg, false)

	t.Run("chunks are joined", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(250, "RCPT TO:<%s>", bob)
		chunks := []string{"Subject: bdat-1\r\nFrom: <" + remote + ">\r\n", "\r\nfirst chunk, ", "then the last one\r\n.\r\n"}
		for i, ch := range chunks {
			last := ""
			if i == len(chunks)-1 {
				last = " LAST"
			}
			r.send("BDAT " + itoa(len(ch)) + last + "\r\n" + ch)
			r.expect(250)
		}
		msg := f.onlyMessage(bob, bobPW)
		// BDAT data is not dot-stuffed: the ".\r\n" line is content.
		if !strings.HasSuffix(msg, "\r\nfirst chunk, then the last one\r\n.\r\n") {
			t.Errorf("chunks joined wrongly:\n%q", msg)
		}
		if !strings.Contains(fieldValue(msg, "Received"), " with ESMTP id ") {
			t.Errorf("Received header missing")
		}
	})

	t.Run("over the size limit", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(250, "RCPT TO:<%s>", carol)
		first := "Subject: bdat-2\r\n\r\n" + strings.Repeat("z", 1500)
		r.send("BDAT " + itoa(len(first)) + "\r\n" + first)
		r.expect(250)
		second := strings.Repeat("z", 1000)
		r.send("BDAT " + itoa(len(second)) + " LAST\r\n" + second)
		msg := r.expect(552)
		if !strings.HasPrefix(msg, "5.3.4") {
			t.Errorf("reply %q, want 5.3.4", msg)
		}
		// The connection stays usable.
		r.mustCmd(250, "NOOP")
		if n := len(f.inbox(carol, carolPW)); n != 0 {
			t.Fatalf("oversized BDAT message stored")
		}
	})

	t.Run("RSET abandons a transfer", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(250, "RCPT TO:<%s>", alice)
		r.send("BDAT 0\r\n")
		r.expect(250)
		r.send("BDAT 18\r\nSubject: abandoned")
		r.expect(250)
		r.mustCmd(250, "RSET")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(250, "RCPT TO:<%s>", alice)
		body := "Subject: bdat-after-rset\r\n\r\nok\r\n"
		r.send("BDAT " + itoa(len(body)) + " LAST\r\n" + body)
		r.expect(250)
		msg := f.onlyMessage(alice, alicePW)
		if strings.Contains(msg, "abandoned") || !strings.Contains(msg, "bdat-after-rset") {
			t.Errorf("wrong message stored:\n%s", msg)
		}
	})

	t.Run("malformed header", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO client.example")
		r.mustCmd(250, "MAIL FROM:<%s>", remote)
		r.mustCmd(250, "RCPT TO:<%s>", carol)
		body := "no colon on this line\r\n\r\nbody\r\n"
		r.send("BDAT " + itoa(len(body)) + " LAST\r\n" + body)
		msg := r.expect(554)
		if !strings.HasPrefix(msg, "5.6.0") {
			t.Errorf("reply %q, want 5.6.0", msg)
		}
	})
}

// TestMXCommandErrors checks replies to commands out of place.
func TestMXCommandErrors(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeMX), false)

	r := dialRaw(t, addr, nil)
	r.mustCmd(502, "MAIL FROM:<%s>", remote) // before EHLO
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(502, "RCPT TO:<%s>", alice) // before MAIL
	r.mustCmd(502, "DATA")
	// AUTH before TLS is refused on MX too.
	code, _ := r.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+alice+"\x00"+alicePW)))
	if code/100 != 5 {
		t.Fatalf("AUTH on plain-text MX: got %d, want 5xx", code)
	}
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RSET")
	r.mustCmd(502, "RCPT TO:<%s>", alice) // RSET ended the transaction
	r.mustCmd(221, "QUIT")
}

// findMessage returns the message containing marker.
func findMessage(t *testing.T, msgs []string, marker string) string {
	t.Helper()
	for _, m := range msgs {
		if strings.Contains(m, marker) {
			return m
		}
	}
	t.Fatalf("no message with %q among %d", marker, len(msgs))
	return ""
}

// fieldValue returns the raw value (folding kept) of the first header
// field name in msg.
func fieldValue(msg, name string) string {
	lines := strings.Split(headerSection(msg), "\r\n")
	for i, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(k, name) {
			continue
		}
		for _, cont := range lines[i+1:] {
			if cont == "" || (cont[0] != ' ' && cont[0] != '\t') {
				break
			}
			v += "\r\n" + cont
		}
		return strings.TrimSpace(v)
	}
	return ""
}

// unfold removes header folding.
func unfold(v string) string {
	return strings.Join(strings.Fields(v), " ")
}

func enhancedText(e gosmtp.EnhancedCode) string {
	return itoa(e[0]) + "." + itoa(e[1]) + "." + itoa(e[2])
}

func itoa(n int) string { return strconv.Itoa(n) }
