// Package filter asks content scanners about a message before it is
// stored: rspamd for spam (its HTTP protocol) and ClamAV's clamd for
// viruses (INSTREAM). Both are optional daemons an operator runs beside
// the node; this package only speaks to them and turns their answers into
// a Verdict the SMTP server acts on.
package filter

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Action is what should happen to a message.
type Action int

const (
	// Accept stores the message as usual.
	Accept Action = iota
	// Junk stores the message in the recipient's Junk mailbox.
	Junk
	// Reject refuses the message (550 or 554): it is not stored.
	Reject
	// Defer refuses the message for now (451): the sender retries.
	Defer
)

// String returns the action's name as logs and metrics show it.
func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Junk:
		return "junk"
	case Reject:
		return "reject"
	case Defer:
		return "defer"
	default:
		return fmt.Sprintf("action(%d)", int(a))
	}
}

// Envelope is what a scanner is told about a message besides its bytes.
type Envelope struct {
	RemoteIP string   // the client's address
	Helo     string   // its HELO/EHLO name
	From     string   // envelope sender; empty for the null reverse-path
	Rcpts    []string // envelope recipients
	User     string   // authenticated user, for submissions
	QueueID  string   // the transaction's id in logs and Received
}

// Verdict is a scanner's answer.
type Verdict struct {
	Action Action
	// Reason is a short text for the SMTP reply and the log (a virus name,
	// "spam score 16.2"); it never holds message content.
	Reason string
	// Headers are header fields to add to the stored message (each line
	// ends in CRLF), such as X-Spam-Status.
	Headers []byte
	// Score and Symbols are the spam scanner's findings (zero without one).
	Score   float64
	Symbols []string
	// Scanner names the scanner whose answer decided a Reject or Defer.
	Scanner string
}

// Scanner inspects one message.
type Scanner interface {
	// Name identifies the scanner in logs, metrics and /readyz.
	Name() string
	// Scan returns the scanner's verdict on msg. An error means the
	// scanner could not decide (down, timed out, refused the size).
	Scan(ctx context.Context, env Envelope, msg []byte) (Verdict, error)
}

// ErrUnavailable marks a scanner that could not be asked or did not
// answer; the Chain's failure policy decides what happens to the message.
var ErrUnavailable = errors.New("scanner unavailable")

// Chain runs scanners in order and combines their verdicts: the first
// Reject or Defer wins at once; Junk beats Accept; headers accumulate.
type Chain struct {
	Scanners []Scanner
	// DeferOnFailure answers 451 when a scanner cannot be asked; by
	// default the message is accepted unscanned (and the failure is
	// reported through OnFailure).
	DeferOnFailure bool
	// OnResult, when set, is told of every scan: the scanner, its verdict
	// and its error (metrics, readiness).
	OnResult func(scanner string, v Verdict, err error)
}

// Scan runs every scanner on msg.
func (c *Chain) Scan(ctx context.Context, env Envelope, msg []byte) Verdict {
	out := Verdict{Action: Accept}
	var headers strings.Builder
	for _, s := range c.Scanners {
		v, err := s.Scan(ctx, env, msg)
		if c.OnResult != nil {
			c.OnResult(s.Name(), v, err)
		}
		if err != nil {
			if c.DeferOnFailure {
				return Verdict{Action: Defer, Reason: s.Name() + " unavailable", Scanner: s.Name()}
			}
			continue
		}
		headers.Write(v.Headers)
		if v.Score != 0 || len(v.Symbols) > 0 {
			out.Score, out.Symbols = v.Score, v.Symbols
		}
		switch v.Action {
		case Reject, Defer:
			v.Headers, v.Scanner = nil, s.Name()
			return v
		case Junk:
			out.Action, out.Reason = Junk, v.Reason
		}
	}
	out.Headers = []byte(headers.String())
	return out
}
