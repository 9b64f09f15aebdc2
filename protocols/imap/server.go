package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocols"
)

// Defaults for the zero values of Config.
const (
	// DefaultMaxMessageSize is the largest message delivery accepts (the
	// SMTP limit); APPEND accepts that plus protocols.TraceHeadroom.
	DefaultMaxMessageSize = 50 << 20
	// DefaultBodyStructureCacheBytes bounds the BODYSTRUCTURE cache.
	DefaultBodyStructureCacheBytes = 16 << 20
	// DefaultSearchCacheBytes bounds the cache of opened search records.
	DefaultSearchCacheBytes = 128 << 20
	// DefaultStoreTimeout bounds one call into the store.
	DefaultStoreTimeout = time.Minute
)

// Config configures a Server. Zero values of the limits mean the defaults
// above.
type Config struct {
	// Hostname names this node in logs. (The greeting text is fixed by the
	// IMAP library.)
	Hostname string
	// TLS enables STARTTLS. Nil disables it, which is meant for tests: an
	// implicit-TLS listener still works without it.
	TLS *tls.Config
	// AllowInsecureAuth lets clients log in without TLS (tests only).
	// Otherwise LOGINDISABLED is advertised until TLS is up.
	AllowInsecureAuth bool
	// Guard throttles failed logins; it is shared by every frontend.
	Guard *protocols.AuthGuard
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Observer, if set, is told about every command of Commands.
	Observer protocols.CommandObserver
	// CommandRate, if set, limits the commands per client address (shared
	// by every frontend of the node): see ratedSession.
	CommandRate *protocols.CommandLimiter

	// MaxMessageSize is the largest message delivery accepts (the SMTP
	// limit). APPEND accepts, and APPENDLIMIT advertises, that plus
	// protocols.TraceHeadroom, so whatever was delivered can be uploaded
	// again.
	MaxMessageSize int64
	// BodyStructureCacheBytes bounds the in-memory BODYSTRUCTURE cache; a
	// negative value disables it.
	BodyStructureCacheBytes int64
	// SearchCacheBytes bounds the in-memory cache of opened search
	// records (searchindex.go), shared by the server's sessions; a
	// negative value disables it.
	SearchCacheBytes int64
	// StoreTimeout bounds every store call made for a command.
	StoreTimeout time.Duration
}

// Server is an IMAP server over a protocols.Store.
type Server struct {
	cfg     Config
	store   protocols.Store
	log     *slog.Logger
	imap    *imapserver.Server
	bsCache *bodyStructureCache
	// recCache holds opened search records (searchindex.go).
	recCache *recordCache

	baseCtx context.Context
	cancel  context.CancelFunc
	nextID  atomic.Uint64
	// lib hands the fronts' inner connections to the library's server,
	// which serves them until libDone is closed (front.go).
	lib     *pipeListener
	libDone chan struct{}
	// greeting is the library's greeting line as it first sent it, before
	// the relay's rewriting. It is the same for every connection (the
	// capabilities of a connection that has not logged in, under fixed
	// options), so the fronts of later connections send it themselves
	// as soon as they accept, without waiting for the library to start
	// a session: the greeting and the STARTTLS handshake no longer
	// wait behind three goroutine hand-offs (front.go, serveFront).
	greeting atomic.Pointer[[]byte]

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	// frontConns are the open client connections (front.go); fronts
	// counts their goroutines.
	frontConns map[*frontConn]struct{}
	fronts     sync.WaitGroup
	sessions   sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// capabilities returns what the server advertises beyond what the library
// always adds (SASL-IR, LITERAL-, ENABLE, IDLE, UNSELECT, UTF8=ACCEPT,
// STARTTLS, AUTH=, APPENDLIMIT=). The session type implements every
// interface the library requires for them (asserted in session.go).
func capabilities() imap.CapSet {
	caps := make(imap.CapSet)
	for _, c := range []imap.Cap{
		imap.CapIMAP4rev1,
		imap.CapIMAP4rev2,
		imap.CapNamespace,
		imap.CapUIDPlus,
		imap.CapMove,
		imap.CapSpecialUse,
		imap.CapCreateSpecialUse,
		imap.CapListExtended,
		imap.CapListStatus,
		imap.CapESearch,
		imap.CapSearchRes,
		imap.CapStatusSize,
		imap.CapBinary,
		imap.CapChildren,
		imap.CapLiteralPlus,
		imap.CapUnauthenticate,
	} {
		caps[c] = struct{}{}
	}
	return caps
}

// NewServer returns a server that serves store; it does not listen yet.
func NewServer(cfg Config, store protocols.Store) (*Server, error) {
	if store == nil {
		return nil, errors.New("imap: nil store")
	}
	if cfg.Guard == nil {
		return nil, errors.New("imap: config has no auth guard")
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxMessageSize < 0 || protocols.AppendLimit(cfg.MaxMessageSize) > math.MaxUint32 {
		return nil, fmt.Errorf("imap: max message size %d out of range", cfg.MaxMessageSize)
	}
	if cfg.SearchCacheBytes == 0 {
		cfg.SearchCacheBytes = DefaultSearchCacheBytes
	}
	if cfg.BodyStructureCacheBytes == 0 {
		cfg.BodyStructureCacheBytes = DefaultBodyStructureCacheBytes
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = DefaultStoreTimeout
	}
	if cfg.TLS != nil {
		cfg.TLS = cfg.TLS.Clone()
		if cfg.TLS.MinVersion < tls.VersionTLS12 {
			cfg.TLS.MinVersion = tls.VersionTLS12
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "imap")
	if cfg.Hostname != "" {
		logger = logger.With("host", cfg.Hostname)
	}

	s := &Server{
		cfg:        cfg,
		store:      store,
		log:        logger,
		bsCache:    newBodyStructureCache(cfg.BodyStructureCacheBytes),
		recCache:   newRecordCache(cfg.SearchCacheBytes),
		lib:        newPipeListener(),
		libDone:    make(chan struct{}),
		listeners:  make(map[net.Listener]struct{}),
		frontConns: make(map[*frontConn]struct{}),
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())

	// The library sees only the inner ends of the fronts' pipes: it never
	// runs TLS (the front owns STARTTLS) and may always authenticate
	// (the front refuses LOGIN and AUTHENTICATE where TLS is required,
	// and rewrites the capabilities the library advertises).
	s.imap = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         capabilities(),
		Logger:       libraryLogger{logger},
		InsecureAuth: true,
	})
	go func() {
		defer close(s.libDone)
		if err := s.imap.Serve(s.lib); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Debug("imap library server ended", "err", err)
		}
	}()
	return s, nil
}

// Serve accepts connections on ln until Close. For implicit TLS, ln must
// yield *tls.Conn connections (tls.NewListener); the front recognises
// TLS by that type. It returns nil once the server is closed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	err := s.acceptFronts(ln)
	s.mu.Lock()
	delete(s.listeners, ln)
	closed := s.closed
	s.mu.Unlock()
	if closed || errors.Is(err, net.ErrClosed) {
		ln.Close()
		return nil
	}
	if err != nil {
		return fmt.Errorf("imap serve: %w", err)
	}
	return nil
}

// Close stops accepting connections, closes the open ones and waits for
// their sessions to end. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		var errs []error
		for ln := range s.listeners {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		for f := range s.frontConns {
			f.closeClient()
		}
		s.mu.Unlock()
		// Closing the library's connections ends the fronts' relays.
		if err := s.imap.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		s.lib.Close()
		// Cancel store calls still running for closed connections, then
		// wait for every front and session to end.
		s.cancel()
		s.fronts.Wait()
		s.sessions.Wait()
		<-s.libDone
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("imap close: %w", err)
		}
	})
	return s.closeErr
}

// newSession is called by the library for every accepted connection.
func (s *Server) newSession(conn *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	s.sessions.Add(1)
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(s.baseCtx)
	var id uint64
	ic, _ := conn.NetConn().(*innerConn)
	if ic != nil {
		id = ic.f.connID
	}
	sess := &session{
		srv:    s,
		conn:   conn,
		ctx:    ctx,
		cancel: cancel,
		log:    s.log.With("conn", id),
	}
	if ic != nil {
		// The front runs SORT on this session's selected mailbox.
		ic.f.mu.Lock()
		ic.f.sess = sess
		ic.f.mu.Unlock()
		sess.front = ic.f
	}
	sess.log.Debug("connection opened", "remote", protocols.RemoteIP(conn.NetConn().RemoteAddr()).String())
	// Found now, before STARTTLS may hide the connection under a
	// library type.
	if tc := protocols.TimeoutConnOf(conn.NetConn()); tc != nil {
		return s.observeSession(conn, s.rateSession(conn, &loginWatch{session: sess, tc: tc})), nil, nil
	}
	return s.observeSession(conn, s.rateSession(conn, sess)), nil, nil
}

// loginWatch tells the connection's protocols.TimeoutConn when the
// client logs in or out, so that the pre-login timeouts stop or start
// again. It has every method of *session, so the library sees the same
// extensions.
type loginWatch struct {
	*session
	tc *protocols.TimeoutConn
}

var (
	_ imapserver.SessionIMAP4rev2      = (*loginWatch)(nil)
	_ imapserver.SessionNamespace      = (*loginWatch)(nil)
	_ imapserver.SessionMove           = (*loginWatch)(nil)
	_ imapserver.SessionSASL           = (*loginWatch)(nil)
	_ imapserver.SessionUnauthenticate = (*loginWatch)(nil)
	_ imapserver.SessionAppendLimit    = (*loginWatch)(nil)
)

// Login logs in with LOGIN.
func (w *loginWatch) Login(username, password string) error {
	if err := w.session.Login(username, password); err != nil {
		return err
	}
	w.tc.SetLoggedIn(true)
	return nil
}

// Authenticate starts an AUTHENTICATE exchange.
func (w *loginWatch) Authenticate(mech string) (sasl.Server, error) {
	s, err := w.session.Authenticate(mech)
	if err != nil {
		return nil, err
	}
	return protocols.NotifySASL(s, func() { w.tc.SetLoggedIn(true) }), nil
}

// Unauthenticate returns to the not-authenticated state (RFC 8437).
func (w *loginWatch) Unauthenticate() error {
	if err := w.session.Unauthenticate(); err != nil {
		return err
	}
	w.tc.SetLoggedIn(false)
	return nil
}

// appendLimit is the largest message APPEND accepts, as APPENDLIMIT
// advertises it.
func (s *Server) appendLimit() uint32 { return uint32(protocols.AppendLimit(s.cfg.MaxMessageSize)) }

// libraryLogger adapts the library's Printf logging to slog. Read errors
// are routine (clients that disconnect, garbage on the wire) and logged at
// debug level; the rest are server-side problems.
type libraryLogger struct{ l *slog.Logger }

func (l libraryLogger) Printf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	switch {
	case strings.HasPrefix(format, "failed to read command"),
		strings.HasPrefix(format, "failed to write greeting"):
		l.l.Debug("imap library", "detail", msg)
	case strings.HasPrefix(format, "panic"):
		l.l.Error("imap library", "detail", msg)
	default:
		l.l.Warn("imap library", "detail", msg)
	}
}
