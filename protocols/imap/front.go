package imap

import (
	"bufio"
	"compress/flate"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// The front: our own command loop in front of go-imap's server (see
// docs/architecture.md, "IMAP: the library's limits"). It owns the client
// connection: it reads and checks every command (imapwire), answers the
// ones it owns (ID, STARTTLS, LOGOUT, refusals) and forwards the others, well
// formed and without synchronizing literals, to the library's server on
// the inner end of an in-memory pipe; a relay copies the library's output
// back, rewriting its capability lists. Commands run one at a time, as in
// the library: the next is read once the library has answered the last,
// so the front only writes when the library is silent.

const (
	// frontReadBuffer and relayBuffer size the buffers of the two
	// directions; the relay forwards whole buffers, not lines.
	frontReadBuffer = 16 << 10
	relayBuffer     = 32 << 10
	// maxContinuationLine bounds a line sent after a continuation
	// request (SASL responses, IDLE's DONE).
	maxContinuationLine = 16 << 10
	// startTLSTimeout bounds the STARTTLS handshake under the
	// listener's own handshake bound (protocols.ConnTimeouts).
	startTLSTimeout = 30 * time.Second
	// idMaxPairs, idMaxField and idMaxValue are RFC 2971's bounds on the
	// client's ID list (section 3.3).
	idMaxPairs = 30
	idMaxField = 30
	idMaxValue = 1024
	// clientWriteTimeout bounds one write to the client (the library's
	// bound for writing a literal).
	clientWriteTimeout = 5 * time.Minute
	// lingerTime and lingerBytes bound what is read and dropped after a
	// BYE of the front's (frontConn.bye).
	lingerTime  = time.Second
	lingerBytes = 64 << 10
	// maxSearchNesting bounds the OR and NOT keys of one SEARCH, which
	// nest like parentheses.
	maxSearchNesting = 256
)

// pipeListener hands the inner ends of the fronts' pipes to the library.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next inner connection.
func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// hand gives c to the library; false once the listener is closed.
func (l *pipeListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// Close stops Accept; it is idempotent.
func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

// Addr is a placeholder address: the listener is in memory.
func (l *pipeListener) Addr() net.Addr { return pipeAddr("imap-front") }

// pipeAddr names an in-memory endpoint: the library's listener, an end
// of a front's pipe (the session sees the client's address through
// innerConn instead).
type pipeAddr string

func (pipeAddr) Network() string  { return "pipe" }
func (a pipeAddr) String() string { return string(a) }

// innerConn is the library's end of a front's pipe. It answers for the
// client's connection where the session looks at it: the remote address,
// the TLS state and, through Unwrap, the accepted connection (for
// protocols.TimeoutConnOf). Closing it ends the session and, through the
// relay, the client's connection.
type innerConn struct {
	net.Conn
	f *frontConn
}

// RemoteAddr returns the client's address.
func (c *innerConn) RemoteAddr() net.Addr { return c.f.remote }

// Unwrap returns the client's connection as it is now (a *tls.Conn after
// STARTTLS).
func (c *innerConn) Unwrap() net.Conn { return c.f.clientConn() }

// ConnectionState returns the TLS state of the client's connection, and
// false when it has no TLS (yet).
func (c *innerConn) ConnectionState() (tls.ConnectionState, bool) {
	tc, ok := c.f.clientConn().(*tls.Conn)
	if !ok {
		return tls.ConnectionState{}, false
	}
	return tc.ConnectionState(), true
}

// relayEvent is what the relay saw the library answer.
type relayEvent struct {
	// cont: a continuation request; otherwise the tagged completion.
	cont bool
	// status is OK, NO or BAD for a completion; "" for the greeting.
	status string
}

// frontConn is one client connection.
type frontConn struct {
	srv    *Server
	connID uint64
	log    *slog.Logger
	remote net.Addr
	rd     *imapwire.Reader
	// pipe is the front's end of the pipe to the library.
	pipe net.Conn
	// br is the pooled buffer rd reads the client through (after
	// COMPRESS, the inflater reads through it); the front goroutine's
	// alone.
	br *bufio.Reader
	// accepted is the connection as accepted, under any TLS: closing it
	// ends the client's connection without taking mu (recoverPanic).
	accepted net.Conn
	events   chan relayEvent
	// quit is closed when the front ends, so the relay never waits for
	// it; relayDone is closed when the relay has ended.
	quit      chan struct{}
	relayDone chan struct{}

	// mu guards conn (replaced by STARTTLS), authenticated, compressed,
	// closed and sess.
	mu   sync.Mutex
	conn net.Conn
	// sess is the library's session of this connection (set when the
	// library opens it), for the commands the front runs on the
	// selected mailbox (SORT, THREAD).
	sess          *session
	authenticated bool
	compressed    bool
	// utf8Accept: the client has enabled UTF8=ACCEPT (utf8accept.go).
	utf8Accept bool
	closed     bool
	// cs is the connection's CONDSTORE and QRESYNC state (condstore.go).
	cs condState
	// routes are the placeholders of the running command's routed
	// ENVELOPE addresses (envroute.go).
	routes routeTokens
	// tag is the tag of the command the library is running, "" when
	// none.
	tag string

	// greetedEarly: the front sent the greeting itself, from the
	// library's greeting of an earlier connection (Server.greeting), so
	// the relay drops the library's own. Set before the relay starts.
	greetedEarly bool
	// libGreeted: the front has had the relay's greeting event (front
	// goroutine only).
	libGreeted bool

	// wmu serialises writes to the client: the relay's and the front's.
	// After COMPRESS, bw writes into zw, the deflater (compress.go).
	// bw is nil once the connection has ended and given it back to its
	// pool.
	wmu sync.Mutex
	bw  *bufio.Writer
	zw  *flate.Writer
}

// inflight returns the tag of the command the library is running.
func (f *frontConn) inflight() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tag
}

// setInflight records the command the library runs ("" for none).
func (f *frontConn) setInflight(tag string) {
	f.mu.Lock()
	f.tag = tag
	f.mu.Unlock()
}

// clientConn returns the client's connection.
func (f *frontConn) clientConn() net.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conn
}

// isTLS reports whether the client's connection runs TLS.
func (f *frontConn) isTLS() bool {
	_, ok := f.clientConn().(*tls.Conn)
	return ok
}

// mayAuthenticate reports whether LOGIN and AUTHENTICATE are allowed.
func (f *frontConn) mayAuthenticate() bool {
	return f.srv.cfg.AllowInsecureAuth || f.isTLS()
}

// mayStartTLS reports whether STARTTLS is offered: before login, on a
// connection without TLS, and not under COMPRESS (a plaintext session
// that logged in, compressed and unauthenticated: the client's TLS
// records would arrive inside the deflate stream, which RFC 4978 section
// 4 rules out by having TLS negotiated first).
func (f *frontConn) mayStartTLS() bool {
	f.mu.Lock()
	authed, compressed := f.authenticated, f.compressed
	f.mu.Unlock()
	return f.srv.cfg.TLS != nil && !authed && !compressed && !f.isTLS()
}

// connWriter writes to the client's current connection, each write
// bounded by clientWriteTimeout: a client that stops reading is cut off,
// as the library's own write deadlines did when it owned the connection.
type connWriter struct{ f *frontConn }

func (w connWriter) Write(p []byte) (int, error) {
	c := w.f.clientConn()
	if err := c.SetWriteDeadline(time.Now().Add(clientWriteTimeout)); err != nil {
		return 0, err
	}
	return c.Write(p)
}

// serveFront runs the front of one accepted connection until it closes.
func (s *Server) serveFront(conn net.Conn, id uint64) {
	pipeFront, pipeInner := newPipe()
	f := &frontConn{
		srv:       s,
		connID:    id,
		log:       s.log.With("conn", id),
		remote:    conn.RemoteAddr(),
		pipe:      pipeFront,
		events:    make(chan relayEvent),
		quit:      make(chan struct{}),
		relayDone: make(chan struct{}),
		conn:      conn,
		accepted:  conn,
	}
	defer f.recoverPanic("commands")
	f.br = frontReaders.Get().(*bufio.Reader)
	f.br.Reset(conn)
	f.bw = frontWriters.Get().(*bufio.Writer)
	f.bw.Reset(connWriter{f})
	f.rd = imapwire.NewReader(f.br, imapwire.Limits{})
	f.rd.Continue = func() error { return f.writeLine("+ Ready for literal data") }
	f.rd.Stream = func(cmd *imapwire.Command, _ imapwire.LiteralHeader) bool {
		// The message of APPEND: every literal after the mailbox name.
		return cmd.Name == "APPEND" && len(cmd.Args) > 0
	}
	inner := &innerConn{Conn: pipeInner, f: f}
	defer f.releaseBuffers()
	if !s.trackFront(f, true) {
		pipeFront.Close()
		pipeInner.Close()
		conn.Close()
		return
	}
	defer s.trackFront(f, false)
	// Greet at once when the library's greeting is known: the client
	// need not wait while the library starts the session (see
	// earlyGreeting). Decided before the relay starts, which reads it.
	greeting := s.greeting.Load()
	f.greetedEarly = greeting != nil
	go f.relay()
	defer f.teardown()
	if greeting != nil {
		f.wmu.Lock()
		_, err := f.bw.Write(f.rewriteCaps(*greeting))
		if err == nil {
			err = f.flushLocked()
		}
		f.wmu.Unlock()
		if err != nil {
			return
		}
	}
	if !s.lib.hand(inner) {
		pipeInner.Close()
		return
	}
	if greeting == nil {
		// The greeting comes first.
		if !f.awaitLibraryGreeting() {
			return
		}
	}
	f.serve()
}

// Pools of the buffers every connection has: its front's reader and
// writer and its relay's reader, 80 KiB together, two thirds of what a
// connect allocated. A client that connects, checks its mail and leaves
// (most do) made them garbage at once, and the collections they caused
// showed in the connects' slowest percentile.
var (
	frontReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, frontReadBuffer) }}
	frontWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, relayBuffer) }}
	relayReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, relayBuffer) }}
)

// releaseBuffers gives the front's reader and writer back to their pools
// once the front and its relay have ended. A library goroutine still
// finishing a command then finds bw nil and its write fails (writeLine),
// so no byte of this connection reaches another's; one that holds wmu
// at this moment keeps the writer, which is left to the collector.
func (f *frontConn) releaseBuffers() {
	f.br.Reset(nil)
	frontReaders.Put(f.br)
	f.br = nil
	if !f.wmu.TryLock() {
		return
	}
	bw := f.bw
	f.bw = nil
	f.wmu.Unlock()
	bw.Reset(nil)
	frontWriters.Put(bw)
}

// recoverPanic, deferred first in each goroutine of a connection, keeps a
// bug that a client's input reaches from ending the process and every
// other session with it: the panic is logged with its stack (which holds
// no message content) and the connection closed. The library recovers
// panics in its own goroutine (its commands, our session's methods) the
// same way; the front's goroutines are ours.
func (f *frontConn) recoverPanic(where string) {
	v := recover()
	if v == nil {
		return
	}
	f.log.Error("panic serving a connection; it is closed", "goroutine", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	f.accepted.Close()
	f.pipe.Close()
}

// awaitLibraryGreeting waits until the relay has seen the library's
// greeting (and passed it on, unless the front greeted already); false
// when the library ended the connection instead.
func (f *frontConn) awaitLibraryGreeting() bool {
	if f.libGreeted {
		return true
	}
	if _, ok := <-f.events; !ok {
		return false
	}
	f.libGreeted = true
	return true
}

// trackFront adds f to the server's open fronts (add) or removes it;
// adding fails once the server is closed.
func (s *Server) trackFront(f *frontConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.frontConns, f)
		return true
	}
	if s.closed {
		return false
	}
	s.frontConns[f] = struct{}{}
	return true
}

// teardown closes both ends and waits for the relay.
func (f *frontConn) teardown() {
	close(f.quit)
	f.pipe.Close()
	f.closeClient()
	<-f.relayDone
}

// closeClient closes the client's connection once.
func (f *frontConn) closeClient() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		f.conn.Close()
	}
}

// serve reads and runs commands until the connection ends.
func (f *frontConn) serve() {
	for {
		cmd, err := f.rd.ReadCommand()
		if err != nil {
			var we *imapwire.Error
			if !errors.As(err, &we) {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					f.log.Debug("client read ended", "err", err)
				}
				return
			}
			if !we.Fatal {
				if ok, alive := f.rated(we.Tag); !alive {
					return
				} else if !ok {
					continue
				}
			}
			if !f.refuse(we) {
				return
			}
			continue
		}
		if !f.run(cmd) {
			return
		}
	}
}

// refuse answers a command the reader or the front's checks refused. It
// returns false when the connection must end.
func (f *frontConn) refuse(we *imapwire.Error) bool {
	f.log.Debug("client error: command refused", "reason", we.Text)
	tag := we.Tag
	if tag == "" {
		tag = "*"
	}
	typ, code := "BAD", ""
	if we.No {
		typ = "NO"
	}
	if we.Code != "" {
		code = "[" + we.Code + "] "
	} else if !we.No {
		code = "[CLIENTBUG] "
	}
	if we.Fatal {
		// RFC 7888 section 4: the rest of the command is too large to
		// read and drop, so the connection ends.
		if we.Tag != "" {
			_ = f.writeLine(tag + " " + typ + " " + code + we.Text)
		}
		f.bye("Too much data to skip")
		return false
	}
	return f.writeLine(tag+" "+typ+" "+code+we.Text) == nil
}

// rated takes a token of the node's command limiter for a command the
// front answers itself (ID, STARTTLS, refusals), so that these too are
// bounded per client address; the commands the library runs take theirs
// in ratedSession. ok false: the command was answered NO [LIMIT] (alive)
// or the connection ends (not alive).
func (f *frontConn) rated(tag string) (ok, alive bool) {
	lim := f.srv.cfg.CommandRate
	if !lim.Enabled() {
		return true, true
	}
	switch lim.Command(f.srv.baseCtx, protocols.RemoteIP(f.remote)) {
	case protocols.CommandRefused:
		if tag == "" {
			tag = "*"
		}
		return false, f.writeLine(tag+" NO [LIMIT] Too many commands, slow down") == nil
	case protocols.CommandClose:
		f.srv.log.Info("connection closed", "reason", "command_rate")
		f.bye("Too many commands")
		return false, false
	}
	return true, true
}

// bye ends the connection with BYE text. It then reads and drops what
// the client still sends, for a moment and a bounded amount, so that
// closing with unread input does not reset the connection before the
// client has read the BYE.
func (f *frontConn) bye(text string) {
	if f.writeLine("* BYE "+text) != nil {
		return
	}
	c := f.clientConn()
	if c.SetReadDeadline(time.Now().Add(lingerTime)) == nil {
		_, _ = io.CopyN(io.Discard, f.rd.Buffered(), lingerBytes)
	}
}

// writeLine writes one response line of the front's own.
func (f *frontConn) writeLine(s string) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.bw == nil {
		return net.ErrClosed
	}
	f.bw.WriteString(s)
	f.bw.WriteString("\r\n")
	return f.flushLocked()
}

// testHookRun, when set, is called with each command the front runs.
var testHookRun func(cmd *imapwire.Command)

// run runs one command; false ends the connection.
func (f *frontConn) run(cmd *imapwire.Command) bool {
	if testHookRun != nil {
		testHookRun(cmd)
	}
	if (cmd.Name == "LIST" || cmd.Name == "LSUB") && f.listUndecodable(cmd) != nil && f.isAuthenticated() {
		// No mailbox has a name that does not decode, so a reference or
		// pattern that does not matches nothing: an empty answer, as
		// Dovecot gives (imaptest's "atoms" test lists such a pattern).
		if ok, alive := f.rated(cmd.Tag); !ok {
			return alive
		}
		return f.answerer(cmd)("OK " + cmd.Name + " completed (no mailbox name matches)")
	}
	if we := f.check(cmd); we != nil {
		if cmd.Pending != nil && !f.skipPending(cmd, we) {
			return false
		}
		if ok, alive := f.rated(cmd.Tag); !ok {
			return alive
		}
		return f.refuse(we)
	}
	switch {
	case cmd.Name == "STATUS" && mentionsModSeq(cmd.Args, "HIGHESTMODSEQ"),
		(cmd.Name == "SEARCH" || cmd.Name == "UID SEARCH") && (mentionsModSeq(cmd.Args, "MODSEQ") || returnHasPartial(cmd.Args)):
		if ok, alive := f.rated(cmd.Tag); !ok {
			return alive
		}
		if cmd.Name == "STATUS" {
			return f.status(cmd)
		}
		return f.search(cmd)
	}
	wire := cmd.Wire
	switch cmd.Name {
	case "ENABLE":
		var answered, alive bool
		if wire, answered, alive = f.enable(cmd); answered {
			return alive
		}
	case "SEARCH", "UID SEARCH":
		wire = librarySearchWire(cmd)
	case "SELECT", "EXAMINE", "FETCH", "UID FETCH", "STORE", "UID STORE", "LIST":
		w, we := f.prepareExt(cmd)
		if we != nil {
			if ok, alive := f.rated(cmd.Tag); !ok {
				return alive
			}
			return f.refuse(we)
		}
		if w == nil {
			return false
		}
		wire = w
		defer f.setExt(cmdExt{})
	case "NOOP", "CHECK":
		f.setExt(cmdExt{poll: true})
		defer f.setExt(cmdExt{})
	}
	switch cmd.Name {
	case "ID", "STARTTLS", "COMPRESS", "SORT", "UID SORT", "THREAD", "UID THREAD", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA":
		if ok, alive := f.rated(cmd.Tag); !ok {
			return alive
		}
		switch cmd.Name {
		case "GETQUOTA", "GETQUOTAROOT", "SETQUOTA":
			return f.quota(cmd)
		case "ID":
			return f.id(cmd)
		case "COMPRESS":
			return f.compress(cmd)
		case "SORT", "UID SORT":
			return f.sort(cmd)
		case "THREAD", "UID THREAD":
			return f.thread(cmd)
		}
		return f.startTLS(cmd)
	}
	if cmd.Name == "LOGOUT" && len(cmd.Args) == 0 {
		return f.logout(cmd)
	}
	f.setInflight(cmd.Tag)
	defer f.setInflight("")
	wire = f.escapeNames(cmd, wire)
	if cmd.Pending != nil {
		cmd.Wire = wire
		return f.appendMessages(cmd) // multiappend.go
	}
	if err := f.forward(wire); err != nil {
		return false
	}
	return f.await(cmd)
}

// logout answers LOGOUT (RFC 9051 section 6.1.3: BYE, then the
// completion) and ends the connection; the pipe's close ends the
// library's session, which releases the account as after the library's
// own LOGOUT. That one first sends the selected mailbox's pending
// updates, of no use to a client that leaves, and its answer comes back
// through two more goroutines and the relay. It always returns false.
func (f *frontConn) logout(cmd *imapwire.Command) bool {
	_ = f.writeLine("* BYE Logging out\r\n" + cmd.Tag + " OK LOGOUT completed")
	return false
}

// forward writes bytes to the library, once it has greeted: the first
// event of the relay is the greeting, so commands are forwarded after it.
func (f *frontConn) forward(b []byte) error {
	if !f.awaitLibraryGreeting() {
		return net.ErrClosed
	}
	_, err := f.pipe.Write(b)
	return err
}

// await relays the library's work on cmd until its completion, feeding
// it the client's lines after continuation requests (AUTHENTICATE's SASL
// exchange, IDLE's DONE). False ends the connection.
func (f *frontConn) await(cmd *imapwire.Command) bool {
	for {
		ev, ok := <-f.events
		if !ok {
			return false
		}
		if !ev.cont {
			f.completed(cmd, ev.status)
			return true
		}
		if cmd.Name != "AUTHENTICATE" && cmd.Name != "IDLE" {
			f.log.Warn("imap library asked for a continuation of " + cmd.Name)
			return false
		}
		line, err := f.rd.ReadLine(maxContinuationLine)
		if err != nil {
			if errors.Is(err, imapwire.ErrTooLong) {
				f.bye("Line too long")
			}
			return false
		}
		if err := f.forward(append(line, '\r', '\n')); err != nil {
			return false
		}
	}
}

// completed notes what a completed command changed in the state the
// front follows.
func (f *frontConn) completed(cmd *imapwire.Command, status string) {
	if status != "OK" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch cmd.Name {
	case "LOGIN", "AUTHENTICATE":
		f.authenticated = true
	case "UNAUTHENTICATE":
		f.authenticated = false
		// RFC 8437 section 3: what ENABLE turned on is off again.
		f.cs.condstore, f.cs.qresync = false, false
		f.utf8Accept = false
	}
}

// check refuses, before anything is forwarded, what the library cannot
// answer as a client error: mailbox names that do not decode, searches
// nested too deep, authentication before TLS where it is required.
func (f *frontConn) check(cmd *imapwire.Command) *imapwire.Error {
	bad := func(text string) *imapwire.Error { return &imapwire.Error{Tag: cmd.Tag, Text: text} }
	top := topArgs(cmd.Args)
	mailboxAt := func(idx ...int) *imapwire.Error {
		for _, i := range idx {
			if i >= len(top) || !top[i].IsString() {
				continue // the library answers the syntax error
			}
			if _, err := f.decodeName(top[i].Value); err != nil {
				return badName(cmd.Tag, err)
			}
		}
		return nil
	}
	if cmd.Pending != nil && cmd.Pending.Size > int64(f.srv.appendLimit()) {
		return &imapwire.Error{Tag: cmd.Tag, No: true, Code: "TOOBIG", Text: fmt.Sprintf("Messages are limited to %d bytes", f.srv.appendLimit())}
	}
	switch cmd.Name {
	case "SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "STATUS", "APPEND":
		return mailboxAt(0)
	case "RENAME":
		return mailboxAt(0, 1)
	case "COPY", "MOVE", "UID COPY", "UID MOVE":
		return mailboxAt(1)
	case "LIST", "LSUB":
		if err := f.listUndecodable(cmd); err != nil {
			return badName(cmd.Tag, err)
		}
	case "SEARCH", "UID SEARCH":
		n := 0
		for _, t := range cmd.Args {
			if t.Kind == imapwire.KindAtom && (strings.EqualFold(string(t.Value), "OR") || strings.EqualFold(string(t.Value), "NOT")) {
				n++
			}
		}
		if n > maxSearchNesting {
			return bad(fmt.Sprintf("Search too complex (more than %d OR and NOT keys)", maxSearchNesting))
		}
	case "LOGIN", "AUTHENTICATE":
		if !f.mayAuthenticate() {
			return &imapwire.Error{Tag: cmd.Tag, No: true, Code: "PRIVACYREQUIRED", Text: "TLS is required to authenticate"}
		}
	}
	return nil
}

// listUndecodable returns why a LIST or LSUB command's reference or
// pattern is not valid modified UTF-7 (or, after UTF8=ACCEPT, UTF-8), or
// nil. Selection and return options are ASCII words, which decode as
// themselves.
func (f *frontConn) listUndecodable(cmd *imapwire.Command) error {
	for _, t := range cmd.Args {
		if t.IsString() {
			if _, err := f.decodeName(t.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

// isAuthenticated reports whether the session has logged in.
func (f *frontConn) isAuthenticated() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authenticated
}

// badName refuses a mailbox name (or LIST pattern) that is not valid
// modified UTF-7 (or, after UTF8=ACCEPT, UTF-8) with NO [CANNOT] (RFC
// 5530): the command is well formed, and no mailbox can have that name.
// Dovecot answers NO too; imaptest wants NO or OK, not BAD.
func badName(tag string, err error) *imapwire.Error {
	return &imapwire.Error{Tag: tag, No: true, Code: "CANNOT", Text: "Mailbox name " + imapwire.Reason(err)}
}

// topArgs returns the top-level arguments of a command: strings, and a
// list as its opening token.
func topArgs(args []imapwire.Token) []imapwire.Token {
	var top []imapwire.Token
	for _, t := range args {
		if t.Depth == 0 && t.Kind != imapwire.KindClose {
			top = append(top, t)
		}
	}
	return top
}

// skipPending skips a refused APPEND's message: a synchronizing literal
// was not sent (no "+"); a non-synchronizing one is read and dropped, up
// to the reader's discard bound (RFC 7888 section 4: refuse, then read
// and discard it or close the connection). False means the connection
// must end.
func (f *frontConn) skipPending(cmd *imapwire.Command, we *imapwire.Error) bool {
	h := cmd.Pending
	if !h.NonSync {
		return true
	}
	if h.Size > f.rd.Limits().MaxDiscard {
		we.Fatal = true
		f.refuse(we)
		return false
	}
	if _, err := io.CopyN(io.Discard, f.rd.Buffered(), h.Size); err != nil {
		return false
	}
	// The rest of the command line.
	_, err := f.rd.ReadLine(maxContinuationLine)
	return err == nil
}

// id answers ID (RFC 2971), in any state: it logs what the client says
// of itself at debug level and names the server.
func (f *frontConn) id(cmd *imapwire.Command) bool {
	start := time.Now()
	args := cmd.Args
	bad := func(text string) bool {
		f.observe("ID", false, start)
		return f.refuse(&imapwire.Error{Tag: cmd.Tag, Text: text})
	}
	var attrs []any
	switch {
	case len(args) == 1 && args[0].Kind == imapwire.KindAtom && strings.EqualFold(string(args[0].Value), "NIL"):
	case len(args) >= 2 && args[0].Kind == imapwire.KindOpen && args[len(args)-1].Kind == imapwire.KindClose:
		inner := args[1 : len(args)-1]
		if len(inner)%2 != 0 || len(inner)/2 > idMaxPairs {
			return bad("ID takes at most 30 field and value pairs")
		}
		for i := 0; i < len(inner); i += 2 {
			field, value := inner[i], inner[i+1]
			if field.Depth != 1 || value.Depth != 1 || (field.Kind != imapwire.KindQuoted && field.Kind != imapwire.KindLiteral) || !value.IsString() {
				return bad("ID takes a list of string pairs or NIL")
			}
			if len(field.Value) > idMaxField || len(value.Value) > idMaxValue {
				return bad("ID field or value too long")
			}
			switch name := strings.ToLower(string(field.Value)); name {
			case "name", "version":
				if value.Kind != imapwire.KindAtom {
					attrs = append(attrs, "client_"+name, string(value.Value))
				}
			}
		}
	default:
		return bad("ID takes a list of string pairs or NIL")
	}
	if len(attrs) > 0 {
		f.log.Debug("client id", attrs...)
	}
	err := f.writeLine(`* ID ("name" "mailcluster")`)
	if err == nil {
		err = f.writeLine(cmd.Tag + " OK ID completed")
	}
	f.observe("ID", err == nil, start)
	return err == nil
}

// observe reports a command the front ran itself.
func (f *frontConn) observe(name string, ok bool, start time.Time) {
	if obs := f.srv.cfg.Observer; obs != nil {
		obs.Command(name, ok, time.Since(start))
	}
}

// startTLS runs STARTTLS on the client's connection. Plaintext the client
// sent after the command is dropped, never read as if it came over TLS.
func (f *frontConn) startTLS(cmd *imapwire.Command) bool {
	start := time.Now()
	switch {
	case len(cmd.Args) > 0:
		return f.refuse(&imapwire.Error{Tag: cmd.Tag, Text: "STARTTLS takes no arguments"})
	case f.srv.cfg.TLS == nil:
		return f.writeLine(cmd.Tag+" NO STARTTLS not supported") == nil
	case !f.mayStartTLS():
		return f.writeLine(cmd.Tag+" BAD STARTTLS not available") == nil
	}
	if err := f.writeLine(cmd.Tag + " OK Begin TLS negotiation now"); err != nil {
		return false
	}
	plain := f.clientConn()
	tc := tls.Server(plain, f.srv.cfg.TLS)
	ctx, cancel := context.WithTimeout(f.srv.baseCtx, startTLSTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		f.log.Debug("STARTTLS handshake failed", "err", err)
		f.observe("STARTTLS", false, start)
		return false
	}
	f.observe("STARTTLS", true, start)
	f.wmu.Lock()
	f.mu.Lock()
	f.conn = tc
	f.mu.Unlock()
	f.bw.Reset(connWriter{f})
	f.wmu.Unlock()
	// Reset drops the plaintext buffered after the command.
	f.br.Reset(tc)
	f.rd.Reset(f.br)
	return true
}

// Accepting: Server.Serve's loop.

// acceptFronts accepts client connections on ln and runs a front for
// each.
func (s *Server) acceptFronts(ln net.Listener) error {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "delay", delay)
				select {
				case <-time.After(delay):
				case <-s.baseCtx.Done():
				}
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return net.ErrClosed
		}
		s.fronts.Add(1)
		s.mu.Unlock()
		id := s.nextID.Add(1)
		go func() {
			defer s.fronts.Done()
			s.serveFront(conn, id)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
