package imap

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

const (
	testHandshakeTimeout = 300 * time.Millisecond
	testPreLoginIdle     = 400 * time.Millisecond
	// closeWithin is far below the library's own 30 s pre-login timeout.
	closeWithin = 5 * time.Second
)

// timeoutServer is a server behind TimeoutListeners, as a node runs it.
type timeoutServer struct {
	plain, implicit string // addresses
	clientTLS       *tls.Config
	timeouts        <-chan protocols.TimeoutKind
}

func newTimeoutServer(t *testing.T) *timeoutServer {
	t.Helper()
	env := protocoltest.NewStore(t)
	env.AddUser(t, testUser, testPassword)
	serverTLS, clientTLS := protocoltest.TLS(t)
	tracked := protocols.TrackHandshakes(serverTLS)
	srv, err := NewServer(Config{
		Hostname: "imap.test",
		TLS:      tracked,
		Guard: protocols.NewAuthGuard(protocols.AuthGuardConfig{
			MaxFailuresPerIP: 1000, MaxFailuresPerUser: 1000, Window: time.Minute, Lockout: time.Minute,
		}, nil),
	}, env.Store)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan protocols.TimeoutKind, 16)
	ts := &timeoutServer{clientTLS: clientTLS, timeouts: events}
	done := make(chan error, 2)
	for _, implicit := range []bool{false, true} {
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := protocols.NewTimeoutListener(raw, protocols.TimeoutListenerConfig{
			Timeouts:    protocols.ConnTimeouts{Handshake: testHandshakeTimeout, PreLoginIdle: testPreLoginIdle, Login: time.Minute},
			ImplicitTLS: implicit,
			StartTLS:    "STARTTLS",
			Tagged:      true,
			OnTimeout:   func(kind protocols.TimeoutKind, _ net.Addr, _ time.Duration) { events <- kind },
		})
		if implicit {
			ts.implicit = raw.Addr().String()
			ln = tls.NewListener(ln, tracked)
		} else {
			ts.plain = raw.Addr().String()
		}
		go func() { done <- srv.Serve(ln) }()
	}
	t.Cleanup(func() {
		srv.Close()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return ts
}

// tagged sends a command and waits for its OK.
func tagged(c *protocoltest.LineClient, tag, cmd string) {
	c.Send("%s %s", tag, cmd)
	c.Until(tag + " OK")
}

// loggedIn checks that a logged-in client keeps its connection past the
// pre-login timeouts.
func loggedIn(t *testing.T, ts *timeoutServer, c *protocoltest.LineClient) {
	t.Helper()
	c.ExpectOpen(3 * testPreLoginIdle)
	tagged(c, "n1", "NOOP")
	protocoltest.ExpectNoTimeout(t, ts.timeouts)
}

func TestTimeoutsBeforeLogin(t *testing.T) {
	ts := newTimeoutServer(t)

	t.Run("silent", func(t *testing.T) {
		c := protocoltest.DialLine(t, ts.plain, nil)
		c.Expect("* OK")
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, ts.timeouts, protocols.TimeoutIdle)
	})
	t.Run("silent implicit TLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, ts.implicit, nil)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, ts.timeouts, protocols.TimeoutHandshake)
	})
	t.Run("STARTTLS without handshake", func(t *testing.T) {
		c := protocoltest.DialLine(t, ts.plain, nil)
		c.Expect("* OK")
		tagged(c, "s1", "STARTTLS")
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, ts.timeouts, protocols.TimeoutHandshake)
	})
	t.Run("silent after STARTTLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, ts.plain, nil)
		c.Expect("* OK")
		tagged(c, "s1", "STARTTLS")
		c.StartTLS(ts.clientTLS)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, ts.timeouts, protocols.TimeoutIdle)
	})
}

func TestTimeoutsEndAtLogin(t *testing.T) {
	ts := newTimeoutServer(t)

	t.Run("LOGIN after STARTTLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, ts.plain, nil)
		c.Expect("* OK")
		tagged(c, "s1", "STARTTLS")
		c.StartTLS(ts.clientTLS)
		tagged(c, "l1", "LOGIN "+testUser+" "+testPassword)
		loggedIn(t, ts, c)
	})
	t.Run("AUTHENTICATE", func(t *testing.T) {
		c := protocoltest.DialLine(t, ts.implicit, ts.clientTLS)
		c.Expect("* OK")
		tagged(c, "a1", "AUTHENTICATE PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)))
		loggedIn(t, ts, c)
	})
	t.Run("UNAUTHENTICATE starts them again", func(t *testing.T) {
		c := protocoltest.DialLine(t, ts.implicit, ts.clientTLS)
		c.Expect("* OK")
		tagged(c, "l1", "LOGIN "+testUser+" "+testPassword)
		tagged(c, "u1", "UNAUTHENTICATE")
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, ts.timeouts, protocols.TimeoutIdle)
	})
}
