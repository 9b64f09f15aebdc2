package smtp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
)

// ErrServerClosed is returned by Serve when it is called after Close.
var ErrServerClosed = errors.New("smtp server closed")

// errShuttingDown answers commands that arrive while the server closes.
var errShuttingDown = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}

// Server is one SMTP frontend (MX or submission) on top of a mail store.
type Server struct {
	cfg   Config
	store protocols.Store
	log   *slog.Logger
	smtp  *gosmtp.Server
	// smtpTLS is the configuration STARTTLS runs with (cfg.TLS, observed).
	smtpTLS *tls.Config

	// ctx is cancelled by Close so that store calls in flight give up.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	idle      *sync.Cond // signalled when serving, conns or calls drop
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*trackedConn]struct{}
	serving   int // Serve calls running
	calls     int // session calls running
}

// NewServer returns a server for cfg.Mode that delivers into store.
func NewServer(cfg Config, store protocols.Store) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("smtp server: store is required")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		store:     store,
		log:       cfg.Logger.With("component", "smtp", "mode", cfg.Mode.String()),
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*trackedConn]struct{}),
	}
	s.idle = sync.NewCond(&s.mu)

	srv := gosmtp.NewServer(gosmtp.BackendFunc(s.backendSession))
	srv.Domain = cfg.Hostname
	s.smtpTLS = s.startTLSConfig(cfg.TLS)
	if cfg.Mode != ModeMX {
		srv.TLSConfig = s.smtpTLS
	}
	// On the MX port the front (front.go) runs STARTTLS, and go-smtp
	// must never run TLS over it: with no TLSConfig it refuses any
	// STARTTLS that reaches it.
	srv.AllowInsecureAuth = cfg.AllowInsecureAuth
	if cfg.Mode == ModeMX {
		// go-smtp cannot see the front's TLS, and would answer AUTH with
		// 523 "TLS is required" after STARTTLS; let the session answer
		// (MX offers no AUTH at all: 502).
		srv.AllowInsecureAuth = true
	}
	// go-smtp advertises MaxMessageBytes as SIZE (RFC 1870) and refuses a
	// larger MAIL SIZE= and a BDAT transfer beyond it itself, with
	// sizeExceededText; the session refuses a larger DATA message with the
	// same text. The library's DATA reader (v0.25.1) fails once the limit
	// is used up, before it can see the terminating dot, so a DATA message
	// of exactly the limit is refused too: giving the library one byte
	// more, as before, made EHLO advertise a size nobody could send.
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = cfg.MaxLineLength
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	// REQUIRETLS (RFC 8689), advertised on TLS connections only: on the
	// MX port the message ends in a local mailbox; on submission the
	// outbound queue keeps the flag and delivers only over verified TLS.
	srv.EnableREQUIRETLS = true
	srv.ErrorLog = libraryLog{s}
	s.smtp = srv
	return s, nil
}

// Serve accepts connections on ln until Close, then returns nil. For
// implicit TLS (submissions, port 465) pass a listener whose connections
// are *tls.Conn that have not started their handshake, such as
// tls.NewListener's, possibly under wrappers with an Unwrap() net.Conn
// method (protocols.ConnLimiter): Serve then runs TLS itself with cfg.TLS
// over the underlying connection, so that it can track the connection's
// lifetime, and cfg.TLS must be set.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	tl := &trackingListener{Listener: ln, srv: s}
	s.listeners[tl] = struct{}{}
	s.serving++
	s.mu.Unlock()

	s.log.Info("serving", "addr", ln.Addr().String())
	err := s.smtp.Serve(tl)

	s.mu.Lock()
	s.serving--
	delete(s.listeners, tl)
	closed := s.closed
	s.idle.Broadcast()
	s.mu.Unlock()
	if closed {
		return nil
	}
	if err != nil {
		return fmt.Errorf("smtp serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Close stops accepting, closes every open connection and waits until no
// Serve loop and no session call is running any more. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	listeners := make([]net.Listener, 0, len(s.listeners))
	for l := range s.listeners {
		listeners = append(listeners, l)
	}
	s.mu.Unlock()

	if first {
		s.cancel()
		// go-smtp closes its listeners and the connections it registered.
		_ = s.smtp.Close()
		for _, l := range listeners {
			_ = l.Close()
		}
		// Connections accepted but not yet registered by go-smtp.
		s.mu.Lock()
		conns := make([]*trackedConn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	}

	s.mu.Lock()
	for s.serving > 0 || len(s.conns) > 0 || s.calls > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
	if first {
		s.log.Info("closed")
	}
	return nil
}

// enter registers a session call; it reports false once the server is
// closing, and the caller must then not touch the store.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.calls++
	return true
}

// leave ends a session call started by a successful enter.
func (s *Server) leave() {
	s.mu.Lock()
	s.calls--
	s.idle.Broadcast()
	s.mu.Unlock()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// trackingListener registers every accepted connection with the server,
// so that Close can close it and wait for it.
type trackingListener struct {
	net.Listener
	srv *Server
}

// Accept returns the next connection, tracked. Connections that cannot be
// served (a TLS listener without Config.TLS) are closed and skipped.
func (l *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, err := l.srv.track(c)
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if err != nil {
			l.srv.log.Error("connection refused", "remote", protocols.RemoteIP(c.RemoteAddr()).String(), "err", err)
			continue
		}
		return tc, nil
	}
}

// track wraps c so that its Close is observed. An implicit-TLS connection
// is re-terminated over the tracked raw connection with cfg.TLS, because
// go-smtp recognises TLS only by the *tls.Conn type.
func (s *Server) track(c net.Conn) (net.Conn, error) {
	id, err := newConnID()
	if err != nil {
		c.Close()
		return nil, err
	}
	tc := &trackedConn{Conn: c, id: id, closeFn: c.Close, srv: s}
	var implicitTLS bool
	if inner := findTLS(c); inner != nil {
		if s.cfg.TLS == nil {
			c.Close()
			return nil, errors.New("implicit TLS listener but no TLS configuration")
		}
		if inner.ConnectionState().HandshakeComplete {
			c.Close()
			return nil, errors.New("implicit TLS connection already past its handshake")
		}
		// Nothing has been read through the *tls.Conn yet, so the raw
		// connection is still at the start of the client's handshake.
		tc.Conn = inner.NetConn()
		implicitTLS = true
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns[tc] = struct{}{}
	s.mu.Unlock()

	if implicitTLS {
		return tls.Server(tc, s.cfg.TLS), nil
	}
	if s.cfg.Mode == ModeMX {
		return s.newFrontConn(tc), nil
	}
	return tc, nil
}

// findTLS returns the *tls.Conn c is or wraps (through Unwrap() net.Conn
// methods), or nil.
func findTLS(c net.Conn) *tls.Conn {
	for range 8 {
		if t, ok := c.(*tls.Conn); ok {
			return t
		}
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			return nil
		}
		c = u.Unwrap()
	}
	return nil
}

// backendSession makes the session for go-smtp. On submission it watches
// the session's logins for the connection's protocols.TimeoutConn, so
// that the pre-login timeouts stop once the client has authenticated.
func (s *Server) backendSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	sess, err := s.newSession(c)
	if err != nil || s.cfg.Mode != ModeSubmission {
		return s.observe(c, sess), err
	}
	inner, ok := sess.(*session)
	if t := trackedConnOf(c.Conn()); ok && t != nil {
		t.holdErrorsFor(inner.transferPending)
	}
	tc := protocols.TimeoutConnOf(c.Conn())
	if !ok || tc == nil {
		return s.observe(c, sess), nil
	}
	return s.observe(c, &loginWatch{session: inner, tc: tc}), nil
}

// loginWatch tells a protocols.TimeoutConn when AUTH succeeds. It has
// every method of *session, so go-smtp sees the same extensions.
type loginWatch struct {
	*session
	tc *protocols.TimeoutConn
}

var _ gosmtp.AuthSession = (*loginWatch)(nil)

// Auth starts a SASL exchange for mech.
func (w *loginWatch) Auth(mech string) (sasl.Server, error) {
	srv, err := w.session.Auth(mech)
	if err != nil {
		return nil, err
	}
	return protocols.NotifySASL(srv, func() { w.tc.SetLoggedIn(true) }), nil
}

// trackedConn is an accepted connection whose Close unregisters it.
type trackedConn struct {
	net.Conn
	id      string
	closeFn func() error // closes the connection as accepted
	srv     *Server

	// transfer, when set (submission), says what a read error waits
	// for: see Read.
	transfer atomic.Pointer[func() <-chan struct{}]

	once sync.Once
	err  error

	// startTLS times a STARTTLS handshake for the observer.
	startTLS protocols.CommandTimer
}

// Close closes the accepted connection once and unregisters it. A
// STARTTLS handshake still running is reported as failed.
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		if obs := c.srv.cfg.Observer; obs != nil {
			c.startTLS.Flush(obs)
		}
		c.err = c.closeFn()
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.idle.Broadcast()
		c.srv.mu.Unlock()
	})
	return c.err
}

// Read reads from the connection. On the submission ports go-smtp reads
// it directly, and a read error ends the connection: one that comes while
// a BDAT transfer go-smtp took has not reached the session's Data yet is
// handed on once Data runs, at most bdatSettleTimeout later, for the
// reason frontConn.awaitTransferStart gives. (On MX the front does that,
// knowing which command came; here TLS may hide it, so a client gone
// after a RCPT, or an RSET after one, without a Data since also waits.)
func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == nil {
		return n, nil
	}
	if pending := c.transfer.Load(); pending != nil {
		if ch := (*pending)(); ch != nil {
			timer := time.NewTimer(bdatSettleTimeout)
			select {
			case <-ch:
			case <-timer.C:
			case <-c.srv.ctx.Done(): // shutting down: Close does not wait for this
			}
			timer.Stop()
		}
	}
	return n, err
}

// holdErrorsFor sets what a read error waits for (Read).
func (c *trackedConn) holdErrorsFor(pending func() <-chan struct{}) {
	c.transfer.Store(&pending)
}

// Unwrap returns the connection as accepted, so that the TLS handshake
// tracking of protocols.TrackHandshakes finds what lies under it.
func (c *trackedConn) Unwrap() net.Conn { return c.Conn }

// connIDOf returns the id of the tracked connection under c.
func connIDOf(c net.Conn) (string, bool) {
	if t := trackedConnOf(c); t != nil {
		return t.id, true
	}
	return "", false
}

// trackedConnOf returns the tracked connection under c, or nil.
func trackedConnOf(c net.Conn) *trackedConn {
	for range 8 {
		switch t := c.(type) {
		case *trackedConn:
			return t
		case *tls.Conn:
			c = t.NetConn()
		case *frontConn:
			c = t.base
		default:
			return nil
		}
	}
	return nil
}

// newConnID returns a random connection id, also used as the queue id in
// Received headers.
func newConnID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("connection id: %w", err)
	}
	return base32.StdEncoding.EncodeToString(b[:]), nil
}

// libraryLog sends go-smtp's internal error reports (connection errors,
// recovered panics) to the server's logger.
type libraryLog struct{ s *Server }

// Printf logs one go-smtp report.
func (l libraryLog) Printf(format string, v ...any) {
	l.report(fmt.Sprintf(format, v...))
}

// Println logs one go-smtp report.
func (l libraryLog) Println(v ...any) {
	l.report(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

func (l libraryLog) report(msg string) {
	if l.s.isClosed() {
		return
	}
	if strings.Contains(msg, "panic") {
		l.s.log.Error("smtp library panic", "detail", msg)
		return
	}
	l.s.log.Info("smtp connection error", "detail", msg)
}
