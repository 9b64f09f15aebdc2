package filter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Clamd asks ClamAV's clamd about viruses over its INSTREAM command. An
// infected message is rejected (554 5.7.1) and not stored.
type Clamd struct {
	// Address is tcp://HOST:PORT or unix:///path/to/clamd.ctl.
	Address string
	// Timeout bounds one scan (default 60 s).
	Timeout time.Duration
}

// clamdChunk is the size of one INSTREAM chunk.
const clamdChunk = 64 << 10

// maxClamdReply bounds clamd's one-line answer.
const maxClamdReply = 4 << 10

// Name identifies the scanner.
func (c *Clamd) Name() string { return "clamd" }

// dial connects to clamd.
func (c *Clamd) dial(ctx context.Context) (net.Conn, error) {
	u, err := url.Parse(c.Address)
	if err != nil {
		return nil, fmt.Errorf("clamd address %q: %v", c.Address, err)
	}
	var d net.Dialer
	switch u.Scheme {
	case "tcp":
		return d.DialContext(ctx, "tcp", u.Host)
	case "unix":
		return d.DialContext(ctx, "unix", u.Path)
	default:
		return nil, fmt.Errorf("clamd address %q: want tcp://HOST:PORT or unix:///PATH", c.Address)
	}
}

// Scan streams msg to clamd.
func (c *Clamd) Scan(ctx context.Context, _ Envelope, msg []byte) (Verdict, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.dial(ctx)
	if err != nil {
		return Verdict{}, fmt.Errorf("clamd: %w: %v", ErrUnavailable, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	w := bufio.NewWriterSize(conn, clamdChunk+4)
	if _, err := w.WriteString("zINSTREAM\x00"); err != nil {
		return Verdict{}, fmt.Errorf("clamd: %w: %v", ErrUnavailable, err)
	}
	var size [4]byte
	for rest := msg; len(rest) > 0; {
		n := min(len(rest), clamdChunk)
		binary.BigEndian.PutUint32(size[:], uint32(n))
		w.Write(size[:])
		if _, err := w.Write(rest[:n]); err != nil {
			// clamd closes the stream when it reaches its size limit;
			// its answer, if any, says so.
			break
		}
		rest = rest[n:]
	}
	binary.BigEndian.PutUint32(size[:], 0)
	w.Write(size[:])
	w.Flush() // an error here shows as a missing or error answer

	reply, err := bufio.NewReaderSize(conn, maxClamdReply).ReadSlice(0)
	if err != nil {
		return Verdict{}, fmt.Errorf("clamd: %w: no answer: %v", ErrUnavailable, err)
	}
	return parseClamd(string(bytes.TrimRight(reply, "\x00\n")))
}

// parseClamd reads clamd's answer to INSTREAM: "stream: OK",
// "stream: NAME FOUND" or "... ERROR".
func parseClamd(reply string) (Verdict, error) {
	reply = strings.TrimSpace(strings.TrimPrefix(reply, "stream:"))
	switch {
	case reply == "OK":
		return Verdict{Action: Accept}, nil
	case strings.HasSuffix(reply, " FOUND"):
		name := headerSafe(strings.TrimSuffix(reply, " FOUND"))
		if len(name) > 128 {
			name = name[:128]
		}
		return Verdict{Action: Reject, Reason: "virus " + name}, nil
	default:
		if len(reply) > 200 {
			reply = reply[:200]
		}
		return Verdict{}, fmt.Errorf("clamd: %w: %q", ErrUnavailable, reply)
	}
}
