package smtp

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
)

// Commands lists the command names a Server reports to its
// Config.Observer: the commands whose handling runs our code. go-smtp
// answers the others (EHLO, RSET, NOOP, VRFY, QUIT, unknown commands)
// without asking the session, so they are not seen. BDAT is reported
// once per message, when its last chunk has been answered; AUTH when its
// SASL exchange ends (as failed when the client abandons it); STARTTLS
// when its handshake has been verified, or as failed when the connection
// ends in the middle of it, timed from the client's hello.
var Commands = []string{"MAIL", "RCPT", "DATA", "BDAT", "AUTH", "STARTTLS"}

// observedSession reports the commands and deliveries of a session to
// the server's observers. It has every method of the session it wraps,
// so go-smtp sees the same extensions.
type observedSession struct {
	inner      gosmtp.AuthSession
	commands   protocols.CommandObserver
	deliveries protocols.DeliveryObserver
	// auth times an AUTH exchange, which go-smtp drives after Auth
	// returned.
	auth protocols.CommandTimer
	// conn is the session's connection; tracked, when the session began
	// in plain text, the connection a STARTTLS is timed on.
	conn    *gosmtp.Conn
	tracked *trackedConn
}

var _ gosmtp.AuthSession = (*observedSession)(nil)

// observe wraps sess, the session of c, when the server has observers.
func (s *Server) observe(c *gosmtp.Conn, sess gosmtp.Session) gosmtp.Session {
	if s.cfg.Observer == nil && s.cfg.Deliveries == nil {
		return sess
	}
	inner, ok := sess.(gosmtp.AuthSession)
	if !ok {
		return sess
	}
	o := &observedSession{inner: inner, commands: s.cfg.Observer, deliveries: s.cfg.Deliveries, conn: c}
	o.tracked, _ = c.Conn().(*trackedConn)
	if o.commands == nil {
		o.commands = nopCommands{}
	}
	if o.deliveries == nil {
		o.deliveries = nopDeliveries{}
	}
	return o
}

type nopCommands struct{}

func (nopCommands) Command(string, bool, time.Duration) {}

type nopDeliveries struct{}

func (nopDeliveries) Delivery(protocols.DeliveryResult, protocols.ReplyClass) {}

// Reset discards the transaction in progress.
func (o *observedSession) Reset() {
	o.auth.Flush(o.commands)
	o.inner.Reset()
}

// Logout ends the session. go-smtp also ends it after a successful
// STARTTLS handshake, before the EHLO that starts the next one.
func (o *observedSession) Logout() error {
	o.auth.Flush(o.commands)
	if o.tracked != nil && o.tracked.startTLS.Running() {
		if _, isTLS := connTLS(o.conn); isTLS {
			o.tracked.startTLS.Confirm(o.commands)
		}
	}
	return o.inner.Logout()
}

// AuthMechanisms lists the SASL mechanisms offered.
func (o *observedSession) AuthMechanisms() []string { return o.inner.AuthMechanisms() }

// Auth starts a SASL exchange for mech, timed until it ends.
func (o *observedSession) Auth(mech string) (sasl.Server, error) {
	o.auth.Start(o.commands, "AUTH", time.Now())
	srv, err := o.inner.Auth(mech)
	if err != nil {
		o.auth.Finish(o.commands, false, time.Now())
		return nil, err
	}
	return &observedSASL{Server: srv, o: o}, nil
}

// observedSASL ends the timing of an AUTH command with its exchange.
type observedSASL struct {
	sasl.Server
	o *observedSession
}

// Next runs one step of the exchange.
func (s *observedSASL) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := s.Server.Next(response)
	now := time.Now()
	if done || err != nil {
		s.o.auth.Finish(s.o.commands, err == nil, now)
	} else {
		s.o.auth.Touch(now)
	}
	return challenge, done, err
}

// Mail starts a transaction.
func (o *observedSession) Mail(from string, opts *gosmtp.MailOptions) error {
	o.auth.Flush(o.commands)
	start := time.Now()
	err := o.inner.Mail(from, opts)
	o.commands.Command("MAIL", err == nil, time.Since(start))
	return err
}

// Rcpt adds a recipient.
func (o *observedSession) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	start := time.Now()
	err := o.inner.Rcpt(to, opts)
	o.commands.Command("RCPT", err == nil, time.Since(start))
	return err
}

// Data receives and delivers a message, over DATA or BDAT (go-smtp feeds
// BDAT chunks through a pipe), and reports how the transaction ended.
func (o *observedSession) Data(r io.Reader) error {
	name := "DATA"
	if _, ok := r.(*io.PipeReader); ok {
		name = "BDAT"
		if f, ok := o.conn.Conn().(*frontConn); ok && f.dataConverted() {
			// The client sent DATA; the MX front hands it on as BDAT.
			name = "DATA"
		}
	}
	start := time.Now()
	err := o.inner.Data(r)
	o.commands.Command(name, err == nil, time.Since(start))
	var se *gosmtp.SMTPError
	switch {
	case err == nil:
		o.deliveries.Delivery(protocols.DeliveryAccepted, protocols.ClassNone)
	case errors.Is(err, gosmtp.ErrDataReset):
		// The client aborted the transfer (RSET, or a connection closed
		// between chunks): nobody was answered.
	case errors.As(err, &se):
		o.deliveries.Delivery(protocols.ClassifyReply(se.Code, [3]int(se.EnhancedCode)))
	default:
		// go-smtp answers any other error with 554 5.0.0.
		o.deliveries.Delivery(protocols.DeliveryPermanent, protocols.ClassOther)
	}
	return err
}

// startTLSConfig returns the TLS configuration go-smtp runs STARTTLS
// with: cfg, timing each STARTTLS on the tracked connection it runs on,
// from the client's hello to the server's verification of the handshake.
// The server verifies before the client's last message (TLS 1.3 section
// 4.4.4), so the client may still refuse the handshake: go-smtp ends the
// session, then reported as the successful STARTTLS, only after the
// whole handshake (Logout), and a connection closed before that reports
// it failed (trackedConn.Close).
func (s *Server) startTLSConfig(cfg *tls.Config) *tls.Config {
	obs := s.cfg.Observer
	if cfg == nil || obs == nil {
		return cfg
	}
	return protocols.ObserveHandshakes(cfg, func(conn net.Conn) func(*tls.ConnectionState) {
		tc, ok := conn.(*trackedConn)
		if !ok {
			return nil
		}
		tc.startTLS.Start(obs, "STARTTLS", time.Now())
		return func(*tls.ConnectionState) { tc.startTLS.Touch(time.Now()) }
	})
}
