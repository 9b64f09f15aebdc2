package smtp

import (
	"net"
	"net/netip"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
)

// errTooManyCommands is the answer to a command over the command rate
// (RFC 5321 section 3.8: 421 closes the transmission channel).
var errTooManyCommands = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Too many commands, closing connection"}

// checkRate takes a token of the node's command limiter for a command
// that reaches the session (EHLO/HELO, AUTH, MAIL, RCPT; go-smtp answers
// NOOP, HELP, VRFY and RSET without asking for permission). Over the
// limit, after the limiter's delay, the client gets 421 4.7.0 and the
// connection closes: go-smtp does not hang up on a 421 by itself, so the
// reply is written here, before the close; go-smtp's own write of it
// then fails and ends the connection.
func (s *Server) checkRate(conn net.Conn, remote netip.Addr, log interface{ Info(string, ...any) }) error {
	if s.cfg.CommandRate.Command(s.ctx, remote) == protocols.CommandAllowed {
		return nil
	}
	log.Info("connection closed", "reason", "command_rate")
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Write([]byte("421 4.7.0 Too many commands, closing connection\r\n"))
	_ = conn.Close()
	return errTooManyCommands
}
