package outbound

import (
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// go-smtp's client sends each command and waits for its reply. The
// envelope of a transaction (MAIL, every RCPT, DATA) is therefore sent
// by envelope here, on the connection go-smtp greeted and said EHLO on:
// in one write when the server offers PIPELINING (RFC 2920), else one
// command at a time. go-smtp's client is not used again on the
// connection after EHLO; its reader holds nothing then, as a server
// sends nothing unasked after its EHLO reply.

// envelopeReplies are the server's answers to one envelope.
type envelopeReplies struct {
	// mail is nil when MAIL was accepted, else the refusal.
	mail *gosmtp.SMTPError
	// rcpt has one entry per recipient: nil when accepted.
	rcpt []*gosmtp.SMTPError
	// dataSent: DATA was sent; data is nil when it was answered 354.
	dataSent bool
	data     *gosmtp.SMTPError
}

// accepted reports whether any recipient was accepted.
func (e *envelopeReplies) accepted() bool {
	if e.mail != nil {
		return false
	}
	for _, r := range e.rcpt {
		if r == nil {
			return true
		}
	}
	return false
}

// smtpConn is the client side of one SMTP transaction after EHLO.
type smtpConn struct {
	conn    net.Conn
	text    *textproto.Conn
	timeout time.Duration // for each command's reply
}

func newSMTPConn(conn net.Conn, timeout time.Duration) *smtpConn {
	return &smtpConn{conn: conn, text: textproto.NewConn(conn), timeout: timeout}
}

// envelope sends MAIL (the command line mail, without its CRLF), a RCPT
// for each of rcpts and DATA, and reads their replies in order. With
// pipelining all of them go out in one write (RFC 2920 section 3.1:
// DATA ends the group); without, the commands go one by one, and after
// a refused MAIL or with no recipient accepted the rest is not sent. An
// error is returned only when the conversation broke (no reply, a
// connection lost, a malformed reply): which commands took effect is
// then unknown.
func (c *smtpConn) envelope(mail string, rcpts []string, pipelining bool) (*envelopeReplies, error) {
	for _, r := range rcpts {
		if strings.ContainsAny(r, "\r\n") {
			return nil, fmt.Errorf("recipient address with a line break")
		}
	}
	if strings.ContainsAny(mail, "\r\n") {
		return nil, fmt.Errorf("MAIL command with a line break")
	}
	rep := &envelopeReplies{rcpt: make([]*gosmtp.SMTPError, len(rcpts))}
	if pipelining {
		var b strings.Builder
		b.WriteString(mail + "\r\n")
		for _, r := range rcpts {
			b.WriteString("RCPT TO:<" + r + ">\r\n")
		}
		b.WriteString("DATA\r\n")
		if err := c.write(b.String()); err != nil {
			return nil, err
		}
		var err error
		if rep.mail, err = c.reply(250); err != nil {
			return nil, err
		}
		for i := range rcpts {
			if rep.rcpt[i], err = c.reply(25); err != nil {
				return nil, err
			}
		}
		rep.dataSent = true
		if rep.data, err = c.reply(354); err != nil {
			return nil, err
		}
		if rep.data == nil && !rep.accepted() {
			// RFC 2920 section 3.1: a server that answers DATA with 354
			// although no recipient was accepted gets an empty message
			// text, whose reply says nothing about anyone.
			if err := c.write(".\r\n"); err != nil {
				return nil, err
			}
			if _, err := c.reply(250); err != nil {
				return nil, err
			}
		}
		return rep, nil
	}
	var err error
	if rep.mail, err = c.command(250, mail); err != nil || rep.mail != nil {
		for i := range rep.rcpt {
			rep.rcpt[i] = rep.mail
		}
		return rep, err
	}
	for i, r := range rcpts {
		if rep.rcpt[i], err = c.command(25, "RCPT TO:<"+r+">"); err != nil {
			return nil, err
		}
	}
	if !rep.accepted() {
		return rep, nil
	}
	rep.dataSent = true
	rep.data, err = c.command(354, "DATA")
	return rep, err
}

// command sends one command line and reads its reply.
func (c *smtpConn) command(expect int, line string) (*gosmtp.SMTPError, error) {
	if err := c.write(line + "\r\n"); err != nil {
		return nil, err
	}
	return c.reply(expect)
}

// write sends commands, bounded by the command timeout.
func (c *smtpConn) write(s string) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := c.text.W.WriteString(s); err != nil {
		return err
	}
	return c.text.W.Flush()
}

// reply reads one reply, bounded by the command timeout: nil when its
// code starts with expect (a one- or two-digit expect is a prefix),
// else the reply as an *gosmtp.SMTPError.
func (c *smtpConn) reply(expect int) (*gosmtp.SMTPError, error) {
	return c.replyWithin(expect, c.timeout)
}

// replyWithin reads one reply within d.
func (c *smtpConn) replyWithin(expect int, d time.Duration) (*gosmtp.SMTPError, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	_, _, err := c.text.ReadResponse(expect)
	var te *textproto.Error
	switch {
	case err == nil:
		return nil, nil
	case errors.As(err, &te):
		return replyError(te.Code, te.Msg), nil
	default:
		return nil, err
	}
}

// replyStatus reads the final reply to a message text within d and
// returns its text when it is 250.
func (c *smtpConn) replyStatus(d time.Duration) (string, *gosmtp.SMTPError, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	_, msg, err := c.text.ReadResponse(250)
	var te *textproto.Error
	switch {
	case err == nil:
		return msg, nil, nil
	case errors.As(err, &te):
		return "", replyError(te.Code, te.Msg), nil
	default:
		return "", nil, err
	}
}

// quit ends the session politely; its outcome does not matter.
func (c *smtpConn) quit() {
	_, _ = c.command(221, "QUIT")
}

// replyError turns a reply into an *gosmtp.SMTPError, with the enhanced
// status code (RFC 3463) it starts with, if any, taken out of the text.
func replyError(code int, msg string) *gosmtp.SMTPError {
	se := &gosmtp.SMTPError{Code: code, Message: msg}
	first, rest, _ := strings.Cut(msg, " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 || strconv.Itoa(code/100) != parts[0] {
		return se
	}
	var enhanced gosmtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return se
		}
		enhanced[i] = n
	}
	se.EnhancedCode, se.Message = enhanced, rest
	return se
}

// mailCommand is the MAIL command for a message of size bytes, with the
// parameters go-smtp's client would add for the server's extensions:
// BODY=8BITMIME whenever offered, SIZE, REQUIRETLS and SMTPUTF8 when the
// message needs them (the caller checked that they are offered).
func mailCommand(c *gosmtp.Client, from string, size int, requireTLS, utf8 bool) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<" + from + ">")
	if ok, _ := c.Extension("8BITMIME"); ok {
		b.WriteString(" BODY=8BITMIME")
	}
	if ok, _ := c.Extension("SIZE"); ok && size > 0 {
		b.WriteString(" SIZE=" + strconv.Itoa(size))
	}
	if requireTLS {
		b.WriteString(" REQUIRETLS")
	}
	if utf8 {
		b.WriteString(" SMTPUTF8")
	}
	return b.String()
}
