package protocols

import (
	"errors"
	"fmt"
)

// Error is a failure as a protocol reports it: what the client is told is
// kept apart from the internal reason, which is only logged.
type Error struct {
	// Code is the SMTP reply code (451, 550, ...); frontends of other
	// protocols use Temporary and Text.
	Code int
	// Enhanced is the RFC 3463 enhanced status code, such as {5, 1, 1}.
	Enhanced [3]int
	// Text is the human-readable text sent to the client.
	Text string
	// Temporary says whether the client may succeed by retrying later.
	Temporary bool
	// Reason is the internal cause, for logs; never shown to the client.
	Reason error
}

// Error returns the client text and the internal reason.
func (e *Error) Error() string {
	if e.Reason != nil {
		return fmt.Sprintf("%d %s: %v", e.Code, e.Text, e.Reason)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Text)
}

// Unwrap returns the internal reason.
func (e *Error) Unwrap() error { return e.Reason }

// Temporaryf returns a temporary (4xx) error with an internal reason.
func Temporaryf(code int, enhanced [3]int, reason error, format string, args ...any) *Error {
	return &Error{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...), Temporary: true, Reason: reason}
}

// Permanentf returns a permanent (5xx) error with an internal reason.
func Permanentf(code int, enhanced [3]int, reason error, format string, args ...any) *Error {
	return &Error{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...), Reason: reason}
}

// ErrTooManyFailures is returned while a client or an account is throttled
// after repeated failed logins.
var ErrTooManyFailures = errors.New("too many failed login attempts, try again later")

// ErrTooManyConnections is returned when a connection limit is reached.
var ErrTooManyConnections = errors.New("too many connections")
