package imap

import (
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocols"
)

// Commands lists the command names a Server reports to its
// Config.Observer: the commands the library dispatches to the session,
// plus STARTTLS, ID, COMPRESS, SORT and UID SORT, which the front runs
// (front.go, compress.go, sort.go). The library
// answers CAPABILITY, ENABLE and unknown or malformed commands without
// the session, the front answers LOGOUT, and the front refuses commands it finds
// malformed, so they are not seen; LIST includes LSUB, which the library runs as a LIST. NOOP is
// the mailbox poll the library makes for NOOP and CHECK (and for
// CAPABILITY and ENABLE after login). AUTHENTICATE is reported when its
// SASL exchange ends (as failed when the client abandons it); STARTTLS
// when its handshake ends, timed from the command.
var Commands = []string{
	"LOGIN", "AUTHENTICATE", "UNAUTHENTICATE", "STARTTLS", "ID",
	"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
	"LIST", "NAMESPACE", "STATUS", "APPEND", "IDLE", "NOOP",
	"UNSELECT", "CLOSE", "EXPUNGE", "UID EXPUNGE",
	"SEARCH", "UID SEARCH", "FETCH", "UID FETCH", "STORE", "UID STORE",
	"COPY", "UID COPY", "MOVE", "UID MOVE",
	"COMPRESS", "SORT", "UID SORT", "THREAD", "UID THREAD",
}

// librarySession is every interface the library may find on a session.
type librarySession interface {
	imapserver.SessionIMAP4rev2
	imapserver.SessionSASL
	imapserver.SessionUnauthenticate
	imapserver.SessionAppendLimit
}

var (
	_ librarySession = (*session)(nil)
	_ librarySession = (*loginWatch)(nil)
	_ librarySession = (*observedSession)(nil)
)

// observedSession reports the commands of a session to the observer.
//
// The library calls one session method per command, with three
// exceptions that observedSession untangles: after a command succeeds in
// the authenticated or selected state, the library calls Poll as part of
// it (NOOP and CHECK call only Poll); CLOSE calls Expunge then Unselect;
// and SELECT in the selected state calls Unselect then Select. So a
// successful command that may be followed by more of its own calls is
// kept pending, and reported when the next call shows where it ended.
type observedSession struct {
	inner librarySession
	obs   protocols.CommandObserver
	conn  *imapserver.Conn
	// auth times an AUTHENTICATE exchange, which the library drives
	// after Authenticate returned.
	auth protocols.CommandTimer

	// mu guards the fields below: Idle runs on a goroutine of its own,
	// and the library may call Close while it does.
	mu      sync.Mutex
	pending pendingCommand
	closed  bool
}

// pendingCommand is a command that succeeded and awaits the calls that
// may complete it.
type pendingCommand struct {
	name       string // "" when none
	start, end time.Time
}

// observeSession wraps sess, the session of conn, when the server has an
// observer.
func (s *Server) observeSession(conn *imapserver.Conn, sess librarySession) imapserver.Session {
	if s.cfg.Observer == nil {
		return sess
	}
	return &observedSession{inner: sess, obs: s.cfg.Observer, conn: conn}
}

// settle reports what the start of a new command shows to be over: a
// pending command and an abandoned AUTHENTICATE.
func (o *observedSession) settle() {
	o.mu.Lock()
	p := o.pending
	o.pending = pendingCommand{}
	o.mu.Unlock()
	o.report(p)
	o.auth.Flush(o.obs)
}

// report reports a pending command, if any.
func (o *observedSession) report(p pendingCommand) {
	if p.name != "" {
		o.obs.Command(p.name, true, p.end.Sub(p.start))
	}
}

// begin starts a command: it settles what came before and returns the
// command's start.
func (o *observedSession) begin() time.Time {
	o.settle()
	return time.Now()
}

// done ends the command name started at start with err. A success that
// the library follows with a Poll (polled) is kept pending until then.
func (o *observedSession) done(name string, start time.Time, err error, polled bool) {
	now := time.Now()
	if err != nil || !polled {
		o.obs.Command(name, err == nil, now.Sub(start))
		return
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		o.obs.Command(name, true, now.Sub(start))
		return
	}
	o.pending = pendingCommand{name: name, start: start, end: now}
	o.mu.Unlock()
}

// takePending removes and returns the pending command.
func (o *observedSession) takePending() pendingCommand {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.pending
	o.pending = pendingCommand{}
	return p
}

// Close ends the session; whatever is still pending is reported.
func (o *observedSession) Close() error {
	o.mu.Lock()
	p := o.pending
	o.pending = pendingCommand{}
	o.closed = true
	o.mu.Unlock()
	o.report(p)
	o.auth.Flush(o.obs)
	return o.inner.Close()
}

// Login logs in with LOGIN.
func (o *observedSession) Login(username, password string) error {
	start := o.begin()
	err := o.inner.Login(username, password)
	o.done("LOGIN", start, err, false)
	return err
}

// AuthenticateMechanisms lists the SASL mechanisms offered.
func (o *observedSession) AuthenticateMechanisms() []string { return o.inner.AuthenticateMechanisms() }

// Authenticate starts an AUTHENTICATE exchange, timed until it ends.
func (o *observedSession) Authenticate(mech string) (sasl.Server, error) {
	o.settle()
	o.auth.Start(o.obs, "AUTHENTICATE", time.Now())
	srv, err := o.inner.Authenticate(mech)
	if err != nil {
		o.auth.Finish(o.obs, false, time.Now())
		return nil, err
	}
	return &observedSASL{Server: srv, o: o}, nil
}

// observedSASL ends the timing of an AUTHENTICATE with its exchange.
type observedSASL struct {
	sasl.Server
	o *observedSession
}

// Next runs one step of the exchange.
func (s *observedSASL) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := s.Server.Next(response)
	now := time.Now()
	if done || err != nil {
		s.o.auth.Finish(s.o.obs, err == nil, now)
	} else {
		s.o.auth.Touch(now)
	}
	return challenge, done, err
}

// Unauthenticate returns to the not-authenticated state (RFC 8437).
func (o *observedSession) Unauthenticate() error {
	start := o.begin()
	err := o.inner.Unauthenticate()
	o.done("UNAUTHENTICATE", start, err, false)
	return err
}

// AppendLimit returns the APPEND limit.
func (o *observedSession) AppendLimit() uint32 { return o.inner.AppendLimit() }

// Select selects a mailbox (SELECT, or EXAMINE when read-only). In the
// selected state the library first closed the previous mailbox with
// Unselect: that belongs to this command.
func (o *observedSession) Select(mailbox string, options *imap.SelectOptions) (*imap.SelectData, error) {
	start := time.Now()
	if p := o.takePending(); p.name == "UNSELECT" {
		start = p.start
	} else {
		o.report(p)
	}
	o.settle()
	name := "SELECT"
	if options != nil && options.ReadOnly {
		name = "EXAMINE"
	}
	data, err := o.inner.Select(mailbox, options)
	o.done(name, start, err, false)
	return data, err
}

// Unselect closes the selected mailbox: UNSELECT, CLOSE after its
// Expunge, or the start of a SELECT.
func (o *observedSession) Unselect() error {
	start, name := time.Now(), "UNSELECT"
	if p := o.takePending(); p.name == "EXPUNGE" {
		start, name = p.start, "CLOSE"
	} else {
		o.report(p)
	}
	o.settle()
	err := o.inner.Unselect()
	o.done(name, start, err, true)
	return err
}

// Create creates a mailbox.
func (o *observedSession) Create(mailbox string, options *imap.CreateOptions) error {
	start := o.begin()
	err := o.inner.Create(mailbox, options)
	o.done("CREATE", start, err, true)
	return err
}

// Delete deletes a mailbox.
func (o *observedSession) Delete(mailbox string) error {
	start := o.begin()
	err := o.inner.Delete(mailbox)
	o.done("DELETE", start, err, true)
	return err
}

// Rename renames a mailbox.
func (o *observedSession) Rename(mailbox, newName string, options *imap.RenameOptions) error {
	start := o.begin()
	err := o.inner.Rename(mailbox, newName, options)
	o.done("RENAME", start, err, true)
	return err
}

// Subscribe subscribes to a mailbox.
func (o *observedSession) Subscribe(mailbox string) error {
	start := o.begin()
	err := o.inner.Subscribe(mailbox)
	o.done("SUBSCRIBE", start, err, true)
	return err
}

// Unsubscribe unsubscribes from a mailbox.
func (o *observedSession) Unsubscribe(mailbox string) error {
	start := o.begin()
	err := o.inner.Unsubscribe(mailbox)
	o.done("UNSUBSCRIBE", start, err, true)
	return err
}

// List lists mailboxes (LIST and LSUB).
func (o *observedSession) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	start := o.begin()
	err := o.inner.List(w, ref, patterns, options)
	o.done("LIST", start, err, true)
	return err
}

// Namespace answers NAMESPACE.
func (o *observedSession) Namespace() (*imap.NamespaceData, error) {
	start := o.begin()
	data, err := o.inner.Namespace()
	o.done("NAMESPACE", start, err, true)
	return data, err
}

// Status answers STATUS.
func (o *observedSession) Status(mailbox string, options *imap.StatusOptions) (*imap.StatusData, error) {
	start := o.begin()
	data, err := o.inner.Status(mailbox, options)
	o.done("STATUS", start, err, true)
	return data, err
}

// Append appends a message.
func (o *observedSession) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	start := o.begin()
	data, err := o.inner.Append(mailbox, r, options)
	o.done("APPEND", start, err, true)
	return data, err
}

// Poll reports mailbox changes: the end of the command before it, or a
// NOOP (or CHECK) of its own.
func (o *observedSession) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	p := o.takePending()
	start := time.Now()
	o.settle()
	err := o.inner.Poll(w, allowExpunge)
	if p.name == "" {
		o.obs.Command("NOOP", err == nil, time.Since(start))
		return err
	}
	o.obs.Command(p.name, err == nil, time.Since(p.start))
	return err
}

// Idle waits for mailbox changes until stop; the library calls it on a
// goroutine of its own.
func (o *observedSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	start := o.begin()
	err := o.inner.Idle(w, stop)
	o.done("IDLE", start, err, true)
	return err
}

// Expunge expunges deleted messages (EXPUNGE, UID EXPUNGE, or the first
// half of CLOSE).
func (o *observedSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	start := o.begin()
	name := "EXPUNGE"
	if uids != nil {
		name = "UID EXPUNGE"
	}
	err := o.inner.Expunge(w, uids)
	o.done(name, start, err, true)
	return err
}

// Search answers SEARCH and UID SEARCH.
func (o *observedSession) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	start := o.begin()
	name := "SEARCH"
	if kind == imapserver.NumKindUID {
		name = "UID SEARCH"
	}
	data, err := o.inner.Search(kind, criteria, options)
	o.done(name, start, err, true)
	return data, err
}

// Fetch answers FETCH and UID FETCH.
func (o *observedSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	start := o.begin()
	err := o.inner.Fetch(w, numSet, options)
	o.done(uidName(numSet, "FETCH", "UID FETCH"), start, err, true)
	return err
}

// Store answers STORE and UID STORE.
func (o *observedSession) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	start := o.begin()
	err := o.inner.Store(w, numSet, flags, options)
	o.done(uidName(numSet, "STORE", "UID STORE"), start, err, true)
	return err
}

// Copy answers COPY and UID COPY.
func (o *observedSession) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	start := o.begin()
	data, err := o.inner.Copy(numSet, dest)
	o.done(uidName(numSet, "COPY", "UID COPY"), start, err, true)
	return data, err
}

// Move answers MOVE and UID MOVE.
func (o *observedSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	start := o.begin()
	err := o.inner.Move(w, numSet, dest)
	o.done(uidName(numSet, "MOVE", "UID MOVE"), start, err, true)
	return err
}

// uidName returns uid when numSet holds UIDs, else seq.
func uidName(numSet imap.NumSet, seq, uid string) string {
	if _, ok := numSet.(imap.UIDSet); ok {
		return uid
	}
	return seq
}
