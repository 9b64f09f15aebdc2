package smtp

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestObserverMX drives an MX server through STARTTLS, refused and
// accepted recipients, a message over DATA, one over BDAT, one too large
// and one the store cannot take, and checks the commands and deliveries
// its observers hear, by name, outcome, result and reason class.
func TestObserverMX(t *testing.T) {
	f := newFixture(t)
	rec := protocoltest.NewRecorder()
	cfg := f.config(ModeMX)
	cfg.MaxMessageBytes = 2048
	cfg.Observer, cfg.Deliveries = rec, rec
	addr, _ := f.start(cfg, false)

	c, err := gosmtp.DialStartTLS(addr, f.clientTLS)
	if err != nil {
		t.Fatalf("dial with STARTTLS: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Mail(remote, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	wantCode(t, "RCPT to nobody", c.Rcpt("nobody@example.test", nil), 550, gosmtp.EnhancedCode{5, 1, 1})
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	if err := sendData(c, testMessage(remote, alice, "observed-1")); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	sendTooLarge(t, c, "observed-2")
	c.Quit()

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", bob)
	body := "Subject: observed-3\r\nFrom: <" + remote + ">\r\n\r\nbody\r\n"
	r.send("BDAT " + itoa(len(body)) + " LAST\r\n" + body)
	r.expect(250)
	r.mustCmd(221, "QUIT")

	// A STARTTLS whose handshake the client gives up: it does not trust
	// the certificate.
	r = dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(220, "STARTTLS")
	if err := tls.Client(r.conn, &tls.Config{ServerName: "mx.example.test"}).Handshake(); err == nil {
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
	r.conn.Close()

	// A store that cannot take the message.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.serve(cfg, failingStore{f.env.Store, fmt.Errorf("propose: %w", schema.ErrUnavailable)}, ln)
	c = dialMX(t, ln.Addr().String())
	if err := c.Mail(remote, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	wantCode(t, "DATA to a failing store", sendData(c, testMessage(remote, alice, "observed-4")), 451, gosmtp.EnhancedCode{4, 3, 0})
	c.Quit()

	protocoltest.WaitFor(t, protocoltest.WantCounts("commands", rec.Commands, map[string]int{
		"STARTTLS ok": 1, "STARTTLS error": 1,
		"MAIL ok": 4, "RCPT ok": 4, "RCPT error": 1,
		"DATA ok": 1, "DATA error": 2, "BDAT ok": 1,
	}, true))
	protocoltest.WaitFor(t, protocoltest.WantCounts("deliveries", rec.Deliveries, map[string]int{
		"accepted/none": 2, "permanent/system": 1, "temporary/system": 1,
	}, true))
	if rec.Duration("DATA") <= 0 || rec.Duration("STARTTLS") <= 0 {
		t.Errorf("DATA took %s, STARTTLS %s: not timed", rec.Duration("DATA"), rec.Duration("STARTTLS"))
	}
}

// TestObserverAuth checks that every AUTH on submission is reported once
// with its outcome, a refused one, an accepted one, and one the client
// abandons, and that the guard reports the logins by result.
func TestObserverAuth(t *testing.T) {
	f := newFixture(t)
	rec := protocoltest.NewRecorder()
	cfg := f.config(ModeSubmission)
	gcfg := protocols.DefaultAuthGuardConfig()
	gcfg.FailureDelay, gcfg.Observer = 0, rec
	cfg.Guard = protocols.NewAuthGuard(gcfg, nil)
	cfg.Observer, cfg.Deliveries = rec, rec
	addr, _ := f.start(cfg, false)

	c, err := gosmtp.DialStartTLS(addr, f.clientTLS)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	wantCode(t, "AUTH with a wrong password", c.Auth(sasl.NewPlainClient("", alice, "wrong-password")), 535, gosmtp.EnhancedCode{5, 7, 8})
	if err := c.Auth(sasl.NewPlainClient("", alice, alicePW)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail(alice, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	if err := sendData(c, testMessage(alice, bob, "submitted-1")); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	c.Quit()

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(220, "STARTTLS")
	r.startTLS(f.clientTLS)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(334, "AUTH LOGIN")
	r.mustCmd(501, "*")
	r.mustCmd(221, "QUIT")

	protocoltest.WaitFor(t, protocoltest.WantCounts("commands", rec.Commands, map[string]int{
		"STARTTLS ok": 2, "AUTH error": 2, "AUTH ok": 1, "MAIL ok": 1, "RCPT ok": 1, "DATA ok": 1,
	}, true))
	protocoltest.WaitFor(t, protocoltest.WantCounts("logins", rec.Logins, map[string]int{"smtp/ok": 1, "smtp/credentials": 1}, true))
	protocoltest.WaitFor(t, protocoltest.WantCounts("deliveries", rec.Deliveries, map[string]int{"accepted/none": 1}, true))
	if d := rec.Duration("AUTH"); d <= 0 || d > time.Minute {
		t.Errorf("AUTH took %s in all", d)
	}
}

// sendTooLarge sends alice a message over the fixture's 2048-byte limit
// and expects the size refusal.
func sendTooLarge(t *testing.T, c *gosmtp.Client, subject string) {
	t.Helper()
	if err := c.Mail(remote, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	big := testMessage(remote, alice, subject) + strings.Repeat("long line of the body\r\n", 200)
	wantCode(t, "DATA too large", sendData(c, big), 552, gosmtp.EnhancedCode{5, 3, 4})
}

// TestObserverLateDataRefusal delays the goroutine go-smtp runs Data on
// for a DATA handed on as BDAT until the over-large message was refused
// and its transaction reset, as a loaded machine may: the delivery is
// still reported as the client heard it (5.3.4, a system refusal), not
// as a transaction without recipients.
func TestObserverLateDataRefusal(t *testing.T) {
	f := newFixture(t)
	rec := protocoltest.NewRecorder()
	cfg := f.config(ModeMX)
	cfg.MaxMessageBytes = 2048
	cfg.Observer, cfg.Deliveries = rec, rec
	addr, _ := f.start(cfg, false)

	release := make(chan struct{})
	started := make(chan struct{}, 1)
	testHookDataStart = func() {
		started <- struct{}{}
		<-release
	}
	t.Cleanup(func() { testHookDataStart = nil })
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock)

	c := dialMX(t, addr)
	sendTooLarge(t, c, "late")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("Data did not start")
	}
	unblock()
	protocoltest.WaitFor(t, protocoltest.WantCounts("deliveries", rec.Deliveries, map[string]int{
		"permanent/system": 1,
	}, true))
	if err := c.Noop(); err != nil {
		t.Fatalf("NOOP after the refusal: %v", err)
	}
}
