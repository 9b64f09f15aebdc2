// Package pop3client is the small POP3 client the benchmark drives every
// target with (no maintained Go POP3 client library is available): RFC
// 1939 commands, STLS (RFC 2595) and SASL PLAIN (RFC 5034).
//
// Invariants: every command has a deadline; reply lines and messages are
// size-bounded; multi-line replies are dot-unstuffed and returned with
// CRLF line endings exactly as the server stored them.
package pop3client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Limits of what the client reads.
const (
	maxLine = 8 << 10
	// DefaultMaxMessage bounds one RETR.
	DefaultMaxMessage = 64 << 20
	// DefaultTimeout bounds one command and its reply.
	DefaultTimeout = 60 * time.Second
)

// ErrServer is wrapped by every "-ERR" reply.
var ErrServer = errors.New("pop3: server replied -ERR")

// Client is one POP3 connection. It is not safe for concurrent use.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	// MaxMessage bounds one retrieved message.
	MaxMessage int
}

// Dial connects to addr and reads the greeting. With implicit TLS, pass a
// tls.Config as implicitTLS; otherwise nil (and use StartTLS).
func Dial(ctx context.Context, addr string, implicitTLS *tls.Config) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pop3 dial: %w", err)
	}
	if implicitTLS != nil {
		tc := tls.Client(conn, implicitTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("pop3 tls: %w", err)
		}
		conn = tc
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), timeout: DefaultTimeout, MaxMessage: DefaultMaxMessage}
	if _, err := c.status(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("pop3 greeting: %w", err)
	}
	return c, nil
}

// Close closes the connection without QUIT (nothing is deleted).
func (c *Client) Close() error {
	return c.conn.Close()
}

// StartTLS issues STLS and upgrades the connection.
func (c *Client) StartTLS(ctx context.Context, cfg *tls.Config) error {
	if _, err := c.cmd("STLS"); err != nil {
		return fmt.Errorf("stls: %w", err)
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("stls handshake: %w", err)
	}
	c.conn = tc
	c.r = bufio.NewReaderSize(tc, 64<<10)
	return nil
}

// AuthPlain authenticates with SASL PLAIN and an initial response.
func (c *Client) AuthPlain(user, password string) error {
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	if _, err := c.cmd("AUTH PLAIN " + resp); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

// Stat returns the number of messages and the maildrop's size.
func (c *Client) Stat() (count int, size int64, err error) {
	line, err := c.cmd("STAT")
	if err != nil {
		return 0, 0, fmt.Errorf("stat: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("stat: malformed reply %q", line)
	}
	if count, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, fmt.Errorf("stat: %w", err)
	}
	if size, err = strconv.ParseInt(f[1], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stat: %w", err)
	}
	return count, size, nil
}

// Entry is one line of a LIST or UIDL listing.
type Entry struct {
	Num  int
	Size int64  // LIST
	UID  string // UIDL
}

// List returns every message's number and size.
func (c *Client) List() ([]Entry, error) {
	lines, err := c.listing("LIST")
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(lines))
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 {
			return nil, fmt.Errorf("list: malformed line %q", l)
		}
		n, err1 := strconv.Atoi(f[0])
		s, err2 := strconv.ParseInt(f[1], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
		out = append(out, Entry{Num: n, Size: s})
	}
	return out, nil
}

// UIDL returns every message's number and unique id.
func (c *Client) UIDL() ([]Entry, error) {
	lines, err := c.listing("UIDL")
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(lines))
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 {
			return nil, fmt.Errorf("uidl: malformed line %q", l)
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("uidl: %w", err)
		}
		out = append(out, Entry{Num: n, UID: f[1]})
	}
	return out, nil
}

func (c *Client) listing(cmd string) ([]string, error) {
	if _, err := c.cmd(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", strings.ToLower(cmd), err)
	}
	var lines []string
	err := c.readMulti(func(line []byte) error {
		lines = append(lines, string(line))
		if len(lines) > 10_000_000 {
			return errors.New("listing too long")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.ToLower(cmd), err)
	}
	return lines, nil
}

// Retr retrieves message n, dot-unstuffed, with CRLF line endings.
func (c *Client) Retr(n int) ([]byte, error) {
	if _, err := c.cmd("RETR " + strconv.Itoa(n)); err != nil {
		return nil, fmt.Errorf("retr %d: %w", n, err)
	}
	var buf bytes.Buffer
	err := c.readMulti(func(line []byte) error {
		if buf.Len()+len(line)+2 > c.MaxMessage {
			return fmt.Errorf("message larger than %d bytes", c.MaxMessage)
		}
		buf.Write(line)
		buf.WriteString("\r\n")
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("retr %d: %w", n, err)
	}
	return buf.Bytes(), nil
}

// Dele marks message n for deletion.
func (c *Client) Dele(n int) error {
	if _, err := c.cmd("DELE " + strconv.Itoa(n)); err != nil {
		return fmt.Errorf("dele %d: %w", n, err)
	}
	return nil
}

// Rset unmarks every message marked for deletion.
func (c *Client) Rset() error {
	if _, err := c.cmd("RSET"); err != nil {
		return fmt.Errorf("rset: %w", err)
	}
	return nil
}

// Quit ends the session: the server deletes the marked messages before
// it answers +OK. The connection is closed either way.
func (c *Client) Quit() error {
	defer c.conn.Close()
	if _, err := c.cmd("QUIT"); err != nil {
		return fmt.Errorf("quit: %w", err)
	}
	return nil
}

// cmd sends one command line and reads its status line.
func (c *Client) cmd(line string) (string, error) {
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return "", err
	}
	return c.status()
}

// status reads a "+OK ..." or "-ERR ..." line and returns its text.
func (c *Client) status() (string, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return "", err
	}
	line, err := c.readLine()
	if err != nil {
		return "", err
	}
	switch {
	case bytes.HasPrefix(line, []byte("+OK")):
		return strings.TrimSpace(string(line[3:])), nil
	case bytes.HasPrefix(line, []byte("-ERR")):
		return "", fmt.Errorf("%w: %s", ErrServer, strings.TrimSpace(string(line[4:])))
	default:
		return "", fmt.Errorf("pop3: malformed status line %q", truncate(line))
	}
}

// readMulti reads the lines of a multi-line reply up to the "." line,
// undoing dot-stuffing, and passes each (without CRLF) to fn.
func (c *Client) readMulti(fn func([]byte) error) error {
	for {
		if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
			return err
		}
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if len(line) > 0 && line[0] == '.' {
			if len(line) == 1 {
				return nil
			}
			line = line[1:]
		}
		if err := fn(line); err != nil {
			return err
		}
	}
}

// readLine reads one line, bounded, and strips CRLF (or a bare LF).
func (c *Client) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := c.r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(line) > maxLine {
			return nil, fmt.Errorf("pop3: line longer than %d bytes", maxLine)
		}
	}
	if len(line) > maxLine {
		return nil, fmt.Errorf("pop3: line longer than %d bytes", maxLine)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
