package smtp

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

const (
	testHandshakeTimeout = 300 * time.Millisecond
	testPreLoginIdle     = 400 * time.Millisecond
	// closeWithin is far below go-smtp's 5-minute read timeout.
	closeWithin = 5 * time.Second
)

// startBehindTimeouts runs a server for mode behind a TimeoutListener, as
// a node runs it, and returns its address and the timeouts it reports.
func (f *fixture) startBehindTimeouts(mode Mode, implicitTLS bool) (string, <-chan protocols.TimeoutKind) {
	f.t.Helper()
	cfg := f.config(mode)
	cfg.TLS = protocols.TrackHandshakes(f.serverTLS)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	ln, events := protocoltest.TimeoutListener(raw, protocols.TimeoutListenerConfig{
		Timeouts:         protocols.ConnTimeouts{Handshake: testHandshakeTimeout, PreLoginIdle: testPreLoginIdle, Login: time.Minute},
		ImplicitTLS:      implicitTLS,
		StartTLS:         "STARTTLS",
		LoginOnFirstLine: mode == ModeMX,
	})
	if implicitTLS {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	f.serve(cfg, f.env.Store, ln)
	return raw.Addr().String(), events
}

func ehlo(c *protocoltest.LineClient) {
	c.Send("EHLO client.example")
	c.SMTPReply(250)
}

func authPlain(c *protocoltest.LineClient) {
	ehlo(c)
	c.Send("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+alice+"\x00"+alicePW)))
	c.SMTPReply(235)
}

// stillServed checks that a client past the pre-login timeouts keeps its
// connection.
func stillServed(t *testing.T, c *protocoltest.LineClient, events <-chan protocols.TimeoutKind) {
	t.Helper()
	c.ExpectOpen(3 * testPreLoginIdle)
	c.Send("NOOP")
	c.SMTPReply(250)
	protocoltest.ExpectNoTimeout(t, events)
}

func TestTimeoutsMX(t *testing.T) {
	f := newFixture(t)
	addr, events := f.startBehindTimeouts(ModeMX, false)

	t.Run("silent", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, events, protocols.TimeoutIdle)
	})
	t.Run("STARTTLS without handshake", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		ehlo(c)
		c.Send("STARTTLS")
		c.SMTPReply(220)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, events, protocols.TimeoutHandshake)
	})
	t.Run("after the first command", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		ehlo(c)
		stillServed(t, c, events)
	})
	t.Run("after STARTTLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		ehlo(c)
		c.Send("STARTTLS")
		c.SMTPReply(220)
		c.StartTLS(f.clientTLS)
		ehlo(c)
		stillServed(t, c, events)
	})
}

func TestTimeoutsSubmission(t *testing.T) {
	f := newFixture(t)
	addr, events := f.startBehindTimeouts(ModeSubmission, false)

	t.Run("silent after EHLO", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		ehlo(c)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, events, protocols.TimeoutIdle)
	})
	t.Run("STARTTLS without handshake", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		ehlo(c)
		c.Send("STARTTLS")
		c.SMTPReply(220)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, events, protocols.TimeoutHandshake)
	})
	t.Run("silent after STARTTLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		ehlo(c)
		c.Send("STARTTLS")
		c.SMTPReply(220)
		c.StartTLS(f.clientTLS)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, events, protocols.TimeoutIdle)
	})
	t.Run("AUTH after STARTTLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.SMTPReply(220)
		ehlo(c)
		c.Send("STARTTLS")
		c.SMTPReply(220)
		c.StartTLS(f.clientTLS)
		authPlain(c)
		stillServed(t, c, events)
	})
}

func TestTimeoutsSubmissions(t *testing.T) {
	f := newFixture(t)
	addr, events := f.startBehindTimeouts(ModeSubmission, true)

	t.Run("silent", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, nil)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, events, protocols.TimeoutHandshake)
	})
	t.Run("silent after the handshake", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, f.clientTLS)
		c.SMTPReply(220)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, events, protocols.TimeoutIdle)
	})
	t.Run("AUTH", func(t *testing.T) {
		c := protocoltest.DialLine(t, addr, f.clientTLS)
		c.SMTPReply(220)
		authPlain(c)
		stillServed(t, c, events)
	})
}

// TestDeadlineReaderOnClosedConnection: once the client's connection is
// closed, the message stream still decides how the transfer ended (here
// go-smtp's reset after a refused chunk), not the failure to set a read
// deadline on the closed connection, which would report a network error
// the client never heard.
func TestDeadlineReaderOnClosedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	pr, pw := io.Pipe()
	pw.CloseWithError(gosmtp.ErrDataReset)
	d := &deadlineReader{r: pr, conn: conn, idle: time.Minute, end: time.Now().Add(time.Hour)}
	if _, err := d.Read(make([]byte, 16)); !errors.Is(err, gosmtp.ErrDataReset) {
		t.Fatalf("read on a closed connection: %v, want the stream's %v", err, gosmtp.ErrDataReset)
	}
}
