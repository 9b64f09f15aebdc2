package smtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Users of the test store.
const (
	alice   = "alice@example.test"
	alicePW = "alice-secret-pw-1"
	bob     = "bob@example.test"
	bobPW   = "bob-secret-pw-22"
	carol   = "carol@example.test"
	carolPW = "carol-secret-pw-333"
	remote  = "someone@remote.example"
)

// fixture is an in-memory store with three users, TLS configurations and
// a log buffer shared by the servers of one test.
type fixture struct {
	t         testing.TB
	env       *protocoltest.Env
	serverTLS *tls.Config
	clientTLS *tls.Config
	logs      *logBuffer // everything, debug level included
	infoLogs  *logBuffer // info level and above
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	env := protocoltest.NewStore(t)
	env.AddUser(t, alice, alicePW)
	env.AddUser(t, bob, bobPW)
	env.AddUser(t, carol, carolPW)
	srvTLS, cliTLS := protocoltest.TLS(t)
	f := &fixture{t: t, env: env, serverTLS: srvTLS, clientTLS: cliTLS, logs: &logBuffer{}, infoLogs: &logBuffer{}}
	t.Cleanup(func() {
		// Message content never reaches the logs (every test message has
		// a Subject field).
		if f.logs.contains("Subject:") {
			t.Errorf("logs contain message content")
		}
		// Addresses appear only at debug level.
		for _, domain := range []string{"@example.test", "@remote.example", "@elsewhere.example"} {
			if f.infoLogs.contains(domain) {
				t.Errorf("info-level logs contain an address (%s):\n%s", domain, f.infoLogs)
			}
		}
		// Whatever a test did, credentials never reach the logs.
		for _, secret := range []string{alicePW, bobPW, carolPW, "wrong-password"} {
			if f.logs.contains(secret) {
				t.Errorf("logs contain a password")
			}
		}
	})
	return f
}

// guard returns an auth guard without failure delay.
func (f *fixture) guard(maxPerIP int) *protocols.AuthGuard {
	cfg := protocols.DefaultAuthGuardConfig()
	cfg.FailureDelay = 0
	if maxPerIP > 0 {
		cfg.MaxFailuresPerIP = maxPerIP
	}
	return protocols.NewAuthGuard(cfg, nil)
}

// config returns a configuration for mode with TLS and a fresh guard.
func (f *fixture) config(mode Mode) Config {
	return Config{
		Mode:     mode,
		Hostname: "mx.example.test",
		TLS:      f.serverTLS,
		Guard:    f.guard(0),
		Logger: slog.New(slog.NewMultiHandler(
			slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
			slog.NewTextHandler(f.infoLogs, &slog.HandlerOptions{Level: slog.LevelInfo}),
		)),
	}
}

// start runs a server for cfg on a loopback port (wrapped in TLS when
// implicitTLS) and returns its address. t.Cleanup closes it and checks
// that Serve returned nil.
func (f *fixture) start(cfg Config, implicitTLS bool) (string, *Server) {
	f.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if implicitTLS {
		ln = tls.NewListener(ln, f.serverTLS)
	}
	return addr, f.serve(cfg, f.env.Store, ln)
}

// serve runs a server for cfg and store on ln until the test ends.
func (f *fixture) serve(cfg Config, store protocols.Store, ln net.Listener) *Server {
	f.t.Helper()
	srv, err := NewServer(cfg, store)
	if err != nil {
		ln.Close()
		f.t.Fatalf("NewServer: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	f.t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			f.t.Errorf("Close: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				f.t.Errorf("Serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			f.t.Errorf("Serve did not return after Close")
		}
	})
	return srv
}

// inbox returns the bodies of the messages in user's INBOX.
func (f *fixture) inbox(user, password string) []string {
	f.t.Helper()
	ctx := context.Background()
	acct := f.env.Login(f.t, user, password)
	mb, err := acct.Mailbox(ctx, schema.InboxName)
	if err != nil {
		f.t.Fatalf("mailbox INBOX of %s: %v", user, err)
	}
	snap, err := acct.Snapshot(ctx, mb.ID)
	if err != nil {
		f.t.Fatalf("snapshot INBOX of %s: %v", user, err)
	}
	var bodies []string
	for _, m := range snap.Messages {
		b, err := acct.Body(ctx, m.Blob)
		if err != nil {
			f.t.Fatalf("body of %s UID %d: %v", user, m.UID, err)
		}
		if uint64(len(b)) != m.Size {
			f.t.Errorf("message size %d, MessageInfo.Size %d", len(b), m.Size)
		}
		bodies = append(bodies, string(b))
	}
	return bodies
}

// onlyMessage returns the single message in user's INBOX.
func (f *fixture) onlyMessage(user, password string) string {
	f.t.Helper()
	msgs := f.inbox(user, password)
	if len(msgs) != 1 {
		f.t.Fatalf("INBOX of %s has %d messages, want 1", user, len(msgs))
	}
	return msgs[0]
}

// dialMX connects a go-smtp client in plain text and says EHLO.
func dialMX(t *testing.T, addr string) *gosmtp.Client {
	t.Helper()
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// sendData sends one message on an open transaction and returns the
// reply's error.
func sendData(c *gosmtp.Client, msg string) error {
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

// wantCode checks that err is an SMTP reply with the given codes.
func wantCode(t *testing.T, what string, err error, code int, enhanced gosmtp.EnhancedCode) *gosmtp.SMTPError {
	t.Helper()
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("%s: got %v, want SMTP %d", what, err, code)
	}
	if se.Code != code || se.EnhancedCode != enhanced {
		t.Fatalf("%s: got %d %v %q, want %d %v", what, se.Code, se.EnhancedCode, se.Message, code, enhanced)
	}
	return se
}

// testMessage returns a small well-formed message with a marker.
func testMessage(from, to, marker string) string {
	return "From: <" + from + ">\r\n" +
		"To: <" + to + ">\r\n" +
		"Subject: test " + marker + "\r\n" +
		"Date: Mon, 02 Jan 2026 15:04:05 +0000\r\n" +
		"Message-ID: <" + marker + "@client.example>\r\n" +
		"\r\n" +
		"Body " + marker + "\r\n"
}

// headerSection returns the header section of a stored message.
func headerSection(msg string) string {
	if i := strings.Index(msg, "\r\n\r\n"); i >= 0 {
		return msg[:i+2]
	}
	return msg
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Reset drops what was collected so far.
func (b *logBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func (b *logBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf.Bytes(), []byte(s))
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
