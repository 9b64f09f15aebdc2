package protocols

import (
	"bytes"
	"crypto/tls"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
)

// Defaults for ConnTimeouts, in the spirit of Dovecot's login processes
// (which disconnect a client that has not logged in after 3 minutes) and
// of Postfix under stress (10 s for the TLS handshake).
const (
	// DefaultHandshakeTimeout bounds a TLS handshake.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultPreLoginIdleTimeout is how long a client that has not
	// logged in may stay silent.
	DefaultPreLoginIdleTimeout = time.Minute
	// DefaultLoginTimeout is how long a client may take to log in at
	// all.
	DefaultLoginTimeout = 3 * time.Minute
)

// ConnTimeouts bounds how long a client may hold a connection (and a slot
// of the ConnLimiter) before it has logged in. A zero field disables its
// bound. After login only the frontend's own timeouts apply.
type ConnTimeouts struct {
	// Handshake bounds a TLS handshake: on an implicit-TLS listener from
	// the accept, after STARTTLS or STLS from the command.
	Handshake time.Duration
	// PreLoginIdle closes a connection whose client has sent nothing for
	// this long before it logged in.
	PreLoginIdle time.Duration
	// Login closes a connection whose client has not logged in this long
	// after it connected (or logged out with UNAUTHENTICATE), however
	// busy it kept the connection.
	Login time.Duration
}

// TimeoutKind names the bound that closed a connection; the values are
// used as metric labels.
type TimeoutKind string

// The bounds of ConnTimeouts.
const (
	TimeoutHandshake TimeoutKind = "handshake"
	TimeoutIdle      TimeoutKind = "idle"
	TimeoutLogin     TimeoutKind = "login"
)

// TimeoutListenerConfig configures NewTimeoutListener for one listener.
type TimeoutListenerConfig struct {
	Timeouts ConnTimeouts
	// ImplicitTLS says that connections start with a TLS handshake (the
	// listener is wrapped by tls.NewListener).
	ImplicitTLS bool
	// StartTLS is the command that starts TLS on a plaintext connection,
	// "STARTTLS" or "STLS"; empty for none. Tagged says the protocol's
	// commands start with a tag (IMAP).
	StartTLS string
	Tagged   bool
	// LoginOnFirstLine ends the pre-login bounds at the client's first
	// command line, for protocols without a login (SMTP MX).
	LoginOnFirstLine bool
	// OnTimeout, if set, is called once for each connection that one of
	// the bounds cut off, with how long it had been open. The connection
	// closes soon after, as the frontend sees its read fail.
	OnTimeout func(kind TimeoutKind, remote net.Addr, open time.Duration)
	// Observer, if set, is told about every connection: its opening and
	// closing, the bytes it carries and the TLS it negotiates.
	Observer ConnObserver
}

// NewTimeoutListener wraps ln (under tls.NewListener for implicit TLS) so
// that its connections enforce cfg.Timeouts under the frontend's own read
// and write deadlines. A frontend marks a login on the connection with
// TimeoutConnOf; the TLS configurations of the frontend must come from
// TrackHandshakes so that the end of a handshake is seen.
func NewTimeoutListener(ln net.Listener, cfg TimeoutListenerConfig) net.Listener {
	if cfg.ImplicitTLS {
		// Connections carry ciphertext from the start: nothing to read.
		cfg.StartTLS, cfg.LoginOnFirstLine = "", false
	}
	return &timeoutListener{Listener: ln, cfg: &cfg}
}

type timeoutListener struct {
	net.Listener
	cfg *TimeoutListenerConfig
}

// Accept returns the next connection, bounded by the listener's timeouts.
func (l *timeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tc := &TimeoutConn{Conn: c, cfg: l.cfg, accepted: now, loginSince: now, readStart: now, lineStart: true}
	if l.cfg.ImplicitTLS && l.cfg.Timeouts.Handshake > 0 {
		tc.handshakeBy = now.Add(l.cfg.Timeouts.Handshake)
	}
	if l.cfg.Observer != nil {
		l.cfg.Observer.ConnOpened()
	}
	return tc, nil
}

// tlsHandshakeRecord is the first byte of a TLS record carrying a
// handshake message, such as the ClientHello (RFC 8446 section 5.1).
const tlsHandshakeRecord = 0x16

// maxStartTLSLine is longer than any STARTTLS command line with its tag.
const maxStartTLSLine = 128

// TimeoutConn is a connection accepted by a NewTimeoutListener listener.
// Each read waits no longer than the earliest of the deadline the
// frontend set, the end of a pending TLS handshake and, before login, the
// idle and login bounds. A read cut off by one of the bounds fails with a
// timeout, and so does every later read.
type TimeoutConn struct {
	net.Conn
	cfg      *TimeoutListenerConfig
	accepted time.Time

	mu sync.Mutex
	// libRead and libWrite are the deadlines the frontend set.
	libRead, libWrite time.Time
	// handshakeBy is when a pending TLS handshake must have ended; zero
	// when none is pending.
	handshakeBy time.Time
	// awaitTLS: a STARTTLS command was read, and the next data tells
	// whether a handshake follows.
	awaitTLS bool
	tlsUp    bool
	// lineStart: the data read so far ends with a line.
	lineStart  bool
	loggedIn   bool
	loginWatch func() bool
	loginSince time.Time
	// readStart is when the current (or last) read began.
	readStart time.Time
	// readSet is the read deadline on Conn, readKind the bound it comes
	// from ("" for the frontend's own).
	readSet  time.Time
	readKind TimeoutKind
	// writeSet: the write deadline on Conn is not libWrite.
	writeSet bool
	// fired is the bound that cut the connection off, firedErr the error
	// its read returned.
	fired    TimeoutKind
	firedErr error

	// closeOnce reports the first Close to the observer.
	closeOnce sync.Once
}

// TimeoutConnOf returns the TimeoutConn c is or wraps (through *tls.Conn
// and Unwrap() net.Conn methods), or nil.
func TimeoutConnOf(c net.Conn) *TimeoutConn {
	for range 8 {
		switch t := c.(type) {
		case *TimeoutConn:
			return t
		case interface{ Unwrap() net.Conn }:
			c = t.Unwrap()
		case interface{ NetConn() net.Conn }:
			c = t.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Unwrap returns the connection as accepted.
func (c *TimeoutConn) Unwrap() net.Conn { return c.Conn }

// SetLoggedIn records a login (true), after which the pre-login bounds no
// longer apply, or a return to the not-authenticated state (false), which
// restarts them. It does nothing on a nil TimeoutConn.
func (c *TimeoutConn) SetLoggedIn(in bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loggedIn = in
	if !in {
		c.loginWatch = nil
		c.loginSince = time.Now()
	}
}

// WatchLogin makes the connection ask loggedIn, before each read, whether
// the client has logged in; once it has, the pre-login bounds no longer
// apply. loggedIn runs on the goroutine that reads from the connection.
// It does nothing on a nil TimeoutConn.
func (c *TimeoutConn) WatchLogin(loggedIn func() bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loginWatch = loggedIn
}

// preLoginLocked reports whether the client has yet to log in.
func (c *TimeoutConn) preLoginLocked() bool {
	if !c.loggedIn && c.loginWatch != nil && c.loginWatch() {
		c.loggedIn = true
	}
	return !c.loggedIn
}

// applyReadLocked sets the read deadline on Conn to the earliest bound.
func (c *TimeoutConn) applyReadLocked() error {
	dl, kind := c.libRead, TimeoutKind("")
	earlier := func(t time.Time, k TimeoutKind) {
		if dl.IsZero() || t.Before(dl) {
			dl, kind = t, k
		}
	}
	if !c.handshakeBy.IsZero() {
		earlier(c.handshakeBy, TimeoutHandshake)
	}
	if c.preLoginLocked() {
		if d := c.cfg.Timeouts.Login; d > 0 {
			earlier(c.loginSince.Add(d), TimeoutLogin)
		}
		if d := c.cfg.Timeouts.PreLoginIdle; d > 0 {
			earlier(c.readStart.Add(d), TimeoutIdle)
		}
	}
	if dl.Equal(c.readSet) && kind == c.readKind {
		return nil
	}
	c.readSet, c.readKind = dl, kind
	return c.Conn.SetReadDeadline(dl)
}

// Read reads within the earliest of the bounds that apply.
func (c *TimeoutConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.fired != "" {
		err := c.firedErr
		c.mu.Unlock()
		return 0, err
	}
	c.readStart = time.Now()
	// A connection that takes no deadline is closed (or its peer is, for
	// a net.Pipe); its Read tells how.
	_ = c.applyReadLocked()
	c.mu.Unlock()

	n, err := c.Conn.Read(p)
	if n > 0 && c.cfg.Observer != nil {
		c.cfg.Observer.BytesRead(n)
	}

	c.mu.Lock()
	if n > 0 {
		c.observeLocked(p[:n])
	}
	var fired TimeoutKind
	// The read failed at or after one of our bounds: whatever the error
	// (a frontend's own handshake timer may have closed the connection
	// at the same moment), that bound cut the client off.
	if err != nil && c.readKind != "" && !time.Now().Before(c.readSet) {
		fired = c.readKind
		c.fired, c.firedErr = fired, err
	}
	c.mu.Unlock()
	if fired != "" && c.cfg.OnTimeout != nil {
		c.cfg.OnTimeout(fired, c.Conn.RemoteAddr(), time.Since(c.accepted))
	}
	return n, err
}

// observeLocked follows the plaintext the client sent: its first line
// (LoginOnFirstLine) and STARTTLS commands before login (any time on a
// LoginOnFirstLine listener), which start the handshake bound. Only a
// STARTTLS line read on its own counts; with anything pipelined after it,
// the pre-login bounds alone apply.
func (c *TimeoutConn) observeLocked(p []byte) {
	if c.awaitTLS {
		c.awaitTLS = false
		if p[0] != tlsHandshakeRecord {
			// STARTTLS was refused: the client went on in plaintext.
			c.handshakeBy = time.Time{}
		}
	}
	if c.tlsUp || !c.handshakeBy.IsZero() {
		return
	}
	if c.cfg.LoginOnFirstLine && !c.loggedIn && bytes.IndexByte(p, '\n') >= 0 {
		c.loggedIn = true
	}
	mayStart := !c.loggedIn || c.cfg.LoginOnFirstLine
	if mayStart && c.cfg.StartTLS != "" && c.cfg.Timeouts.Handshake > 0 && c.lineStart && c.isStartTLS(p) {
		c.handshakeBy = time.Now().Add(c.cfg.Timeouts.Handshake)
		c.awaitTLS = true
	}
	c.lineStart = p[len(p)-1] == '\n'
}

// isStartTLS reports whether p is exactly one STARTTLS command line.
func (c *TimeoutConn) isStartTLS(p []byte) bool {
	if len(p) > maxStartTLSLine || bytes.IndexByte(p, '\n') != len(p)-1 {
		return false
	}
	fields := bytes.Fields(p)
	verb := 0
	if c.cfg.Tagged {
		verb = 1
	}
	return len(fields) == verb+1 && bytes.EqualFold(fields[verb], []byte(c.cfg.StartTLS))
}

// handshakeDone ends the handshake bound and reports the TLS negotiated
// to the observer; TrackHandshakes calls it once the handshake has been
// verified (just before the client's Finished message, which the
// remaining bounds cover).
func (c *TimeoutConn) handshakeDone(cs *tls.ConnectionState) {
	c.mu.Lock()
	c.handshakeBy = time.Time{}
	c.awaitTLS = false
	c.tlsUp = true
	c.mu.Unlock()
	if c.cfg.Observer != nil {
		c.cfg.Observer.TLSEstablished(cs.Version, cs.CipherSuite)
	}
}

// Write writes within the frontend's write deadline and, during a TLS
// handshake, the handshake bound.
func (c *TimeoutConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	// As in Read, a failure to set the deadline shows in the write.
	switch {
	case !c.handshakeBy.IsZero():
		dl := c.libWrite
		if dl.IsZero() || c.handshakeBy.Before(dl) {
			dl = c.handshakeBy
		}
		_ = c.Conn.SetWriteDeadline(dl)
		c.writeSet = true
	case c.writeSet:
		_ = c.Conn.SetWriteDeadline(c.libWrite)
		c.writeSet = false
	}
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	if n > 0 && c.cfg.Observer != nil {
		c.cfg.Observer.BytesWritten(n)
	}
	return n, err
}

// Close closes the connection; the observer hears of the first call
// only.
func (c *TimeoutConn) Close() error {
	err := c.Conn.Close()
	if c.cfg.Observer != nil {
		c.closeOnce.Do(c.cfg.Observer.ConnClosed)
	}
	return err
}

// SetDeadline sets the frontend's read and write deadlines.
func (c *TimeoutConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the frontend's read deadline; the bounds of the
// connection still apply under it.
func (c *TimeoutConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.libRead = t
	return c.applyReadLocked()
}

// SetWriteDeadline sets the frontend's write deadline.
func (c *TimeoutConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.libWrite = t
	if !c.handshakeBy.IsZero() && (t.IsZero() || c.handshakeBy.Before(t)) {
		t = c.handshakeBy
	}
	c.writeSet = !t.Equal(c.libWrite)
	return c.Conn.SetWriteDeadline(t)
}

// TrackHandshakes returns a copy of cfg whose server handshakes tell the
// TimeoutConn under the connection (if any) that they have completed.
// Every TLS configuration a frontend behind NewTimeoutListener uses, for
// implicit TLS and for STARTTLS, must come from it: otherwise the
// handshake bound cuts off a connection whose handshake succeeded.
func TrackHandshakes(cfg *tls.Config) *tls.Config {
	return ObserveHandshakes(cfg, func(conn net.Conn) func(*tls.ConnectionState) {
		if tc := TimeoutConnOf(conn); tc != nil {
			return tc.handshakeDone
		}
		return nil
	})
}

// NotifySASL returns a SASL server that behaves like s and calls
// onSuccess when an exchange ends in a successful authentication.
func NotifySASL(s sasl.Server, onSuccess func()) sasl.Server {
	return &notifySASL{Server: s, onSuccess: onSuccess}
}

type notifySASL struct {
	sasl.Server
	onSuccess func()
}

func (n *notifySASL) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := n.Server.Next(response)
	if done && err == nil {
		n.onSuccess()
	}
	return challenge, done, err
}
