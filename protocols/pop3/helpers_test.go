package pop3

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	testUser     = "alice@example.org"
	testPassword = "correct horse battery"
)

// testEnv is a running POP3 server on loopback over an in-memory store.
type testEnv struct {
	store     *protocoltest.Env
	srv       *Server
	addr      string
	clientTLS *tls.Config
	serveErr  chan error
}

type envOption func(*Config)

// withTLS turns STLS on, and plaintext auth before TLS off.
func withTLS(cfg *Config) { cfg.AllowInsecureAuth = false }

// withoutTLS runs a server with no TLS at all.
func withoutTLS(cfg *Config) { cfg.TLS = nil }

// newEnv starts a server with one user whose INBOX holds msgs. By default
// TLS is configured and AllowInsecureAuth is set.
func newEnv(t *testing.T, msgs []string, opts ...envOption) *testEnv {
	t.Helper()
	store := protocoltest.NewStore(t)
	store.AddUser(t, testUser, testPassword)
	appendMessages(t, store, testUser, testPassword, msgs)
	return startServer(t, store, opts...)
}

func startServer(t *testing.T, store *protocoltest.Env, opts ...envOption) *testEnv {
	t.Helper()
	serverTLS, clientTLS := protocoltest.TLS(t)
	cfg := Config{
		Hostname:          "pop.example.org",
		TLS:               serverTLS,
		Guard:             protocols.NewAuthGuard(protocols.AuthGuardConfig{MaxFailuresPerIP: 1000, MaxFailuresPerUser: 1000, Window: time.Minute, Lockout: time.Minute}, nil),
		Logger:            testLogger(t),
		AllowInsecureAuth: true,
		IdleTimeout:       time.Minute,
		WriteTimeout:      10 * time.Second,
		HandshakeTimeout:  10 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := NewServer(cfg, store.Store)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	e := &testEnv{store: store, srv: srv, addr: ln.Addr().String(), clientTLS: clientTLS, serveErr: make(chan error, 1)}
	go func() { e.serveErr <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-e.serveErr; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return e
}

// testLogger logs to the test log when POP3_TEST_LOG is set.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("POP3_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// appendMessages puts msgs into the user's INBOX in order.
func appendMessages(t *testing.T, store *protocoltest.Env, user, password string, msgs []string) {
	t.Helper()
	if len(msgs) == 0 {
		return
	}
	acct := store.Login(t, user, password)
	ctx := context.Background()
	inbox, err := acct.Mailbox(ctx, schema.InboxName)
	if err != nil {
		t.Fatalf("inbox: %v", err)
	}
	for i, m := range msgs {
		if _, err := acct.Append(ctx, inbox.ID, []byte(m), nil, time.Now()); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// inbox returns the user's INBOX as the store sees it now.
func (e *testEnv) inbox(t *testing.T) schema.MailboxSnapshot {
	t.Helper()
	acct := e.store.Login(t, testUser, testPassword)
	ctx := context.Background()
	mbox, err := acct.Mailbox(ctx, schema.InboxName)
	if err != nil {
		t.Fatalf("inbox: %v", err)
	}
	snap, err := acct.Snapshot(ctx, mbox.ID)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return snap
}

// client is a minimal POP3 client for tests: it sends raw lines and reads
// replies with net/textproto, whose dot reader undoes dot-stuffing
// independently of the server's code.
type client struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func (e *testEnv) dial(t *testing.T) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := newClient(t, conn)
	c.expectOK("")
	return c
}

func newClient(t *testing.T, conn net.Conn) *client {
	t.Helper()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	return c
}

// login dials and logs in with USER/PASS.
func (e *testEnv) login(t *testing.T) *client {
	t.Helper()
	c := e.dial(t)
	c.cmdOK("USER " + testUser)
	c.cmdOK("PASS " + testPassword)
	return c
}

func (c *client) send(line string) {
	c.t.Helper()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

func (c *client) readLine() string {
	c.t.Helper()
	line, err := c.tp.ReadLine()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return line
}

// cmd sends a command and returns its status line.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.readLine()
}

func (c *client) cmdOK(line string) string {
	c.t.Helper()
	reply := c.cmd(line)
	if !strings.HasPrefix(reply, "+OK") {
		c.t.Fatalf("%s: got %q, want +OK", redact(line), reply)
	}
	return reply
}

// cmdErr sends a command that must fail with a reply starting with want.
func (c *client) cmdErr(line, want string) {
	c.t.Helper()
	reply := c.cmd(line)
	if !strings.HasPrefix(reply, want) {
		c.t.Fatalf("%s: got %q, want %q", redact(line), reply, want)
	}
}

func redact(line string) string {
	if strings.HasPrefix(strings.ToUpper(line), "PASS ") {
		return "PASS ***"
	}
	return line
}

func (c *client) expectOK(what string) string {
	c.t.Helper()
	line := c.readLine()
	if !strings.HasPrefix(line, "+OK") {
		c.t.Fatalf("%s: got %q, want +OK", what, line)
	}
	return line
}

// multi sends a command with a multi-line answer and returns its body,
// un-stuffed.
func (c *client) multi(line string) string {
	c.t.Helper()
	c.cmdOK(line)
	b, err := c.tp.ReadDotBytes()
	if err != nil {
		c.t.Fatalf("%s: read body: %v", line, err)
	}
	return string(b)
}

// multiLines is multi split into lines.
func (c *client) multiLines(line string) []string {
	c.t.Helper()
	body := c.multi(line)
	if body == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(body, "\n"), "\n")
}

// startTLS upgrades the client after the server said +OK to STLS.
func (c *client) startTLS(cfg *tls.Config) {
	c.t.Helper()
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("tls handshake: %v", err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

// expectClosed waits for the server to close the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := c.tp.ReadLine()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatal("connection still open")
			}
			return
		}
		c.t.Fatalf("unexpected line before close: %q", line)
	}
}

func plainIR(authz, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// message builds a test message with a subject and body lines.
func message(subject string, body ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: bob@example.net\r\nTo: %s\r\nSubject: %s\r\n\r\n", testUser, subject)
	for _, l := range body {
		b.WriteString(l + "\r\n")
	}
	return b.String()
}
