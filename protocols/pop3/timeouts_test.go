package pop3

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
	// closeWithin is far below the server's own idle timeout (a minute
	// in these tests).
	closeWithin = 5 * time.Second
)

// timeoutEnv is a server behind TimeoutListeners, as a node runs it.
type timeoutEnv struct {
	plain, implicit string // addresses
	clientTLS       *tls.Config
	timeouts        <-chan protocols.TimeoutKind
}

func newTimeoutEnv(t *testing.T) *timeoutEnv {
	t.Helper()
	store := protocoltest.NewStore(t)
	store.AddUser(t, testUser, testPassword)
	serverTLS, clientTLS := protocoltest.TLS(t)
	tracked := protocols.TrackHandshakes(serverTLS)
	srv, err := NewServer(Config{
		Hostname:    "pop.example.org",
		TLS:         tracked,
		Guard:       protocols.NewAuthGuard(protocols.AuthGuardConfig{MaxFailuresPerIP: 1000, MaxFailuresPerUser: 1000, Window: time.Minute, Lockout: time.Minute}, nil),
		Logger:      testLogger(t),
		IdleTimeout: time.Minute,
		// The server's own handshake timeout is longer than the
		// listener's, which must cut the client off first.
		HandshakeTimeout: time.Minute,
	}, store.Store)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan protocols.TimeoutKind, 16)
	e := &timeoutEnv{clientTLS: clientTLS, timeouts: events}
	done := make(chan error, 2)
	for _, implicit := range []bool{false, true} {
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := protocols.NewTimeoutListener(raw, protocols.TimeoutListenerConfig{
			Timeouts:    protocols.ConnTimeouts{Handshake: testHandshakeTimeout, PreLoginIdle: testPreLoginIdle, Login: time.Minute},
			ImplicitTLS: implicit,
			StartTLS:    "STLS",
			OnTimeout:   func(kind protocols.TimeoutKind, _ net.Addr, _ time.Duration) { events <- kind },
		})
		if implicit {
			e.implicit = raw.Addr().String()
			ln = tls.NewListener(ln, tracked)
		} else {
			e.plain = raw.Addr().String()
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
	return e
}

// stls upgrades a plain connection with STLS.
func (e *timeoutEnv) stls(c *protocoltest.LineClient) {
	c.Send("STLS")
	c.Expect("+OK")
	c.StartTLS(e.clientTLS)
}

// stillServed checks that a logged-in client keeps its connection past
// the pre-login timeouts.
func (e *timeoutEnv) stillServed(t *testing.T, c *protocoltest.LineClient) {
	t.Helper()
	c.ExpectOpen(3 * testPreLoginIdle)
	c.Send("NOOP")
	c.Expect("+OK")
	protocoltest.ExpectNoTimeout(t, e.timeouts)
}

func TestTimeoutsBeforeLogin(t *testing.T) {
	e := newTimeoutEnv(t)

	t.Run("silent", func(t *testing.T) {
		c := protocoltest.DialLine(t, e.plain, nil)
		c.Expect("+OK")
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, e.timeouts, protocols.TimeoutIdle)
	})
	t.Run("silent implicit TLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, e.implicit, nil)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, e.timeouts, protocols.TimeoutHandshake)
	})
	t.Run("STLS without handshake", func(t *testing.T) {
		c := protocoltest.DialLine(t, e.plain, nil)
		c.Expect("+OK")
		c.Send("STLS")
		c.Expect("+OK")
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, e.timeouts, protocols.TimeoutHandshake)
	})
	t.Run("silent after STLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, e.plain, nil)
		c.Expect("+OK")
		e.stls(c)
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, e.timeouts, protocols.TimeoutIdle)
	})
	t.Run("USER without PASS", func(t *testing.T) {
		c := protocoltest.DialLine(t, e.implicit, e.clientTLS)
		c.Expect("+OK")
		c.Send("USER %s", testUser)
		c.Expect("+OK")
		c.ExpectClosed(closeWithin)
		protocoltest.ExpectTimeout(t, e.timeouts, protocols.TimeoutIdle)
	})
}

func TestTimeoutsEndAtLogin(t *testing.T) {
	e := newTimeoutEnv(t)

	t.Run("USER and PASS after STLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, e.plain, nil)
		c.Expect("+OK")
		e.stls(c)
		c.Send("USER %s", testUser)
		c.Expect("+OK")
		c.Send("PASS %s", testPassword)
		c.Expect("+OK")
		e.stillServed(t, c)
		// QUIT releases the maildrop lock before its answer, so the next
		// subtest's login cannot find it still held by this session.
		c.Send("QUIT")
		c.Expect("+OK")
	})
	t.Run("AUTH PLAIN over implicit TLS", func(t *testing.T) {
		c := protocoltest.DialLine(t, e.implicit, e.clientTLS)
		c.Expect("+OK")
		c.Send("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)))
		c.Expect("+OK")
		e.stillServed(t, c)
	})
}
