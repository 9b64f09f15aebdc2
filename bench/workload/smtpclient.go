package workload

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpClient is the sending side of the ingest and failover workloads:
// one SMTP session over STARTTLS, one recipient per transaction, the
// commands one at a time as go-smtp's client sends them. It exists for
// the message data: go-smtp's client writes it through textproto's
// DotWriter, one byte and one call at a time, which took a fifth of a
// core at 100 MiB/s of 1 MiB mail, on the two cores the load generator
// shares with the target it measures. writeData stuffs and writes it in
// spans. A refusal is returned as an *smtp.SMTPError, as go-smtp's client
// returns it, so callers classify replies the same way.
type smtpClient struct {
	conn net.Conn
	text *textproto.Conn
	ext  map[string]bool // the EHLO keywords the server offered after STARTTLS
	// pipelining: send MAIL, RCPT and DATA together when the server
	// offers PIPELINING (IngestConfig.Pipelining).
	pipelining bool
}

// dialSMTP connects, reads the greeting, says EHLO, starts TLS and says
// EHLO again.
func dialSMTP(ctx context.Context, addr string, cfg *tls.Config) (*smtpClient, error) {
	conn, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c := &smtpClient{conn: conn, text: textproto.NewConn(conn)}
	if err := c.start(ctx, cfg); err != nil {
		conn.Close()
		return nil, fmt.Errorf("smtp starttls: %w", err)
	}
	return c, nil
}

// start runs the session's opening up to the second EHLO.
func (c *smtpClient) start(ctx context.Context, cfg *tls.Config) error {
	c.conn.SetDeadline(time.Now().Add(commandTimeout))
	if _, err := c.reply(220); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	ext, err := c.cmd(250, "EHLO localhost")
	if err != nil {
		return fmt.Errorf("ehlo: %w", err)
	}
	if !strings.Contains(ext, "\nSTARTTLS") {
		return errors.New("the server does not offer STARTTLS")
	}
	if _, err := c.cmd(220, "STARTTLS"); err != nil {
		return fmt.Errorf("starttls: %w", err)
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.conn, c.text = tc, textproto.NewConn(tc)
	ext, err = c.cmd(250, "EHLO localhost")
	if err != nil {
		return fmt.Errorf("ehlo after starttls: %w", err)
	}
	c.ext = make(map[string]bool)
	for _, line := range strings.Split(ext, "\n")[1:] {
		keyword, _, _ := strings.Cut(line, " ")
		c.ext[strings.ToUpper(keyword)] = true
	}
	return nil
}

// cmd sends one command line and reads its reply, which must have code
// want (a one- or two-digit want matches a class, as in textproto).
func (c *smtpClient) cmd(want int, format string, args ...any) (string, error) {
	c.conn.SetDeadline(time.Now().Add(commandTimeout))
	if err := c.text.PrintfLine(format, args...); err != nil {
		return "", err
	}
	return c.reply(want)
}

// reply reads a reply; one with another code than want is returned as an
// *smtp.SMTPError.
func (c *smtpClient) reply(want int) (string, error) {
	_, msg, err := c.text.ReadResponse(want)
	var te *textproto.Error
	if errors.As(err, &te) {
		return "", &smtp.SMTPError{Code: te.Code, Message: te.Msg}
	}
	return msg, err
}

// send runs one transaction: MAIL FROM with the parameters go-smtp's
// client adds (BODY=8BITMIME, SIZE, SMTPUTF8 for an address that needs
// it, each where the server offers it), RCPT TO, DATA and the message,
// and waits for the final reply. With pipelining, MAIL, RCPT and DATA
// go in one write and their replies are read after (RFC 2920); the
// first refusal among them fails the transaction. dataEnd is when the
// end of data was about to be sent (zero when the transaction failed
// before): the server cannot have committed the message earlier.
func (c *smtpClient) send(from, rcpt string, data []byte) (dataEnd time.Time, err error) {
	var opts strings.Builder
	if c.ext["8BITMIME"] {
		opts.WriteString(" BODY=8BITMIME")
	}
	if c.ext["SIZE"] {
		fmt.Fprintf(&opts, " SIZE=%d", len(data))
	}
	if c.ext["SMTPUTF8"] && (!isASCII(from) || !isASCII(rcpt)) {
		opts.WriteString(" SMTPUTF8")
	}
	if err := c.envelope(from, opts.String(), rcpt); err != nil {
		return time.Time{}, err
	}
	c.conn.SetDeadline(time.Now().Add(dataTimeout))
	if err := writeData(c.text.W, data); err != nil {
		return time.Time{}, fmt.Errorf("data write: %w", err)
	}
	dataEnd = time.Now()
	if err := c.text.W.Flush(); err != nil {
		return dataEnd, fmt.Errorf("end of data: %w", err)
	}
	if _, err := c.reply(250); err != nil {
		return dataEnd, fmt.Errorf("end of data: %w", err)
	}
	return dataEnd, nil
}

// envelope sends MAIL FROM with its parameters (params, each with a
// space before it), RCPT TO and DATA, one at a time or pipelined, and
// reads their replies up to the 354.
func (c *smtpClient) envelope(from, params, rcpt string) error {
	steps := []struct {
		want int
		name string
		line string
	}{
		{250, "mail from", "MAIL FROM:<" + from + ">" + params},
		{25, "rcpt to", "RCPT TO:<" + rcpt + ">"},
		{354, "data", "DATA"},
	}
	if !c.pipelining || !c.ext["PIPELINING"] {
		for _, s := range steps {
			if _, err := c.cmd(s.want, "%s", s.line); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		return nil
	}
	c.conn.SetDeadline(time.Now().Add(commandTimeout))
	for _, s := range steps {
		if _, err := fmt.Fprintf(c.text.W, "%s\r\n", s.line); err != nil {
			return err
		}
	}
	if err := c.text.W.Flush(); err != nil {
		return err
	}
	var first error
	for _, s := range steps {
		_, err := c.reply(s.want)
		if err == nil || first != nil && isReply(err) {
			continue
		}
		if first == nil {
			first = fmt.Errorf("%s: %w", s.name, err)
		}
		if !isReply(err) {
			break // the connection failed: no more replies to read
		}
	}
	return first
}

// isReply reports whether err is a server's reply (the session goes on)
// rather than a failure of the connection.
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// Reset says RSET: the transaction that failed is abandoned and the
// session can start another.
func (c *smtpClient) Reset() error {
	_, err := c.cmd(250, "RSET")
	return err
}

// Quit says QUIT and reads the reply; the connection stays to be closed.
func (c *smtpClient) Quit() error {
	_, err := c.cmd(221, "QUIT")
	return err
}

// Close closes the connection.
func (c *smtpClient) Close() error { return c.conn.Close() }

// spanWriter is what writeData writes to (a bufio.Writer).
type spanWriter interface {
	Write(p []byte) (int, error)
	WriteString(s string) (int, error)
}

// writeData writes data as the content of DATA (RFC 5321 section
// 4.5.2), up to the terminating line, byte for byte as textproto's
// DotWriter writes it: a line starting with a dot gets another; an LF
// gets a CR before it unless one is there (a CR directly after a CR does
// not count, so a run of CRs before an LF counts when it is odd); data
// that does not end in an LF is ended with CRLF (LF after such a CR); no
// data at all is one empty line. The bytes between the places that
// change are written as one span each.
func writeData(w spanWriter, data []byte) error {
	start := 0 // the first byte not yet written
	put := func(end int, extra string) error {
		if _, err := w.Write(data[start:end]); err != nil {
			return err
		}
		start = end
		_, err := w.WriteString(extra)
		return err
	}
	ending := "\r\n" // what ends data that has no LF at its end
	if len(data) > 0 && data[len(data)-1] == '\n' {
		ending = ""
	}
	for line := 0; line < len(data); {
		if data[line] == '.' {
			if err := put(line, "."); err != nil {
				return err
			}
		}
		end := bytes.IndexByte(data[line:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += line
		}
		crs := 0
		for crs < end-line && data[end-1-crs] == '\r' {
			crs++
		}
		switch {
		case end < len(data) && crs%2 == 0:
			if err := put(end, "\r"); err != nil {
				return err
			}
		case end == len(data) && crs%2 == 1:
			ending = "\n"
		}
		line = end + 1
	}
	return put(len(data), ending+".\r\n")
}

// isASCII reports whether s has only ASCII characters.
func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
