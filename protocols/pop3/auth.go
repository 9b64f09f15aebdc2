package pop3

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// errAuthzMismatch is a SASL PLAIN authorization identity other than the
// user: logging in as someone else is not supported.
var errAuthzMismatch = errors.New("authorization identity differs from user")

// authAllowed reports whether plaintext credentials may be sent on this
// connection (RFC 2595 section 2.1: not before TLS when TLS is offered).
func (s *session) authAllowed() bool {
	return s.tls || s.srv.cfg.TLS == nil || s.srv.cfg.AllowInsecureAuth
}

func (s *session) refuseInsecure() error {
	s.reply(false, "[AUTH] plaintext authentication disallowed without TLS, use STLS first")
	return nil
}

// cmdCapa lists the capabilities of the current state (RFC 2449 section 5).
func (s *session) cmdCapa(cmd command) error {
	if len(cmd.args) != 0 {
		return s.syntax("CAPA")
	}
	s.reply(true, "capability list follows")
	for _, c := range []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"} {
		s.w.WriteString(c + "\r\n")
	}
	if s.state == stateAuthorization {
		if s.authAllowed() {
			s.w.WriteString("USER\r\nSASL PLAIN\r\n")
		}
		if s.srv.cfg.TLS != nil && !s.tls {
			s.w.WriteString("STLS\r\n")
		}
	}
	s.w.WriteString(".\r\n")
	return nil
}

// cmdUser takes the user name of a USER/PASS login (RFC 1939 section 7).
// The answer is the same whether or not the user exists.
func (s *session) cmdUser(cmd command) error {
	if len(cmd.args) != 1 {
		return s.syntax("USER name")
	}
	if !s.authAllowed() {
		return s.refuseInsecure()
	}
	if len(cmd.args[0]) > protocols.MaxCredentialLength {
		s.user = ""
		s.reply(false, "user name too long")
		return nil
	}
	s.user = cmd.args[0]
	s.reply(true, "send PASS")
	return nil
}

// cmdPass completes a USER/PASS login. RFC 1939 section 7 lets the
// password contain spaces, so it is the whole rest of the line.
func (s *session) cmdPass(cmd command) error {
	if !s.authAllowed() {
		s.user = ""
		return s.refuseInsecure()
	}
	if s.user == "" {
		s.reply(false, "send USER first")
		return errBadCommand
	}
	user := s.user
	s.user = ""
	if cmd.rest == "" {
		return s.syntax("PASS password")
	}
	acct, err := s.login(user, cmd.rest)
	if acct != nil {
		s.openMaildrop(acct)
	}
	return err
}

// login checks credentials through the guard and answers failures. On
// success the caller owns the account. A failure returns a nil account,
// and errCloseSession when it was the connection's last allowed one. A
// locked-out attempt is answered exactly like a wrong password.
func (s *session) login(username, password string) (protocols.Account, error) {
	acct, err := s.srv.guard.Login(s.ctx, s.srv.store, protocols.Attempt{
		Protocol: "pop3", Remote: s.raw.RemoteAddr(), Username: username, Password: password,
	})
	if err == nil {
		return acct, nil
	}
	if !errors.Is(err, schema.ErrAuthFailed) {
		s.log.Warn("login error", "err", err)
		s.reply(false, "[SYS/TEMP] authentication temporarily unavailable")
		return nil, nil
	}
	s.failed++
	last := s.failed >= s.srv.cfg.MaxAuthFailures
	closing := ""
	if last {
		closing = ", closing connection"
	}
	msg := "login failed"
	if errors.Is(err, protocols.ErrTooManyFailures) {
		msg = "login throttled"
	}
	s.log.Info(msg)
	s.log.Debug(msg, "user", username)
	s.reply(false, "[AUTH] authentication failed%s", closing)
	if last {
		return nil, errCloseSession
	}
	return nil, nil
}

// openMaildrop locks the user's maildrop, takes the INBOX snapshot that
// message numbers refer to for the rest of the session, and enters the
// TRANSACTION state. On failure the account is closed and the session
// stays in the AUTHORIZATION state.
func (s *session) openMaildrop(acct protocols.Account) {
	unlock, err := acct.LockMaildrop(s.ctx)
	if err != nil {
		if cerr := acct.Close(); cerr != nil {
			s.log.Warn("close account", "err", cerr)
		}
		if errors.Is(err, schema.ErrInUse) {
			s.log.Info("maildrop in use")
			s.reply(false, "[IN-USE] maildrop already locked by another POP3 session")
			return
		}
		s.log.Warn("lock maildrop", "err", err)
		s.reply(false, "[SYS/TEMP] cannot lock the maildrop, try again later")
		return
	}
	s.acct, s.unlock = acct, unlock
	mbox, err := acct.Mailbox(s.ctx, schema.InboxName)
	if err == nil {
		var snap schema.MailboxSnapshot
		snap, err = acct.Snapshot(s.ctx, mbox.ID)
		if err == nil {
			s.drop = newMaildrop(snap)
		}
	}
	if err != nil {
		s.log.Warn("open maildrop", "err", err)
		s.closeAccount()
		s.reply(false, "[SYS/TEMP] cannot open the maildrop, try again later")
		return
	}
	s.state = stateTransaction
	s.untrack = s.srv.guard.TrackSession(acct, "pop3", s.raw.RemoteAddr(), s.raw)
	s.log.Info("logged in", "messages", s.drop.count)
	s.log.Debug("logged in", "user", acct.Address())
	s.reply(true, "maildrop locked and ready, %d messages (%d octets)", s.drop.count, s.drop.size)
}

// cmdAuth runs a SASL exchange (RFC 5034). Only PLAIN is offered: the
// password must be checked against the store's hash.
func (s *session) cmdAuth(cmd command) error {
	if len(cmd.args) == 0 {
		// Not in RFC 5034, but old clients probe mechanisms this way.
		if !s.authAllowed() {
			return s.refuseInsecure()
		}
		s.reply(true, "supported mechanisms follow")
		s.w.WriteString("PLAIN\r\n.\r\n")
		return nil
	}
	if len(cmd.args) > 2 {
		return s.syntax("AUTH mechanism [initial-response]")
	}
	if !s.authAllowed() {
		return s.refuseInsecure()
	}
	if !strings.EqualFold(cmd.args[0], sasl.Plain) {
		s.reply(false, "unsupported authentication mechanism")
		return nil
	}
	var resp []byte
	if len(cmd.args) == 2 {
		var err error
		if resp, err = decodeSASL(cmd.args[1]); err != nil {
			s.reply(false, "invalid base64 in initial response")
			return errBadCommand
		}
	}

	var acct protocols.Account
	answered := false // login answered a failure already
	var loginErr error
	server := sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && !strings.EqualFold(identity, username) {
			return errAuthzMismatch
		}
		acct, loginErr = s.login(username, password)
		if acct == nil {
			answered = true
			return schema.ErrAuthFailed
		}
		return nil
	})
	for {
		challenge, done, err := server.Next(resp)
		if err != nil {
			if !answered {
				// A malformed response or a foreign authorization
				// identity: no password was checked.
				s.log.Info("sasl exchange failed")
				s.reply(false, "[AUTH] authentication failed")
				return errBadCommand
			}
			return loginErr
		}
		if done {
			break
		}
		s.w.WriteString("+ " + base64.StdEncoding.EncodeToString(challenge) + "\r\n")
		if err := s.w.Flush(); err != nil {
			return err
		}
		if err := s.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.IdleTimeout)); err != nil {
			return err
		}
		line, err := readLine(s.r, maxAuthLine)
		if errors.Is(err, errLineTooLong) {
			s.reply(false, "response too long")
			return errBadCommand
		}
		if err != nil {
			return err
		}
		if string(line) == "*" {
			s.reply(false, "authentication cancelled")
			return nil
		}
		if resp, err = decodeSASL(string(line)); err != nil {
			s.reply(false, "invalid base64 in response")
			return errBadCommand
		}
	}
	if acct == nil {
		// The mechanism finished without calling the authenticator.
		s.reply(false, "[AUTH] authentication failed")
		return nil
	}
	s.openMaildrop(acct)
	return nil
}

// decodeSASL decodes a base64 SASL response; "=" stands for an empty
// initial response (RFC 5034 section 4). The result is never nil, which
// go-sasl reads as "no response".
func decodeSASL(s string) ([]byte, error) {
	if s == "=" {
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// cmdSTLS upgrades the connection to TLS (RFC 2595 section 4). Input the
// client pipelined after STLS is discarded, so plaintext cannot be
// injected into the protected session.
func (s *session) cmdSTLS(cmd command) error {
	if len(cmd.args) != 0 {
		return s.syntax("STLS")
	}
	if s.tls {
		s.reply(false, "command not permitted when TLS active")
		return nil
	}
	if s.srv.cfg.TLS == nil {
		s.reply(false, "TLS not available")
		return nil
	}
	if n := s.r.Buffered(); n > 0 {
		s.log.Info("discarding input pipelined after STLS", "octets", n)
	}
	s.reply(true, "begin TLS negotiation")
	if err := s.w.Flush(); err != nil {
		return err
	}
	tc := tls.Server(s.conn, s.srv.cfg.TLS)
	if err := s.handshake(tc); err != nil {
		s.log.Info("stls handshake failed", "err", err)
		return errCloseSession
	}
	s.setTransport(tc)
	// RFC 2595 section 4: forget what the client said before TLS.
	s.user = ""
	s.log.Debug("stls", "tls", protocols.DescribeTLS(ptr(tc.ConnectionState())))
	return nil
}

// cmdQuitAuthorization ends a session that never logged in.
func (s *session) cmdQuitAuthorization(cmd command) error {
	if len(cmd.args) != 0 {
		return s.syntax("QUIT")
	}
	s.reply(true, "%s POP3 server signing off", s.srv.cfg.Hostname)
	return errCloseSession
}
