package protocoltest

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// lineTimeout bounds every step of a LineClient that is expected to
// succeed.
const lineTimeout = 5 * time.Second

// LineClient is a raw client of a line protocol (SMTP, IMAP, POP3), for
// tests of connection handling: timeouts, STARTTLS, closes.
type LineClient struct {
	t    testing.TB
	conn net.Conn
	tp   *textproto.Conn
}

// DialLine connects to addr, over TLS when tlsCfg is set. The connection
// is closed when the test ends.
func DialLine(t testing.TB, addr string, tlsCfg *tls.Config) *LineClient {
	t.Helper()
	d := &net.Dialer{Timeout: lineTimeout}
	var c net.Conn
	var err error
	if tlsCfg != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tlsCfg)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &LineClient{t: t, conn: c, tp: textproto.NewConn(c)}
}

// Conn returns the connection (a *tls.Conn after StartTLS).
func (c *LineClient) Conn() net.Conn { return c.conn }

// Line reads one line.
func (c *LineClient) Line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(lineTimeout))
	l, err := c.tp.ReadLine()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return l
}

// Send writes one line.
func (c *LineClient) Send(format string, args ...any) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(lineTimeout))
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// Expect reads one line and fails the test unless it starts with prefix.
func (c *LineClient) Expect(prefix string) string {
	c.t.Helper()
	l := c.Line()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("read %q, want %q...", l, prefix)
	}
	return l
}

// Until reads lines until one starts with prefix, and returns it.
func (c *LineClient) Until(prefix string) string {
	c.t.Helper()
	for range 100 {
		if l := c.Line(); strings.HasPrefix(l, prefix) {
			return l
		}
	}
	c.t.Fatalf("no line starting with %q", prefix)
	return ""
}

// SMTPReply reads a (multi-line) SMTP reply and checks its code.
func (c *LineClient) SMTPReply(code int) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(lineTimeout))
	if _, _, err := c.tp.ReadResponse(code); err != nil {
		c.t.Fatalf("want %d: %v", code, err)
	}
}

// StartTLS runs the client side of a TLS handshake on the connection,
// after the server's go-ahead to STARTTLS or STLS.
func (c *LineClient) StartTLS(cfg *tls.Config) {
	c.t.Helper()
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(lineTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.conn, c.tp = tc, textproto.NewConn(tc)
}

// Write sends raw bytes.
func (c *LineClient) Write(p []byte) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(lineTimeout))
	if _, err := c.conn.Write(p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// ExpectClosed reads (and discards) until the server closes the
// connection, which must happen within limit.
func (c *LineClient) ExpectClosed(limit time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, c.tp.R)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after %s", limit)
	}
}

// ExpectOpen checks that the server keeps the connection open, and
// sends nothing, for d.
func (c *LineClient) ExpectOpen(d time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	b, err := c.tp.R.ReadByte()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("after %s of silence: read %q, %v; want the connection open", d, b, err)
	}
	c.conn.SetReadDeadline(time.Time{})
}

// TimeoutListener wraps ln in protocols.NewTimeoutListener with cfg (its
// OnTimeout replaced) and returns the listener and a channel of the
// timeouts it reports.
func TimeoutListener(ln net.Listener, cfg protocols.TimeoutListenerConfig) (net.Listener, <-chan protocols.TimeoutKind) {
	ch := make(chan protocols.TimeoutKind, 64)
	cfg.OnTimeout = func(kind protocols.TimeoutKind, _ net.Addr, _ time.Duration) { ch <- kind }
	return protocols.NewTimeoutListener(ln, cfg), ch
}

// ExpectTimeout waits for one timeout from a TimeoutListener channel and
// checks its kind.
func ExpectTimeout(t testing.TB, ch <-chan protocols.TimeoutKind, kind protocols.TimeoutKind) {
	t.Helper()
	select {
	case got := <-ch:
		if got != kind {
			t.Fatalf("timeout %q, want %q", got, kind)
		}
	case <-time.After(2 * lineTimeout):
		t.Fatalf("no %s timeout reported", kind)
	}
}

// ExpectNoTimeout checks that no timeout has been reported.
func ExpectNoTimeout(t testing.TB, ch <-chan protocols.TimeoutKind) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("unexpected %s timeout", got)
	default:
	}
}
