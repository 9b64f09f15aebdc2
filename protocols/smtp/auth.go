package smtp

import (
	"context"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// saslServer returns the server side of mech (PLAIN or LOGIN). Every
// password check goes through the auth guard.
func (s *session) saslServer(mech string) (sasl.Server, error) {
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return &saslReplies{sasl.NewPlainServer(func(identity, username, password string) error {
			// RFC 4616 section 2: acting for another identity is not
			// supported, so it must be empty or the user itself.
			if identity != "" && identity != username {
				return s.refuse("auth", protocols.Permanentf(535, [3]int{5, 7, 8}, nil, "Authorization identity must be empty or match the user name"))
			}
			return s.login(sasl.Plain, username, password)
		})}, nil
	case sasl.Login:
		return &saslReplies{protocols.NewLoginServer(func(username, password string) error {
			return s.login(sasl.Login, username, password)
		})}, nil
	default:
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
}

// login checks credentials through the guard and remembers the user's
// address. Unknown users, wrong passwords and locked-out attempts get the
// same reply.
func (s *session) login(mech, username, password string) error {
	if !s.srv.enter() {
		return errShuttingDown
	}
	defer s.srv.leave()
	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.StoreTimeout)
	defer cancel()
	acct, err := s.srv.cfg.Guard.Login(ctx, s.srv.store, protocols.Attempt{
		Protocol: "smtp", Remote: s.conn.Conn().RemoteAddr(), Username: username, Password: password,
	})
	switch {
	case err == nil:
		addr := acct.Address()
		untrack := s.srv.cfg.Guard.TrackSession(acct, "smtp", s.conn.Conn().RemoteAddr(), s.conn.Conn())
		if cerr := acct.Close(); cerr != nil {
			s.log.Warn("close account after login", "err", cerr)
		}
		s.mu.Lock()
		s.user = addr
		if s.untrack != nil {
			s.untrack()
		}
		s.untrack = untrack
		s.mu.Unlock()
		s.log.Info("authenticated", "mech", mech)
		s.log.Debug("authenticated user", "user", addr)
		return nil
	case errors.Is(err, schema.ErrAuthFailed):
		// A locked-out attempt gets the same reply; only the logged
		// reason tells it apart.
		s.log.Debug("authentication failed for user", "user", username)
		return s.refuse("auth", protocols.Permanentf(535, [3]int{5, 7, 8}, err, "Authentication credentials invalid"))
	default:
		return s.refuse("auth", protocols.Temporaryf(454, [3]int{4, 7, 0}, err, "Temporary authentication failure, try again later"))
	}
}

// saslReplies turns the plain errors of SASL servers (malformed client
// responses) into SMTP replies; SMTP errors pass through.
type saslReplies struct{ sasl.Server }

// Next runs one step of the exchange.
func (r *saslReplies) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := r.Server.Next(response)
	if err != nil {
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			// go-smtp recognises only the bare *SMTPError type.
			err = se
		} else {
			err = &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}
		}
	}
	return challenge, done, err
}
