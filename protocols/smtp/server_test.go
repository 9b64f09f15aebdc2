package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
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
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestNewServerConfig(t *testing.T) {
	f := newFixture(t)
	valid := f.config(ModeSubmission)
	tests := []struct {
		name   string
		change func(*Config)
		store  protocols.Store
		ok     bool
	}{
		{"valid submission", func(*Config) {}, f.env.Store, true},
		{"valid MX without TLS or guard", func(c *Config) { c.Mode, c.TLS, c.Guard = ModeMX, nil, nil }, f.env.Store, true},
		{"no mode", func(c *Config) { c.Mode = 0 }, f.env.Store, false},
		{"unknown mode", func(c *Config) { c.Mode = 7 }, f.env.Store, false},
		{"no hostname", func(c *Config) { c.Hostname = "" }, f.env.Store, false},
		{"submission without guard", func(c *Config) { c.Guard = nil }, f.env.Store, false},
		{"submission without TLS", func(c *Config) { c.TLS = nil }, f.env.Store, false},
		{"submission with insecure auth", func(c *Config) { c.TLS, c.AllowInsecureAuth = nil, true }, f.env.Store, true},
		{"no store", func(*Config) {}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.change(&cfg)
			srv, err := NewServer(cfg, tt.store)
			if (err == nil) != tt.ok {
				t.Fatalf("NewServer: %v, want ok=%v", err, tt.ok)
			}
			if srv != nil {
				if err := srv.Close(); err != nil {
					t.Fatalf("Close of an unused server: %v", err)
				}
			}
		})
	}
}

// TestServerClose checks that Close ends open connections (with and
// without a session), is idempotent, and that Serve then returns nil.
func TestServerClose(t *testing.T) {
	f := newFixture(t)
	srv, err := NewServer(f.config(ModeMX), f.env.Store)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	idle := dialRaw(t, ln.Addr().String(), nil) // greeted, no EHLO
	busy := dialRaw(t, ln.Addr().String(), nil)
	busy.mustCmd(250, "EHLO client.example")
	busy.mustCmd(250, "MAIL FROM:<%s>", remote)

	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after Close", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	for name, c := range map[string]*rawClient{"idle": idle, "busy": busy} {
		if _, err := io.ReadAll(c.conn); err != nil {
			t.Errorf("%s connection: read after Close: %v, want EOF", name, err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln2); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close: %v, want ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still accepts after Close")
	}
}

// TestDataTimeout checks that a client that stops in the middle of DATA
// is disconnected after the read timeout and nothing is stored.
func TestDataTimeout(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.ReadTimeout = 300 * time.Millisecond
	addr, _ := f.start(cfg, false)

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	r.mustCmd(354, "DATA")
	r.send("Subject: stalled\r\n\r\nfirst line\r\n")
	// Send nothing more: the server must give up on its own.
	rest, err := io.ReadAll(r.conn)
	if err != nil {
		t.Fatalf("waiting for the server to hang up: %v", err)
	}
	if !strings.HasPrefix(string(rest), "421 4.4.2 ") {
		t.Errorf("server said %q, want 421 4.4.2", rest)
	}
	if n := len(f.inbox(alice, alicePW)); n != 0 {
		t.Fatalf("stalled message stored (%d)", n)
	}

	// The idle timeout between commands applies too.
	r = dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	msg := r.expect(421)
	if !strings.HasPrefix(msg, "4.4.2") {
		t.Errorf("idle timeout reply %q", msg)
	}
}

// TestDataTimeoutOverBDAT checks the whole-transfer limit, which go-smtp
// does not enforce across BDAT chunks: with a 1ns DataTimeout the first
// chunk already exceeds it.
func TestDataTimeoutOverBDAT(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.DataTimeout = time.Nanosecond
	addr, _ := f.start(cfg, false)

	r := dialRaw(t, addr, nil)
	r.mustCmd(250, "EHLO client.example")
	r.mustCmd(250, "MAIL FROM:<%s>", remote)
	r.mustCmd(250, "RCPT TO:<%s>", alice)
	chunk := "Subject: slow\r\n\r\nbody\r\n"
	r.send("BDAT " + itoa(len(chunk)) + "\r\n" + chunk)
	rest, err := io.ReadAll(r.conn)
	if err != nil {
		t.Fatalf("waiting for the server to hang up: %v", err)
	}
	if !strings.HasPrefix(string(rest), "421 4.4.2 ") {
		t.Errorf("server said %q, want 421 4.4.2", rest)
	}
	if n := len(f.inbox(alice, alicePW)); n != 0 {
		t.Fatalf("message stored (%d)", n)
	}
	// go-smtp's connection goroutine can still be in its BDAT handler
	// after the hang-up, and go-smtp's Conn.Close (from Server.Close in the
	// cleanup) races with it. Let the session end first.
	deadline := time.Now().Add(10 * time.Second)
	for !f.logs.contains("session ended") {
		if time.Now().After(deadline) {
			t.Fatal("session did not end after the hang-up")
		}
		time.Sleep(time.Millisecond)
	}
}

// failingStore is the test store with Deliver replaced, to see how
// delivery failures are answered.
type failingStore struct {
	protocols.Store
	err error
}

func (s failingStore) Deliver(context.Context, schema.Delivery) error { return s.err }

// TestDeliveryFailures checks that a failed commit is never acknowledged:
// internal failures become 451 4.3.0 without their reason, which is only
// logged.
func TestDeliveryFailures(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name     string
		err      error
		code     int
		enhanced gosmtp.EnhancedCode
	}{
		{"store unavailable", fmt.Errorf("propose to shard 3: %w", schema.ErrUnavailable), 451, gosmtp.EnhancedCode{4, 3, 0}},
		{"deadline", fmt.Errorf("apply: %w", context.DeadlineExceeded), 451, gosmtp.EnhancedCode{4, 3, 0}},
		{"too large for the store", fmt.Errorf("append: %w", schema.ErrTooLarge), 552, gosmtp.EnhancedCode{5, 3, 4}},
		{"user deleted since RCPT", fmt.Errorf("deliver to recipient 1: %w", schema.ErrNoSuchUser), 550, gosmtp.EnhancedCode{5, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f.serve(f.config(ModeMX), failingStore{f.env.Store, tt.err}, ln)
			c := dialMX(t, ln.Addr().String())
			if err := c.Mail(remote, nil); err != nil {
				t.Fatalf("MAIL: %v", err)
			}
			if err := c.Rcpt(alice, nil); err != nil {
				t.Fatalf("RCPT: %v", err)
			}
			se := wantCode(t, "DATA", sendData(c, testMessage(remote, alice, "fail-1")), tt.code, tt.enhanced)
			if strings.Contains(se.Message, "shard") || strings.Contains(se.Message, "apply") || strings.Contains(se.Message, "recipient 1") {
				t.Errorf("reply %q leaks the internal reason", se.Message)
			}
			if !f.logs.contains(tt.err.Error()) {
				t.Errorf("reason %q not logged", tt.err)
			}
		})
	}
	if n := len(f.inbox(alice, alicePW)); n != 0 {
		t.Fatalf("%d messages stored although every delivery failed", n)
	}
}

// TestImplicitTLSBehindConnLimiter serves implicit TLS from a listener
// whose connections are *tls.Conn wrapped by protocols.ConnLimiter, and
// checks that a closed connection gives its slot back.
func TestImplicitTLSBehindConnLimiter(t *testing.T) {
	f := newFixture(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := inner.Addr().String()
	limiter := protocols.NewConnLimiter(1, 1)
	ln := limiter.Listener(tls.NewListener(inner, f.serverTLS), func(c net.Conn) {
		// The handshake must finish before the reply can be read.
		fmt.Fprintf(c, "421 4.7.0 Too many connections\r\n")
	})
	f.serve(f.config(ModeSubmission), f.env.Store, ln)

	send := func(c *gosmtp.Client, marker string) {
		t.Helper()
		if err := c.Auth(sasl.NewPlainClient("", alice, alicePW)); err != nil {
			t.Fatalf("AUTH: %v", err)
		}
		if err := c.Mail(alice, nil); err != nil {
			t.Fatalf("MAIL: %v", err)
		}
		if err := c.Rcpt(bob, nil); err != nil {
			t.Fatalf("RCPT: %v", err)
		}
		if err := sendData(c, testMessage(alice, bob, marker)); err != nil {
			t.Fatalf("DATA: %v", err)
		}
	}

	first, err := gosmtp.DialTLS(addr, f.clientTLS)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	send(first, "limited-1")

	// The only slot is taken: a second client is turned away.
	conn, err := tls.Dial("tcp", addr, f.clientTLS)
	if err != nil {
		t.Fatalf("second dial: %v", err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.HasPrefix(line, "421 ") {
		t.Fatalf("second connection got %q, want 421", line)
	}

	if err := first.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	// The server closes the first connection after QUIT; poll until its
	// slot is free.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := gosmtp.DialTLS(addr, f.clientTLS)
		if err == nil {
			if err = c.Hello("client.example"); err == nil {
				send(c, "limited-2")
				c.Quit()
				break
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released after QUIT: %v", err)
		}
	}
	for _, marker := range []string{"limited-1", "limited-2"} {
		msg := findMessage(t, f.inbox(bob, bobPW), marker)
		if !strings.Contains(unfold(fieldValue(msg, "Received")), "with ESMTPSA id") {
			t.Errorf("message %s not received over TLS", marker)
		}
	}
}
