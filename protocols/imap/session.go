package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The library panics at connection start when a capability is advertised
// and the session lacks the matching interface; these assertions turn that
// into a compile error.
var (
	_ imapserver.SessionIMAP4rev2      = (*session)(nil)
	_ imapserver.SessionNamespace      = (*session)(nil)
	_ imapserver.SessionMove           = (*session)(nil)
	_ imapserver.SessionSASL           = (*session)(nil)
	_ imapserver.SessionUnauthenticate = (*session)(nil)
	_ imapserver.SessionAppendLimit    = (*session)(nil)
)

// session is one IMAP connection. The library calls its methods from one
// goroutine at a time, with one exception: Idle runs on a goroutine of its
// own, and when the connection drops during IDLE the library calls Close
// without waiting for Idle to return. idleMu makes Close wait for it.
type session struct {
	srv  *Server
	conn *imapserver.Conn
	log  *slog.Logger

	idleMu sync.Mutex
	closed bool // set by Close under idleMu

	// ctx is cancelled when the session closes or the server shuts down;
	// every store call derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	// front is the connection's front (nil in none): the CONDSTORE and
	// QRESYNC state and arguments of the running command (condstore.go).
	front *frontConn

	acct    protocols.Account // nil until authenticated
	untrack func()            // unregisters the authenticated session; nil when none
	view    *view             // nil unless a mailbox is selected
}

// opContext returns the context for one store call.
func (s *session) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.srv.cfg.StoreTimeout)
}

// Close ends the session: it stops the mailbox watcher and releases the
// account.
func (s *session) Close() error {
	defer s.srv.sessions.Done()
	s.cancel() // wakes a running Idle
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	s.closed = true
	s.closeView()
	s.releaseAccount()
	s.log.Debug("connection closed")
	return nil
}

func (s *session) closeView() {
	if s.view != nil {
		s.view.close()
		s.view = nil
	}
}

func (s *session) releaseAccount() {
	if s.untrack != nil {
		s.untrack()
		s.untrack = nil
	}
	if s.acct != nil {
		if err := s.acct.Close(); err != nil {
			s.log.Warn("close account", "err", err)
		}
		s.acct = nil
	}
}

// Login checks a user name and password through the shared AuthGuard.
// Every credential failure, a locked-out attempt included, gives the same
// NO [AUTHENTICATIONFAILED]. Its log records carry the client address;
// the user name goes only to the debug records (mail addresses are logged
// at debug level only), the password nowhere.
func (s *session) Login(username, password string) error {
	s.waitIdle()
	ctx, cancel := s.opContext()
	defer cancel()
	remote := s.conn.NetConn().RemoteAddr()
	log := s.log.With("remote", protocols.RemoteIP(remote).String())
	acct, err := s.srv.cfg.Guard.Login(ctx, s.srv.store, protocols.Attempt{
		Protocol: "imap", Remote: remote, Username: username, Password: password,
	})
	switch {
	case err == nil:
	case errors.Is(err, schema.ErrAuthFailed):
		msg := "login failed"
		if errors.Is(err, protocols.ErrTooManyFailures) {
			msg = "login throttled"
		}
		log.Info(msg)
		log.Debug(msg, "user", username)
		return imapserver.ErrAuthFailed
	default:
		log.Warn("login: store failure", "err", err)
		return &imap.Error{
			Type: imap.StatusResponseTypeNo,
			Code: imap.ResponseCodeUnavailable,
			Text: "Temporary failure, try again later",
		}
	}
	s.closeView()
	s.releaseAccount()
	s.acct = acct
	s.untrack = s.srv.cfg.Guard.TrackSession(acct, "imap", remote, s.conn.NetConn())
	if ts, ok := s.conn.NetConn().(interface {
		ConnectionState() (tls.ConnectionState, bool)
	}); ok {
		cs, on := ts.ConnectionState()
		if on {
			log = log.With("tls", tls.VersionName(cs.Version))
		}
	}
	log.Info("login")
	log.Debug("login", "user", acct.Address())
	return nil
}

// AuthenticateMechanisms lists the SASL mechanisms offered once TLS is up.
func (s *session) AuthenticateMechanisms() []string {
	return []string{"PLAIN", "LOGIN"}
}

// Authenticate returns the SASL server for mech. Both mechanisms end in
// Login, so they share its throttling and its single failure answer.
func (s *session) Authenticate(mech string) (sasl.Server, error) {
	switch strings.ToUpper(mech) {
	case "PLAIN":
		return saslServer{sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				// No proxy authorization: answer like any other failure.
				return imapserver.ErrAuthFailed
			}
			return s.Login(username, password)
		})}, nil
	case "LOGIN":
		return saslServer{protocols.NewLoginServer(s.Login)}, nil
	default:
		return nil, &imap.Error{
			Type: imap.StatusResponseTypeNo,
			Text: "Unsupported authentication mechanism",
		}
	}
}

// saslServer makes malformed SASL exchanges answer NO
// [AUTHENTICATIONFAILED] instead of the library's internal-error reply.
type saslServer struct{ sasl.Server }

func (s saslServer) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := s.Server.Next(response)
	if err != nil {
		var imapErr *imap.Error
		if !errors.As(err, &imapErr) {
			err = imapserver.ErrAuthFailed
		}
	}
	return challenge, done, err
}

// Unauthenticate returns the session to the not-authenticated state
// (RFC 8437), releasing the account.
func (s *session) Unauthenticate() error {
	s.waitIdle()
	s.closeView()
	s.releaseAccount()
	return nil
}

// Namespace reports the single personal namespace.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{
		Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: protocols.MailboxDelimiter}},
	}, nil
}

// AppendLimit is the largest message APPEND accepts.
func (s *session) AppendLimit() uint32 { return s.srv.appendLimit() }

// waitIdle waits for a running Idle to return. The library does not wait
// for it when IDLE ends abnormally (a line other than DONE, a read error)
// before reading the next command, so every method that touches session
// state calls this first. An Idle that starts after its IDLE command ended
// sees its stop channel closed and touches nothing.
func (s *session) waitIdle() {
	s.idleMu.Lock()
	s.idleMu.Unlock() // an empty critical section: only the wait matters
}

// account returns the authenticated account; the library only calls
// authenticated-state methods after a successful login.
func (s *session) account() (protocols.Account, error) {
	s.waitIdle()
	if s.acct == nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Not authenticated"}
	}
	return s.acct, nil
}

// selected returns the selected mailbox's view.
func (s *session) selected() (*view, error) {
	s.waitIdle()
	if s.view == nil || s.acct == nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "No mailbox selected"}
	}
	return s.view, nil
}

// storeError turns a store error into what the client is told. Sentinel
// errors become precise NO responses; anything else is logged (with op,
// never with user data) and answered NO [UNAVAILABLE].
func (s *session) storeError(op string, err error) error {
	if err == nil {
		return nil
	}
	var imapErr *imap.Error
	if errors.As(err, &imapErr) {
		return imapErr
	}
	no := func(code imap.ResponseCode, text string) error {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
	}
	switch {
	case errors.Is(err, schema.ErrNoSuchMailbox):
		return no(imap.ResponseCodeNonExistent, "No such mailbox")
	case errors.Is(err, schema.ErrMailboxExists):
		return no(imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	case errors.Is(err, schema.ErrCannotDelete):
		return no(imap.ResponseCodeCannot, "This mailbox cannot be deleted")
	case errors.Is(err, schema.ErrTooLarge):
		return no(imap.ResponseCodeTooBig, "Message too large")
	case errors.Is(err, schema.ErrOverQuota):
		return no(imap.ResponseCodeOverQuota, "Mailbox full: quota exceeded")
	case errors.Is(err, schema.ErrNoSuchMessage):
		return no(imap.ResponseCodeNonExistent, "No such message")
	case errors.Is(err, schema.ErrPermissionDeny):
		return no(imap.ResponseCodeNoPerm, "Permission denied")
	case errors.Is(err, schema.ErrConflict):
		return no(imap.ResponseCodeInUse, "Concurrent modification, try again")
	case errors.Is(err, schema.ErrInvalid):
		// The reason may quote a mailbox name: debug level only.
		s.log.Debug("store rejected request", "op", op, "err", err)
		return no(imap.ResponseCodeCannot, "Request rejected")
	}
	if s.ctx.Err() != nil {
		return no(imap.ResponseCodeUnavailable, "Server shutting down")
	}
	s.log.Warn("store failure", "op", op, "err", err)
	return no(imap.ResponseCodeUnavailable, "Temporary failure, try again later")
}
