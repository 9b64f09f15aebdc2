package imap

import (
	"sync/atomic"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocols"
)

// ratedSession takes a token of the node's command limiter for every
// command the library dispatches to the session. A command over the
// limit is answered NO [LIMIT] (RFC 5530) after the limiter's delay;
// persistent abuse gets BYE and the connection closes. The library
// calls Poll after each successful command as part of it, so a Poll
// counts only when no command came first (NOOP, CHECK).
type ratedSession struct {
	librarySession
	srv    *Server
	conn   *imapserver.Conn
	ranCmd atomic.Bool
}

var _ librarySession = (*ratedSession)(nil)

// rateSession wraps sess when the server limits commands.
func (s *Server) rateSession(conn *imapserver.Conn, sess librarySession) librarySession {
	if !s.cfg.CommandRate.Enabled() {
		return sess
	}
	return &ratedSession{librarySession: sess, srv: s, conn: conn}
}

var (
	errTooManyCommands = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Too many commands, slow down"}
	errClosingAbuse    = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Too many commands, closing"}
)

// allow takes a token; a refusal is the error to answer with. polled
// says the library polls after the command succeeds (observe.go lists
// which do), so that poll is no command of its own.
func (r *ratedSession) allow(polled bool) error {
	ctx := r.srv.baseCtx
	switch r.srv.cfg.CommandRate.Command(ctx, protocols.RemoteIP(r.conn.NetConn().RemoteAddr())) {
	case protocols.CommandRefused:
		return errTooManyCommands
	case protocols.CommandClose:
		r.srv.log.Info("connection closed", "reason", "command_rate")
		_ = r.conn.Bye("Too many commands")
		return errClosingAbuse
	}
	r.ranCmd.Store(polled)
	return nil
}

// Login runs LOGIN within the command rate.
func (r *ratedSession) Login(username, password string) error {
	if err := r.allow(false); err != nil {
		return err
	}
	return r.librarySession.Login(username, password)
}

// Authenticate starts AUTHENTICATE within the command rate.
func (r *ratedSession) Authenticate(mech string) (sasl.Server, error) {
	if err := r.allow(false); err != nil {
		return nil, err
	}
	return r.librarySession.Authenticate(mech)
}

// Unauthenticate runs UNAUTHENTICATE within the command rate.
func (r *ratedSession) Unauthenticate() error {
	if err := r.allow(false); err != nil {
		return err
	}
	return r.librarySession.Unauthenticate()
}

// Select runs SELECT or EXAMINE within the command rate.
func (r *ratedSession) Select(mailbox string, options *imap.SelectOptions) (*imap.SelectData, error) {
	if err := r.allow(false); err != nil {
		return nil, err
	}
	return r.librarySession.Select(mailbox, options)
}

// Create runs CREATE within the command rate.
func (r *ratedSession) Create(mailbox string, options *imap.CreateOptions) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Create(mailbox, options)
}

// Delete runs DELETE within the command rate.
func (r *ratedSession) Delete(mailbox string) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Delete(mailbox)
}

// Rename runs RENAME within the command rate.
func (r *ratedSession) Rename(mailbox, newName string, options *imap.RenameOptions) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Rename(mailbox, newName, options)
}

// Subscribe runs SUBSCRIBE within the command rate.
func (r *ratedSession) Subscribe(mailbox string) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Subscribe(mailbox)
}

// Unsubscribe runs UNSUBSCRIBE within the command rate.
func (r *ratedSession) Unsubscribe(mailbox string) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Unsubscribe(mailbox)
}

// List runs LIST within the command rate.
func (r *ratedSession) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.List(w, ref, patterns, options)
}

// Namespace runs NAMESPACE within the command rate.
func (r *ratedSession) Namespace() (*imap.NamespaceData, error) {
	if err := r.allow(true); err != nil {
		return nil, err
	}
	return r.librarySession.Namespace()
}

// Status runs STATUS within the command rate.
func (r *ratedSession) Status(mailbox string, options *imap.StatusOptions) (*imap.StatusData, error) {
	if err := r.allow(true); err != nil {
		return nil, err
	}
	return r.librarySession.Status(mailbox, options)
}

// Append runs APPEND within the command rate (the library discards the
// literal of a refused one).
func (r *ratedSession) Append(mailbox string, lit imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	if err := r.allow(true); err != nil {
		return nil, err
	}
	return r.librarySession.Append(mailbox, lit, options)
}

// Poll counts as a command only when the library polls for NOOP or
// CHECK, not as the end of another command. The library ends the
// connection on any error of Poll, so a NOOP over the limit is only
// delayed (by the limiter's wait); persistent abuse still gets BYE.
func (r *ratedSession) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if !r.ranCmd.Swap(false) {
		if err := r.allow(false); err == errClosingAbuse {
			return err
		}
	}
	return r.librarySession.Poll(w, allowExpunge)
}

// Idle runs IDLE within the command rate.
func (r *ratedSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Idle(w, stop)
}

// Expunge runs EXPUNGE, UID EXPUNGE or CLOSE within the command rate.
func (r *ratedSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Expunge(w, uids)
}

// Search runs SEARCH within the command rate.
func (r *ratedSession) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	if err := r.allow(true); err != nil {
		return nil, err
	}
	return r.librarySession.Search(kind, criteria, options)
}

// Fetch runs FETCH within the command rate.
func (r *ratedSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Fetch(w, numSet, options)
}

// Store runs STORE within the command rate.
func (r *ratedSession) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Store(w, numSet, flags, options)
}

// Copy runs COPY within the command rate.
func (r *ratedSession) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	if err := r.allow(true); err != nil {
		return nil, err
	}
	return r.librarySession.Copy(numSet, dest)
}

// Move runs MOVE within the command rate.
func (r *ratedSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if err := r.allow(true); err != nil {
		return err
	}
	return r.librarySession.Move(w, numSet, dest)
}
