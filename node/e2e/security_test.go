package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
)

// close closes a raw connection before the test ends (the connection
// limit counts open ones).
func (c *rawConn) close() { c.conn.Close() }

// Limits of the node TestSecurityAndLimits starts.
const (
	limitMessageSize = 64 << 10
	limitRecipients  = 5
	limitConnsPerIP  = 6
)

// TestSecurityAndLimits runs against a node of its own that logs at
// debug level and has small limits: identical answers to failed logins,
// no password in the log, TLS 1.2 minimum, message size, recipient,
// command length and connection limits with clear errors, and the node
// serving on after each.
func TestSecurityAndLimits(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{logLevel: "debug", maxMessageSize: "64KiB", maxRecipients: limitRecipients, maxConnsPerIP: limitConnsPerIP})
	if err := n.addDomain(testDomain); err != nil {
		t.Fatal(err)
	}
	password := "sec-" + randomHex(10)
	const user = "secure@" + testDomain
	n.addUser(t, user, password)

	t.Run("FailedLoginsIdentical", func(t *testing.T) { testFailedLoginsIdentical(t, n, user) })
	t.Run("PasswordNeverLogged", func(t *testing.T) { testPasswordNeverLogged(t, n, user, password) })
	t.Run("TLSVersions", func(t *testing.T) { testTLSVersions(t, n) })
	t.Run("MessageSize", func(t *testing.T) { testMessageSize(t, n, user, password) })
	t.Run("Recipients", func(t *testing.T) { testRecipients(t, n, user) })
	t.Run("LongCommands", func(t *testing.T) { testLongCommands(t, n) })
	t.Run("Connections", func(t *testing.T) { testConnections(t, n) })
}

// testFailedLoginsIdentical: an unknown user, a user of an unknown
// domain and a wrong password get byte-identical answers over IMAP
// (LOGIN and AUTHENTICATE), POP3 and SMTP submission.
func testFailedLoginsIdentical(t *testing.T, n *node, user string) {
	attempts := []string{"nobody@" + testDomain, "someone@unknown-domain.example", user}
	answers := func(name, failure string, try func(login string) string) {
		t.Helper()
		var got []string
		for _, login := range attempts {
			got = append(got, try(login))
		}
		for i := 1; i < len(got); i++ {
			if got[i] != got[0] {
				t.Errorf("%s: %s answered %q, %s answered %q", name, attempts[0], got[0], attempts[i], got[i])
			}
		}
		if lines := strings.Split(got[0], "\n"); !strings.HasPrefix(lines[len(lines)-1], failure) {
			t.Errorf("%s: a failed login answered %q, want %s", name, got[0], failure)
		}
	}
	answers("IMAP LOGIN", "a1 NO [AUTHENTICATIONFAILED]", func(login string) string {
		rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
		defer rc.close()
		rc.line()
		rc.send("a1 LOGIN " + login + " wrong-password")
		return strings.Join(rc.imapTagged("a1"), "\n")
	})
	answers("IMAP AUTHENTICATE PLAIN", "a1 NO [AUTHENTICATIONFAILED]", func(login string) string {
		rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
		defer rc.close()
		rc.line()
		rc.send("a1 AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+login+"\x00wrong-password")))
		return strings.Join(rc.imapTagged("a1"), "\n")
	})
	answers("POP3 USER/PASS", "-ERR", func(login string) string {
		rc := dialRaw(t, n.addr("pop3s"), n.clientTLS)
		defer rc.close()
		rc.line()
		rc.send("USER " + login)
		u := rc.line()
		rc.send("PASS wrong-password")
		return u + "\n" + rc.line()
	})
	answers("SMTP AUTH PLAIN", "535", func(login string) string {
		rc := dialRaw(t, n.addr("submissions"), n.clientTLS)
		defer rc.close()
		rc.smtpReply()
		rc.send("EHLO client.e2e.test")
		rc.smtpReply()
		rc.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+login+"\x00wrong-password")))
		return strings.Join(rc.smtpReply(), "\n")
	})
}

// testPasswordNeverLogged logs in successfully and unsuccessfully over
// every protocol and mechanism, then scans the debug-level log for the
// password in any form.
func testPasswordNeverLogged(t *testing.T, n *node, user, password string) {
	wrong := "not-" + password
	c := imapDialTLS(t, n, user, password, nil)
	c.Logout()
	c.Close()
	c = imapDialStartTLS(t, n, user, password, nil)
	c.Logout()
	c.Close()
	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	rc.send("a LOGIN " + user + " " + wrong)
	rc.imapTagged("a")
	rc.close()

	for _, pw := range []string{password, wrong} {
		pop3Run(t, n, "implicit", step("user", user), step("pass", pw), step("quit"))
		pop3Run(t, n, "stls", step("stls"), step("auth_plain", user, pw), step("quit"))
	}
	for _, auth := range []sasl.Client{sasl.NewPlainClient("", user, password), sasl.NewLoginClient(user, password), sasl.NewLoginClient(user, wrong)} {
		sc, err := gosmtp.DialTLS(n.addr("submissions"), n.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		_ = sc.Auth(auth)
		sc.Close()
	}
	// The password also travelled to the admin socket (user add, and a
	// password change here).
	if _, err := n.cli(password+"\n", "user", "passwd", user); err != nil {
		t.Fatal(err)
	}

	log := n.logBytes(t)
	if !bytes.Contains(log, []byte(`"level":"DEBUG"`)) {
		t.Fatal("the node is not logging at debug level; the check would prove little")
	}
	for _, f := range append(secretForms("password", password), secretForms("wrong password", wrong)...) {
		hay := log
		if f.fold {
			hay = bytes.ToLower(log)
		}
		if i := bytes.Index(hay, f.pattern); i >= 0 {
			t.Errorf("%s in the node log at offset %d: %q", f.name, i, log[max(0, i-200):i])
		}
	}
}

// testTLSVersions: TLS 1.1 is refused and TLS 1.2 accepted on every
// implicit-TLS port, and on STARTTLS.
func testTLSVersions(t *testing.T, n *node) {
	for _, listener := range []string{"imaps", "pop3s", "submissions"} {
		old := n.clientTLS.Clone()
		old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", n.addr(listener), old)
		if err == nil {
			conn.Close()
			t.Errorf("%s accepted TLS 1.1", listener)
		}
		v12 := n.clientTLS.Clone()
		v12.MaxVersion = tls.VersionTLS12
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", n.addr(listener), v12)
		if err != nil {
			t.Errorf("%s refused TLS 1.2: %v", listener, err)
			continue
		}
		if v := conn.ConnectionState().Version; v != tls.VersionTLS12 {
			t.Errorf("%s negotiated %x, want TLS 1.2", listener, v)
		}
		conn.Close()
	}
	c, err := netSMTPDial(n, "smtp")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	old := n.clientTLS.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if err := c.StartTLS(old); err == nil {
		t.Error("SMTP STARTTLS accepted TLS 1.1")
	}
}

// testMessageSize: over max_message_size, SMTP answers 552 (to MAIL with
// SIZE, and at the end of DATA) and IMAP APPEND answers NO [TOOBIG];
// sessions go on and a message within the limit is accepted. (APPEND
// takes the limit plus the trace headers delivery adds; the big message
// is over both.)
func testMessageSize(t *testing.T, n *node, user, password string) {
	big := mailSpec{From: "x@remote.example", To: user, Subject: "too big", MessageID: uniqueID("big"),
		Text: strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", (limitMessageSize+protocols.TraceHeadroom)/64+100)}.build()
	small := simpleMessage("x@remote.example", user, "fits", "small")

	c, err := netSMTPDial(n, "smtp")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, size := c.Extension("SIZE"); !ok || size == "" {
		t.Errorf("EHLO SIZE %v %q", ok, size)
	}
	if err := netSMTPTransaction(c, "x@remote.example", []string{user}, big); smtpCode(err) != 552 {
		t.Errorf("DATA over the size limit: %v, want 552", err)
	}
	if err := netSMTPTransaction(c, "x@remote.example", []string{user}, small); err != nil {
		t.Errorf("small message after a 552 on the same connection: %v", err)
	}
	c.Quit()

	gc, err := gosmtp.Dial(n.addr("smtp"))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	if err := gc.Mail("x@remote.example", &gosmtp.MailOptions{Size: int64(len(big))}); smtpCode(err) != 552 {
		t.Errorf("MAIL FROM SIZE=%d: %v, want 552", len(big), err)
	}

	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	defer rc.close()
	rc.line()
	rc.send("a LOGIN " + user + " " + password)
	if r := rc.imapTagged("a"); !strings.HasPrefix(r[len(r)-1], "a OK") {
		t.Fatalf("LOGIN: %q", r)
	}
	rc.send(fmt.Sprintf("b APPEND INBOX {%d}", len(big)))
	if r := rc.imapTagged("b"); !strings.HasPrefix(r[len(r)-1], "b NO [TOOBIG]") {
		t.Errorf("APPEND over the limit: %q, want NO [TOOBIG]", r)
	}
	rc.send(fmt.Sprintf("c APPEND INBOX {%d}", len(small)))
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("APPEND within the limit: %q, want a continuation", l)
	}
	if _, err := rc.conn.Write(append(small, "\r\n"...)); err != nil {
		t.Fatal(err)
	}
	if r := rc.imapTagged("c"); !strings.HasPrefix(r[len(r)-1], "c OK") {
		t.Errorf("APPEND within the limit: %q", r)
	}
}

// testRecipients: the recipient after max_recipients gets 452, and the
// message still goes to the accepted ones.
func testRecipients(t *testing.T, n *node, user string) {
	c, err := netSMTPDial(n, "smtp")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rcpts []string
	for i := 0; i < limitRecipients; i++ {
		r := fmt.Sprintf("rcpt%d@%s", i, testDomain)
		n.addUser(t, r, "recipient-password")
		rcpts = append(rcpts, r)
	}
	if err := c.Mail("x@remote.example"); err != nil {
		t.Fatal(err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	if err := c.Rcpt(user); smtpCode(err) != 452 {
		t.Errorf("recipient %d: %v, want 452", limitRecipients+1, err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(simpleMessage("x@remote.example", rcpts[0], "to many", "hello"))
	if err := w.Close(); err != nil {
		t.Fatalf("DATA to %d recipients: %v", limitRecipients, err)
	}
	c.Quit()
	s := pop3Run(t, n, "implicit", step("user", rcpts[limitRecipients-1]), step("pass", "recipient-password"), step("stat"), step("quit")).mustOK(t)
	if s.Results[2].Count != 1 {
		t.Errorf("last accepted recipient has %d messages, want 1", s.Results[2].Count)
	}
}

// testLongCommands: an overlong command line gets an error (or the
// connection is closed after one) on SMTP, IMAP and POP3, and each
// frontend still serves a new connection.
func testLongCommands(t *testing.T, n *node) {
	long := strings.Repeat("x", 64<<10)

	rc := dialRaw(t, n.addr("smtp"), nil)
	rc.smtpReply()
	rc.send("NOOP " + long[:3000])
	if r := rc.smtpReply(); !strings.HasPrefix(r[0], "500") {
		t.Errorf("SMTP overlong line: %q, want 500", r)
	}
	rc.close()

	// IMAP: a command past the library's 50 KiB limit. The server may
	// stop reading once the limit is passed; a failed write is part of
	// that answer.
	rc = dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	_, _ = io.WriteString(rc.conn, "a LOGIN "+long+" password\r\n")
	got, err := rc.r.ReadString('\n')
	if err == nil && !strings.HasPrefix(got, "a BAD") && !strings.HasPrefix(got, "a NO") && !strings.HasPrefix(got, "* BYE") {
		t.Errorf("IMAP overlong command: %q, want BAD, NO, BYE or a closed connection", got)
	}
	t.Logf("IMAP answer to a %d-byte command: %q (%v)", len(long), got, err)
	rc.close()

	rc = dialRaw(t, n.addr("pop3s"), n.clientTLS)
	rc.line()
	rc.send("USER " + long[:1000])
	if l := rc.line(); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("POP3 overlong line: %q, want -ERR", l)
	}
	rc.send("NOOP")
	if l, err := rc.r.ReadString('\n'); err == nil && !strings.HasPrefix(l, "-ERR") {
		t.Errorf("POP3 NOOP in the AUTHORIZATION state after an overlong line: %q", l)
	}
	rc.close()

	// Every frontend still serves.
	sc, err := netSMTPDial(n, "smtp")
	if err != nil {
		t.Fatalf("SMTP after overlong lines: %v", err)
	}
	sc.Quit()
	rc = dialRaw(t, n.addr("imaps"), n.clientTLS)
	if l := rc.line(); !strings.HasPrefix(l, "* OK") {
		t.Errorf("IMAP greeting after overlong lines: %q", l)
	}
	rc.close()
	rc = dialRaw(t, n.addr("pop3s"), n.clientTLS)
	if l := rc.line(); !strings.HasPrefix(l, "+OK") {
		t.Errorf("POP3 greeting after overlong lines: %q", l)
	}
	rc.close()
}

// testConnections: with max_connections_per_ip open connections from
// one address, the next one gets each protocol's "busy" answer; once
// they close, connections are served again.
func testConnections(t *testing.T, n *node) {
	var open []*rawConn
	// Connections of earlier steps may still be counted until the node
	// sees them close: fill up to the limit, polling.
	waitFor(t, 20*time.Second, "room for connections", func() error {
		for len(open) < limitConnsPerIP {
			rc := dialRaw(t, n.addr("smtp"), nil)
			if l := rc.smtpReply(); !strings.HasPrefix(l[0], "220") {
				rc.close()
				return fmt.Errorf("connection %d: %q", len(open)+1, l)
			}
			open = append(open, rc)
		}
		return nil
	})
	rc := dialRaw(t, n.addr("smtp"), nil)
	if l := rc.smtpReply(); !strings.HasPrefix(l[0], "421") {
		t.Errorf("SMTP connection over the limit: %q, want 421", l)
	}
	rc.close()
	rc = dialRaw(t, n.addr("imaps"), n.clientTLS)
	if l := rc.line(); !strings.HasPrefix(l, "* BYE") {
		t.Errorf("IMAPS connection over the limit: %q, want * BYE", l)
	}
	rc.close()
	rc = dialRaw(t, n.addr("pop3"), nil)
	if l := rc.line(); !strings.HasPrefix(l, "-ERR") {
		t.Errorf("POP3 connection over the limit: %q, want -ERR", l)
	}
	rc.close()
	for _, c := range open {
		c.close()
	}
	waitFor(t, 20*time.Second, "connections served again", func() error {
		c, err := imapDialTLSErr(n)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

// imapDialTLSErr connects to IMAPS and reads the greeting.
func imapDialTLSErr(n *node) (net.Conn, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", n.addr("imaps"), n.clientTLS)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		conn.Close()
		return nil, err
	}
	if string(buf) != "* OK" {
		conn.Close()
		return nil, errors.New("greeting " + string(buf))
	}
	return conn, nil
}
