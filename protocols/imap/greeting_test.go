package imap

import (
	"bufio"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateHandler is a slog handler that holds the goroutine logging
// "connection opened" (the library's session start, in newSession) until
// gate has a token for it or is closed, so a test can keep the library
// from greeting.
type gateHandler struct {
	slog.Handler
	gate chan struct{}
}

func (h gateHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "connection opened" {
		<-h.gate
	}
	return h.Handler.Handle(ctx, r)
}

func (h gateHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return gateHandler{h.Handler.WithAttrs(a), h.gate}
}

func (h gateHandler) WithGroup(n string) slog.Handler {
	return gateHandler{h.Handler.WithGroup(n), h.gate}
}

// TestFrontGreetsWithoutWaitingForLibrary: once the library has greeted
// one connection, the front greets the next ones itself, with the same
// line, and runs STARTTLS while the library has not started the session
// yet; commands go to the library once it has.
func TestFrontGreetsWithoutWaitingForLibrary(t *testing.T) {
	gate := make(chan struct{}, 1)
	gate <- struct{}{} // the first connection goes through
	ts := newTestServer(t, withSecureAuth(), func(c *Config) {
		c.Logger = slog.New(gateHandler{slog.NewTextHandler(&syncBuffer{}, &slog.HandlerOptions{Level: slog.LevelDebug}), gate})
	})
	// Cleanups run last registered first: the gate opens for good before
	// the server closes (which waits for the sessions it holds).
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(gate) }) })
	first := dialRaw(t, ts.addr)
	first.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// dialRaw read the greeting; ask for it again in a CAPABILITY.
	untagged, status := first.cmd("CAPABILITY")
	if !strings.HasPrefix(status, "OK") || len(untagged) != 1 {
		t.Fatalf("CAPABILITY: %q %q", untagged, status)
	}

	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	greeting, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("greeting while the library is held: %v", err)
	}
	// The same capabilities as the library's greeting, rewritten (no
	// AUTH= before TLS, STARTTLS offered).
	caps := strings.TrimPrefix(untagged[0], "* CAPABILITY ")
	if !strings.HasPrefix(greeting, "* OK [CAPABILITY "+caps+"] ") {
		t.Fatalf("early greeting %q, want the capabilities %q", greeting, caps)
	}
	if _, err := conn.Write([]byte("a STARTTLS\r\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "a OK") {
		t.Fatalf("STARTTLS: %q, %v", l, err)
	}
	tc := tls.Client(conn, ts.clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake while the library is held: %v", err)
	}
	if _, err := tc.Write([]byte("b NOOP\r\n")); err != nil {
		t.Fatal(err)
	}
	// The NOOP waits for the library's session, which the gate holds.
	tr := bufio.NewReader(tc)
	tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if l, err := tr.ReadString('\n'); err == nil {
		t.Fatalf("answer %q before the library started the session", l)
	}
	gate <- struct{}{}
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := tr.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "b OK") {
		t.Fatalf("NOOP once the library runs: %q, %v (no second greeting may come first)", l, err)
	}
}
