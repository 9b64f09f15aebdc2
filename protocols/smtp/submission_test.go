package smtp

import (
	"encoding/base64"
	netsmtp "net/smtp"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// TestSubmissionNetSMTP submits with the standard library's client over
// STARTTLS: AUTH PLAIN, then delivery to a local user, with Date and
// Message-ID added by the server.
func TestSubmissionNetSMTP(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeSubmission), false)

	c, err := netsmtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := c.Hello("laptop.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH advertised before TLS")
	}
	if err := c.StartTLS(f.clientTLS); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	ok, mechs := c.Extension("AUTH")
	if !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
		t.Fatalf("AUTH after TLS: %v %q, want PLAIN and LOGIN", ok, mechs)
	}
	if err := c.Auth(netsmtp.PlainAuth("", alice, alicePW, "127.0.0.1")); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	if err := c.Mail(alice); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(bob); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	// No Date and no Message-ID: the submission server adds them.
	if _, err := w.Write([]byte("From: Alice <" + alice + ">\r\nTo: <" + bob + ">\r\nSubject: netsmtp-1\r\n\r\nHello Bob.\r\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}

	msg := f.onlyMessage(bob, bobPW)
	received := unfold(fieldValue(msg, "Received"))
	// net/smtp adds SMTPUTF8 to MAIL whenever the server offers it, so the
	// protocol is UTF8SMTPSA (RFC 6531 section 3.7.3).
	for _, want := range []string{"from laptop.example ([127.0.0.1])", " with UTF8SMTPSA id ", "(version=TLS1.3 cipher=", "for <" + bob + ">"} {
		if !strings.Contains(received, want) {
			t.Errorf("Received %q lacks %q", received, want)
		}
	}
	if fieldValue(msg, "Date") == "" {
		t.Error("no Date added")
	}
	if id := fieldValue(msg, "Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@mx.example.test>") {
		t.Errorf("Message-ID %q not added as <...@mx.example.test>", id)
	}
	if !strings.HasSuffix(msg, "\r\n\r\nHello Bob.\r\n") {
		t.Errorf("body changed:\n%q", msg)
	}
}

// TestSubmissionImplicitTLS submits over implicit TLS (port 465) with AUTH
// LOGIN and keeps an existing Date and Message-ID.
func TestSubmissionImplicitTLS(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeSubmission), true)

	c, err := gosmtp.DialTLS(addr, f.clientTLS)
	if err != nil {
		t.Fatalf("dial TLS: %v", err)
	}
	defer c.Close()
	if err := c.Hello("laptop.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered on an implicit-TLS connection")
	}
	if !c.SupportsAuth("LOGIN") || !c.SupportsAuth("PLAIN") {
		t.Fatal("AUTH PLAIN/LOGIN not offered over implicit TLS")
	}
	if err := c.Auth(sasl.NewLoginClient(carol, carolPW)); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	// Case differences in the sender's address are allowed.
	if err := c.Mail("Carol@Example.Test", nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	for _, rcpt := range []string{alice, bob} {
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatalf("RCPT %s: %v", rcpt, err)
		}
	}
	if err := sendData(c, testMessage(carol, alice, "implicit-1")); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	for _, u := range []struct{ addr, pw string }{{alice, alicePW}, {bob, bobPW}} {
		msg := f.onlyMessage(u.addr, u.pw)
		if r := unfold(fieldValue(msg, "Received")); !strings.Contains(r, " with ESMTPSA id ") || !strings.Contains(r, "(version=TLS1.3 cipher=") {
			t.Errorf("Received %q lacks ESMTPSA and the TLS description", r)
		}
		if got := strings.Count(msg, "\r\nDate: ") + strings.Count(msg, "\r\nMessage-ID: "); got != 2 {
			t.Errorf("the message has %d Date/Message-ID fields, want the client's 2", got)
		}
	}
}

// TestSubmissionAuth covers the refusals around authentication.
func TestSubmissionAuth(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeSubmission), false)

	t.Run("AUTH refused before TLS", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		msg := r.mustCmd(250, "EHLO laptop.example")
		if strings.Contains(msg, "AUTH") {
			t.Fatalf("AUTH advertised before TLS: %q", msg)
		}
		msg = r.mustCmd(523, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+alice+"\x00"+alicePW)))
		if !strings.HasPrefix(msg, "5.7.10") {
			t.Errorf("reply %q, want 5.7.10", msg)
		}
		msg = r.mustCmd(530, "MAIL FROM:<%s>", alice)
		if !strings.HasPrefix(msg, "5.7.0") {
			t.Errorf("reply %q, want 5.7.0", msg)
		}
	})

	dialTLS := func(t *testing.T) *gosmtp.Client {
		t.Helper()
		c, err := gosmtp.DialStartTLS(addr, f.clientTLS)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("MAIL before AUTH", func(t *testing.T) {
		c := dialTLS(t)
		wantCode(t, "MAIL before AUTH", c.Mail(alice, nil), 530, gosmtp.EnhancedCode{5, 7, 0})
	})

	t.Run("bad password and unknown user look the same", func(t *testing.T) {
		var replies []string
		for _, creds := range [][2]string{{alice, "wrong-password"}, {"nobody@example.test", "wrong-password"}, {"nobody@elsewhere.example", alicePW}} {
			c := dialTLS(t)
			err := c.Auth(sasl.NewPlainClient("", creds[0], creds[1]))
			se := wantCode(t, "AUTH "+creds[0], err, 535, gosmtp.EnhancedCode{5, 7, 8})
			replies = append(replies, se.Message)
			// Still not authenticated.
			wantCode(t, "MAIL after failed AUTH", c.Mail(creds[0], nil), 530, gosmtp.EnhancedCode{5, 7, 0})
		}
		for _, r := range replies[1:] {
			if r != replies[0] {
				t.Errorf("replies differ: %q", replies)
			}
		}
	})

	t.Run("authorization identity of another user", func(t *testing.T) {
		c := dialTLS(t)
		err := c.Auth(sasl.NewPlainClient(bob, alice, alicePW))
		wantCode(t, "AUTH as another identity", err, 535, gosmtp.EnhancedCode{5, 7, 8})
	})

	t.Run("malformed PLAIN response", func(t *testing.T) {
		r := dialRaw(t, addr, nil)
		r.mustCmd(250, "EHLO laptop.example")
		r.mustCmd(220, "STARTTLS")
		r.startTLS(f.clientTLS)
		r.mustCmd(250, "EHLO laptop.example")
		msg := r.mustCmd(501, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("no-separators")))
		if !strings.HasPrefix(msg, "5.5.2") {
			t.Errorf("reply %q, want 5.5.2", msg)
		}
		r.mustCmd(504, "AUTH CRAM-MD5")
	})

	t.Run("sender and recipients", func(t *testing.T) {
		c := dialTLS(t)
		if err := c.Auth(sasl.NewPlainClient("", alice, alicePW)); err != nil {
			t.Fatalf("AUTH: %v", err)
		}
		err := c.Auth(sasl.NewPlainClient("", alice, alicePW))
		wantCode(t, "second AUTH", err, 503, gosmtp.EnhancedCode{5, 5, 1})

		se := wantCode(t, "foreign sender", c.Mail(bob, nil), 553, gosmtp.EnhancedCode{5, 7, 1})
		if !strings.Contains(se.Message, alice) {
			t.Errorf("reply %q does not name the allowed address", se.Message)
		}
		wantCode(t, "null sender", c.Mail("", nil), 553, gosmtp.EnhancedCode{5, 7, 1})

		if err := c.Mail("alice+lists@example.test", nil); err != nil {
			t.Fatalf("MAIL from a sub-address: %v", err)
		}
		se = wantCode(t, "remote recipient", c.Rcpt(remote, nil), 550, gosmtp.EnhancedCode{5, 7, 1})
		if !strings.Contains(se.Message, "remote domains is not available") {
			t.Errorf("remote recipient reply %q is not explicit", se.Message)
		}
		wantCode(t, "unknown local user", c.Rcpt("nobody@example.test", nil), 550, gosmtp.EnhancedCode{5, 1, 1})
		if err := c.Rcpt(carol, nil); err != nil {
			t.Fatalf("RCPT carol: %v", err)
		}
		if err := sendData(c, testMessage(alice, carol, "sub-rcpt-1")); err != nil {
			t.Fatalf("DATA: %v", err)
		}
		findMessage(t, f.inbox(carol, carolPW), "sub-rcpt-1")

		// RFC 6409 section 8.1: the From: field names the user too.
		if err := c.Mail(alice, nil); err != nil {
			t.Fatalf("MAIL: %v", err)
		}
		if err := c.Rcpt(carol, nil); err != nil {
			t.Fatalf("RCPT carol: %v", err)
		}
		wantCode(t, "foreign From field", sendData(c, testMessage(bob, carol, "sub-from-1")), 553, gosmtp.EnhancedCode{5, 7, 1})
	})
}

// TestSubmissionLockout checks that the auth guard throttles guessing and
// then refuses even the right password, with the reply of a wrong one.
func TestSubmissionLockout(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeSubmission)
	cfg.Guard = f.guard(3)
	addr, _ := f.start(cfg, true)

	// go-smtp's client answers a failed AUTH with "*", which the server
	// counts as a protocol error, so each attempt gets its own connection.
	auth := func(a sasl.Client) error {
		c, err := gosmtp.DialTLS(addr, f.clientTLS)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.Auth(a)
	}
	var wrong *gosmtp.SMTPError
	for i := 0; i < 3; i++ {
		wrong = wantCode(t, "bad password", auth(sasl.NewPlainClient("", bob, "wrong-password")), 535, gosmtp.EnhancedCode{5, 7, 8})
	}
	for _, a := range []sasl.Client{sasl.NewPlainClient("", bob, bobPW), sasl.NewLoginClient(bob, bobPW), sasl.NewPlainClient("", alice, alicePW)} {
		got := wantCode(t, "right password while locked out", auth(a), 535, gosmtp.EnhancedCode{5, 7, 8})
		if got.Message != wrong.Message {
			t.Errorf("locked out: %q, wrong password: %q", got.Message, wrong.Message)
		}
	}
}

// TestSubmissionInsecureAuth checks the test-only plain-text AUTH and the
// protocol name recorded without TLS.
func TestSubmissionInsecureAuth(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeSubmission)
	cfg.TLS = nil
	cfg.AllowInsecureAuth = true
	addr, _ := f.start(cfg, false)

	c := dialMX(t, addr)
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered without a TLS configuration")
	}
	if err := c.Auth(sasl.NewPlainClient("", bob, bobPW)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail(bob, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	if err := sendData(c, testMessage(bob, alice, "insecure-1")); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	r := unfold(fieldValue(f.onlyMessage(alice, alicePW), "Received"))
	if !strings.Contains(r, " with ESMTPA id ") || strings.Contains(r, "version=") {
		t.Errorf("Received %q, want ESMTPA without TLS", r)
	}
}
