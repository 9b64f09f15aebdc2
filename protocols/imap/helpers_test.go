package imap

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	testUser     = "alice@example.org"
	testPassword = "alice-secret-pw"
	otherUser    = "bob@example.org"
	otherPass    = "bob-secret-pw-1"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Reset drops what was collected so far.
func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is a running IMAP server over an in-memory store.
type testServer struct {
	env       *protocoltest.Env
	srv       *Server
	addr      string // plain listener (STARTTLS)
	tlsAddr   string // implicit TLS listener
	clientTLS *tls.Config
	logs      *syncBuffer
}

type serverOption func(*Config)

func withSecureAuth() serverOption { return func(c *Config) { c.AllowInsecureAuth = false } }

func withMaxMessageSize(n int64) serverOption {
	return func(c *Config) { c.MaxMessageSize = n }
}

func withGuard(g *protocols.AuthGuard) serverOption { return func(c *Config) { c.Guard = g } }

// newTestServer starts a server with plaintext login allowed (unless
// withSecureAuth), listening on loopback for both plain and implicit TLS.
func newTestServer(t testing.TB, opts ...serverOption) *testServer {
	t.Helper()
	env := protocoltest.NewStore(t)
	env.AddUser(t, testUser, testPassword)
	env.AddUser(t, otherUser, otherPass)
	serverTLS, clientTLS := protocoltest.TLS(t)
	logs := &syncBuffer{}
	cfg := Config{
		Hostname:          "imap.test",
		TLS:               serverTLS,
		AllowInsecureAuth: true,
		Guard: protocols.NewAuthGuard(protocols.AuthGuardConfig{
			MaxFailuresPerIP: 1000, MaxFailuresPerUser: 1000, Window: time.Minute, Lockout: time.Minute,
		}, nil),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := NewServer(cfg, env.Store)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rawTLS, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsLn := tls.NewListener(rawTLS, serverTLS)
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	go func() { serveErr <- srv.Serve(tlsLn) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
		for i := 0; i < 2; i++ {
			select {
			case err := <-serveErr:
				if err != nil {
					t.Errorf("serve returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("serve did not return after close")
			}
		}
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	})
	return &testServer{env: env, srv: srv, addr: ln.Addr().String(), tlsAddr: rawTLS.Addr().String(), clientTLS: clientTLS, logs: logs}
}

// dial connects a client without TLS.
func (ts *testServer) dial(t testing.TB, handler *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(ts.addr, &imapclient.Options{UnilateralDataHandler: handler})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

// login connects and logs in as the test user.
func (ts *testServer) login(t testing.TB, handler *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c := ts.dial(t, handler)
	if err := c.Login(testUser, testPassword).Wait(); err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

// deliver stores a message in the test user's INBOX through the store,
// as SMTP would.
func (ts *testServer) deliver(t testing.TB, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := ts.env.Store.Deliver(ctx, schema.Delivery{From: "sender@example.net", Recipients: []string{testUser}, Message: []byte(msg)})
	if err != nil {
		t.Fatalf("deliver: %v", err)
	}
}

// simpleMessage builds a small text message.
func simpleMessage(from, to, subject, date, body string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nDate: " + date +
		"\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.net>\r\n\r\n" + body + "\r\n"
}

// imapCode returns the response code of an IMAP error, or "".
func imapCode(err error) imap.ResponseCode {
	if e, ok := err.(*imap.Error); ok {
		return e.Code
	}
	return ""
}

// selectInbox selects INBOX and fails the test on error.
func selectMailbox(t testing.TB, c *imapclient.Client, name string, readOnly bool) *imap.SelectData {
	t.Helper()
	data, err := c.Select(name, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", name, err)
	}
	return data
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawConn speaks IMAP by hand, for what the client library cannot send:
// legacy items, SEARCHRES, garbage.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	tag  int
	// zw, once set (deflate), compresses what send writes into zbuf,
	// which goes to the connection in one write per burst, as a zlib
	// client's output does.
	zw   *flate.Writer
	zbuf *bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc := &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
	if greeting := rc.line(); !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("greeting %q", greeting)
	}
	return rc
}

// handshake runs the client's side of TLS on rc's connection, after
// STARTTLS's OK, and reads and writes through it from then on.
func (rc *rawConn) handshake(cfg *tls.Config) {
	rc.t.Helper()
	tc := tls.Client(rc.conn, cfg)
	if err := tc.Handshake(); err != nil {
		rc.t.Fatalf("handshake: %v", err)
	}
	rc.conn, rc.r = tc, bufio.NewReader(tc)
}

// line reads one response line, with any literals it announces inlined.
func (rc *rawConn) line() string {
	rc.t.Helper()
	rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var sb strings.Builder
	for {
		l, err := rc.r.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("read: %v (so far %q)", err, sb.String()+l)
		}
		sb.WriteString(l)
		trimmed := strings.TrimRight(l, "\r\n")
		if !strings.HasSuffix(trimmed, "}") {
			return strings.TrimRight(sb.String(), "\r\n")
		}
		open := strings.LastIndexByte(trimmed, '{')
		n, err := strconv.Atoi(strings.TrimSuffix(trimmed[open+1:len(trimmed)-1], "+"))
		if open < 0 || err != nil {
			return strings.TrimRight(sb.String(), "\r\n")
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			rc.t.Fatalf("read literal: %v", err)
		}
		sb.Write(buf)
	}
}

// send writes a raw line.
func (rc *rawConn) send(s string) {
	rc.t.Helper()
	rc.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if rc.zw != nil {
		if err := rc.writeCompressed([]byte(s)); err != nil {
			rc.t.Fatalf("write: %v", err)
		}
		return
	}
	if _, err := rc.conn.Write([]byte(s)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// writeCompressed compresses p, sync-flushes, and writes the burst to
// the connection in one write.
func (rc *rawConn) writeCompressed(p []byte) error {
	if _, err := rc.zw.Write(p); err != nil {
		return err
	}
	if err := rc.zw.Flush(); err != nil {
		return err
	}
	_, err := rc.conn.Write(rc.zbuf.Bytes())
	rc.zbuf.Reset()
	return err
}

// cmd sends a tagged command and returns the untagged lines and the
// tagged status line.
func (rc *rawConn) cmd(command string) (untagged []string, status string) {
	rc.t.Helper()
	rc.tag++
	tag := fmt.Sprintf("T%d", rc.tag)
	rc.send(tag + " " + command + "\r\n")
	for {
		l := rc.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, strings.TrimPrefix(l, tag+" ")
		}
		untagged = append(untagged, l)
	}
}

// mustOK runs cmd and fails unless it answers OK.
func (rc *rawConn) mustOK(command string) []string {
	rc.t.Helper()
	untagged, status := rc.cmd(command)
	if !strings.HasPrefix(status, "OK") {
		rc.t.Fatalf("%s: %s (untagged %q)", command, status, untagged)
	}
	return untagged
}
