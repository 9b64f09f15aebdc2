package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// state is a POP3 session state (RFC 1939 section 3). The UPDATE state is
// the QUIT handler of the TRANSACTION state.
type state int

const (
	stateAuthorization state = iota
	stateTransaction
)

func (st state) String() string {
	if st == stateTransaction {
		return "transaction"
	}
	return "authorization"
}

// errCloseSession ends a session after its last reply was written.
var errCloseSession = errors.New("close session")

// session is one client connection.
type session struct {
	srv  *Server
	log  *slog.Logger
	ctx  context.Context
	conn net.Conn // the transport; a *tls.Conn after STLS
	raw  net.Conn // the accepted connection, for the remote address
	r    *bufio.Reader
	w    *bufio.Writer
	tls  bool

	state state
	user  string // name given by USER, waiting for PASS
	acct  protocols.Account
	// untrack unregisters the authenticated session; nil when none.
	untrack func()
	drop    *maildrop
	// unlock releases the maildrop lock; nil when none is held.
	unlock func()

	bad    int  // bad commands so far
	failed int  // failed logins so far
	lastOK bool // status of the last reply, for the command log
	// lastName is the command name the observer is told: one of
	// Commands, or protocols.CommandOther.
	lastName string
}

func newSession(srv *Server, conn net.Conn, log *slog.Logger) *session {
	s := &session{srv: srv, log: log, ctx: srv.ctx, raw: conn}
	s.setTransport(conn)
	return s
}

// setTransport makes conn the connection commands are read from and
// replies written to; buffered input of the previous transport is dropped.
func (s *session) setTransport(conn net.Conn) {
	s.conn = conn
	s.r = bufio.NewReaderSize(conn, 4096)
	s.w = bufio.NewWriterSize(deadlineWriter{conn: conn, timeout: s.srv.cfg.WriteTimeout}, 32<<10)
}

// implicitTLS finds the *tls.Conn of an implicit-TLS listener under any
// wrappers (such as a connection limiter's) that offer Unwrap.
func implicitTLS(conn net.Conn) *tls.Conn {
	for conn != nil {
		if tc, ok := conn.(*tls.Conn); ok {
			return tc
		}
		u, ok := conn.(interface{ Unwrap() net.Conn })
		if !ok {
			return nil
		}
		conn = u.Unwrap()
	}
	return nil
}

func (s *session) serve() {
	start := time.Now()
	defer s.end(start)
	if tc := implicitTLS(s.conn); tc != nil {
		if err := s.handshake(tc); err != nil {
			s.log.Info("tls handshake failed", "err", err)
			return
		}
		s.log.Debug("implicit tls", "tls", protocols.DescribeTLS(ptr(tc.ConnectionState())))
	}
	s.log.Info("connected", "tls", s.tls)
	s.reply(true, "%s POP3 server ready", s.srv.cfg.Hostname)
	for {
		if s.r.Buffered() == 0 {
			// Replies to pipelined commands (RFC 2449 PIPELINING) go out
			// together once the client has nothing more queued.
			if err := s.w.Flush(); err != nil {
				s.log.Debug("write failed", "err", err)
				return
			}
		}
		if err := s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.IdleTimeout)); err != nil {
			return
		}
		line, err := readLine(s.r, maxAuthLine)
		switch {
		case errors.Is(err, errLineTooLong):
			s.reply(false, "line too long")
			if s.badCommand() {
				return
			}
			continue
		case errors.Is(err, errLineFlood):
			s.reply(false, "line too long, closing connection")
			s.w.Flush()
			s.log.Info("closing: line flood")
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.reply(false, "disconnected for inactivity")
			s.w.Flush()
			s.log.Info("closing: idle timeout")
			return
		case err != nil:
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("read failed", "err", err)
			}
			return
		}
		if err := s.handle(line); err != nil {
			s.w.Flush()
			return
		}
	}
}

// testHookHandle, when set, is called with each command line.
var testHookHandle func(line []byte)

// handle parses and runs one command line, and reports it to the
// observer. An error ends the session.
func (s *session) handle(line []byte) error {
	if testHookHandle != nil {
		testHookHandle(line)
	}
	obs := s.srv.cfg.Observer
	if obs == nil {
		return s.run(line)
	}
	start := time.Now()
	err := s.run(line)
	obs.Command(s.lastName, s.lastOK, time.Since(start))
	return err
}

// run parses and runs one command line. An error ends the session.
func (s *session) run(line []byte) error {
	s.lastName = protocols.CommandOther
	cmd, err := parseCommand(line)
	if err != nil {
		s.reply(false, "syntax error")
		s.log.Debug("command", "cmd", "", "ok", false)
		return s.checkBad()
	}
	if cmd.name != "AUTH" && len(line)+2 > maxCommandLine {
		s.reply(false, "line too long")
		s.log.Debug("command", "cmd", cmd.name, "ok", false)
		return s.checkBad()
	}
	s.lastName = commandName(cmd.name)
	switch s.srv.cfg.CommandRate.Command(s.ctx, protocols.RemoteIP(s.raw.RemoteAddr())) {
	case protocols.CommandRefused:
		// RFC 3206 section 4: a temporary condition; the client may
		// retry later.
		s.reply(false, "[SYS/TEMP] too many commands, slow down")
		s.log.Info("command refused", "cmd", cmd.name, "reason", "command_rate")
		return nil
	case protocols.CommandClose:
		s.reply(false, "[SYS/TEMP] too many commands, closing")
		s.log.Info("connection closed", "cmd", cmd.name, "reason", "command_rate")
		return errCloseSession
	}
	err = s.dispatch(cmd)
	if cmd.name == "QUIT" || errors.Is(err, errCloseSession) {
		s.log.Info("command", "cmd", cmd.name, "ok", s.lastOK)
	} else {
		s.log.Debug("command", "cmd", cmd.name, "ok", s.lastOK)
	}
	return err
}

// errBadCommand marks a reply to a command that counts against
// MaxBadCommands.
var errBadCommand = errors.New("bad command")

// dispatch runs cmd in the current state (RFC 1939 sections 4-6).
func (s *session) dispatch(cmd command) error {
	var err error
	switch s.state {
	case stateAuthorization:
		switch cmd.name {
		case "CAPA":
			err = s.cmdCapa(cmd)
		case "USER":
			err = s.cmdUser(cmd)
		case "PASS":
			err = s.cmdPass(cmd)
		case "AUTH":
			err = s.cmdAuth(cmd)
		case "STLS":
			err = s.cmdSTLS(cmd)
		case "QUIT":
			err = s.cmdQuitAuthorization(cmd)
		case "STAT", "LIST", "UIDL", "TOP", "RETR", "DELE", "RSET", "NOOP":
			err = s.wrongState()
		default:
			err = s.unknown()
		}
	case stateTransaction:
		switch cmd.name {
		case "CAPA":
			err = s.cmdCapa(cmd)
		case "STAT":
			err = s.cmdStat(cmd)
		case "LIST":
			err = s.cmdList(cmd)
		case "UIDL":
			err = s.cmdUIDL(cmd)
		case "TOP":
			err = s.cmdTop(cmd)
		case "RETR":
			err = s.cmdRetr(cmd)
		case "DELE":
			err = s.cmdDele(cmd)
		case "RSET":
			err = s.cmdRset(cmd)
		case "NOOP":
			err = s.cmdNoop(cmd)
		case "QUIT":
			err = s.cmdQuitTransaction(cmd)
		case "USER", "PASS", "AUTH", "STLS":
			err = s.wrongState()
		default:
			err = s.unknown()
		}
	}
	if errors.Is(err, errBadCommand) {
		return s.checkBad()
	}
	return err
}

func (s *session) unknown() error {
	s.reply(false, "unknown command")
	return errBadCommand
}

func (s *session) wrongState() error {
	s.reply(false, "command not valid in the %s state", s.state)
	return errBadCommand
}

// syntax answers a command with wrong arguments.
func (s *session) syntax(usage string) error {
	s.reply(false, "syntax: %s", usage)
	return errBadCommand
}

// badCommand counts a bad command and, at the limit, says goodbye; it
// reports whether the session must end.
func (s *session) badCommand() bool {
	s.bad++
	if s.bad < s.srv.cfg.MaxBadCommands {
		return false
	}
	s.reply(false, "too many bad commands, closing connection")
	s.w.Flush()
	s.log.Info("closing: too many bad commands")
	return true
}

func (s *session) checkBad() error {
	if s.badCommand() {
		return errCloseSession
	}
	return nil
}

// reply writes a one-line response: "+OK text" or "-ERR text".
func (s *session) reply(ok bool, format string, args ...any) {
	s.lastOK = ok
	if ok {
		s.w.WriteString("+OK ")
	} else {
		s.w.WriteString("-ERR ")
	}
	fmt.Fprintf(s.w, format, args...)
	s.w.WriteString("\r\n")
}

// handshake runs the server side of a TLS handshake on tc within the
// configured timeout.
func (s *session) handshake(tc *tls.Conn) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	s.tls = true
	return nil
}

// end releases what the session holds. A session that did not pass
// through QUIT in the TRANSACTION state deletes nothing.
func (s *session) end(start time.Time) {
	s.closeAccount()
	s.log.Info("disconnected", "duration", time.Since(start).Round(time.Millisecond))
}

func (s *session) closeAccount() {
	if s.untrack != nil {
		s.untrack()
		s.untrack = nil
	}
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
	if s.acct != nil {
		if err := s.acct.Close(); err != nil {
			s.log.Warn("close account", "err", err)
		}
		s.acct = nil
	}
	s.drop = nil
}

func ptr[T any](v T) *T { return &v }
