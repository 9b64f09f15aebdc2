package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// Defaults for the zero values of Config.
const (
	// DefaultIdleTimeout is the RFC 1939 section 3 minimum autologout
	// timer.
	DefaultIdleTimeout      = 10 * time.Minute
	DefaultWriteTimeout     = time.Minute
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultMaxBadCommands   = 10
	DefaultMaxAuthFailures  = 3
)

// Config configures a POP3 server. Zero values mean the defaults above.
type Config struct {
	// Hostname is announced in the greeting and the sign-off.
	Hostname string
	// TLS enables STLS on plain connections. Nil disables STLS (tests
	// only); implicit TLS is the listener's business.
	TLS *tls.Config
	// Guard throttles failed logins; it should be the node's shared
	// guard. When nil the server makes one of its own with
	// protocols.DefaultAuthGuardConfig.
	Guard *protocols.AuthGuard
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Observer, if set, is told about every command (see Commands).
	Observer protocols.CommandObserver
	// CommandRate, if set, limits the commands per client address (shared
	// by every frontend of the node): a command over the limit is refused
	// with -ERR [SYS/TEMP] after a short delay, and persistent abuse ends
	// the connection.
	CommandRate *protocols.CommandLimiter

	// AllowInsecureAuth allows USER/PASS and AUTH on a connection without
	// TLS even though TLS is configured. For tests only.
	AllowInsecureAuth bool
	// IdleTimeout closes a connection on which no command arrived for
	// this long. RFC 1939 asks for at least 10 minutes; tests use less.
	IdleTimeout time.Duration
	// WriteTimeout drops a client that accepts no data for this long.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake (implicit TLS or STLS).
	HandshakeTimeout time.Duration
	// MaxBadCommands is how many unknown, malformed, overlong or
	// out-of-state commands a connection may send before it is closed.
	MaxBadCommands int
	// MaxAuthFailures is how many failed logins a connection may make;
	// the last failure closes it. Each attempt costs a password hash, and
	// the guard's per-address limit is shared by many users behind one
	// NAT, so a connection gets its own, small limit as well.
	MaxAuthFailures int
}

// Server is a POP3 server over a protocols.Store. One server may serve
// several listeners (plain and implicit TLS); the exclusive maildrop lock
// covers all of them.
type Server struct {
	cfg   Config
	store protocols.Store
	guard *protocols.AuthGuard
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	nextID atomic.Uint64

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

// NewServer returns a server that serves mail from store.
func NewServer(cfg Config, store protocols.Store) (*Server, error) {
	if store == nil {
		return nil, errors.New("pop3: nil store")
	}
	if cfg.IdleTimeout < 0 || cfg.WriteTimeout < 0 || cfg.HandshakeTimeout < 0 || cfg.MaxBadCommands < 0 || cfg.MaxAuthFailures < 0 {
		return nil, fmt.Errorf("pop3: negative limit in config")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if strings.ContainsAny(cfg.Hostname, "\r\n") {
		return nil, fmt.Errorf("pop3: hostname %q contains a line break", cfg.Hostname)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxBadCommands == 0 {
		cfg.MaxBadCommands = DefaultMaxBadCommands
	}
	if cfg.MaxAuthFailures == 0 {
		cfg.MaxAuthFailures = DefaultMaxAuthFailures
	}
	guard := cfg.Guard
	if guard == nil {
		guard = protocols.NewAuthGuard(protocols.DefaultAuthGuardConfig(), nil)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:       cfg,
		store:     store,
		guard:     guard,
		log:       logger.With("component", "pop3"),
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
	}, nil
}

// Serve accepts connections on ln and serves each in its own goroutine
// until Close, then returns nil. Connections that are *tls.Conn (from
// tls.NewListener, possibly wrapped by a protocols.ConnLimiter) are
// served with implicit TLS. Serve closes ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Running out of file descriptors and aborted handshakes are
			// passing troubles: wait a little and accept again.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		if !s.track(conn) {
			conn.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn)
			s.serveConn(conn)
		}()
	}
}

// track registers an accepted connection; it reports false once the
// server is closed.
func (s *Server) track(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(conn net.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
	conn.Close()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the listeners, closes every open connection (sessions end
// without entering the UPDATE state, so nothing is deleted) and waits for
// the connection goroutines to finish. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// serveConn runs one session on conn and closes conn.
func (s *Server) serveConn(conn net.Conn) {
	id := s.nextID.Add(1)
	ip := protocols.RemoteIP(conn.RemoteAddr())
	log := s.log.With("conn", id, "remote_ip", ip.String())
	defer func() {
		// A bug that a client's input reaches ends this connection, not
		// the process and every other session with it. The stack holds
		// no message content.
		if v := recover(); v != nil {
			log.Error("panic serving a connection; it is closed", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			conn.Close()
		}
	}()
	sess := newSession(s, conn, log)
	// The pre-login timeouts of a protocols.TimeoutListener end with the
	// AUTHORIZATION state. The connection asks on this goroutine, the
	// only one that reads it and changes the state.
	protocols.TimeoutConnOf(conn).WatchLogin(func() bool { return sess.state == stateTransaction })
	sess.serve()
}
