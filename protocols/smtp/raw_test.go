package smtp

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/textproto"
	"testing"
	"time"
)

// rawClient speaks SMTP line by line, for what client libraries will not
// send (BDAT, malformed commands, smuggling attempts).
type rawClient struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
}

func dialRaw(t *testing.T, addr string, tlsConfig *tls.Config) *rawClient {
	t.Helper()
	var conn net.Conn
	var err error
	if tlsConfig != nil {
		conn, err = tls.Dial("tcp", addr, tlsConfig)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := &rawClient{t: t, conn: conn, text: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	r.expect(220)
	return r
}

// reply reads one (possibly multi-line) reply.
func (r *rawClient) reply() (int, string) {
	r.t.Helper()
	code, msg, err := r.text.ReadResponse(0)
	if err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	return code, msg
}

// expect reads a reply and checks its code.
func (r *rawClient) expect(code int) string {
	r.t.Helper()
	got, msg := r.reply()
	if got != code {
		r.t.Fatalf("got reply %d %q, want %d", got, msg, code)
	}
	return msg
}

// cmd sends a command line and returns the reply.
func (r *rawClient) cmd(format string, args ...any) (int, string) {
	r.t.Helper()
	if err := r.text.PrintfLine(format, args...); err != nil {
		r.t.Fatalf("send %q: %v", fmt.Sprintf(format, args...), err)
	}
	return r.reply()
}

// send writes raw bytes.
func (r *rawClient) send(s string) {
	r.t.Helper()
	if _, err := r.conn.Write([]byte(s)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// mustCmd sends a command and checks the reply code.
func (r *rawClient) mustCmd(code int, format string, args ...any) string {
	r.t.Helper()
	got, msg := r.cmd(format, args...)
	if got != code {
		r.t.Fatalf("%s: got %d %q, want %d", fmt.Sprintf(format, args...), got, msg, code)
	}
	return msg
}

// startTLS upgrades the connection after a 220 reply to STARTTLS.
func (r *rawClient) startTLS(cfg *tls.Config) {
	r.t.Helper()
	tc := tls.Client(r.conn, cfg)
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("TLS handshake: %v", err)
	}
	r.conn = tc
	r.text = textproto.NewConn(tc)
}
