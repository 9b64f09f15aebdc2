package smtp

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	gosmtp "github.com/emersion/go-smtp"
)

// maxHeloLength bounds a HELO/EHLO argument: a domain name has at most 255
// octets (RFC 5321 section 4.5.3.1.2), and an address literal fewer.
const maxHeloLength = 255

// maxLoggedHelo bounds how much of a refused HELO/EHLO argument is logged.
const maxLoggedHelo = 100

// errBadHelo answers a first HELO/EHLO whose argument is neither a domain
// name nor an address literal. go-smtp then forgets the argument and the
// client may try again.
var errBadHelo = &gosmtp.SMTPError{
	Code:         501,
	EnhancedCode: gosmtp.EnhancedCode{5, 5, 4},
	Message:      "HELO/EHLO needs a domain name or an address literal such as [192.0.2.1]",
}

// acceptableHelo reports whether s may be a HELO/EHLO argument (RFC 5321
// section 4.1.1.1): a domain name, or an IPv4 or IPv6 address literal
// ("[192.0.2.1]", "[IPv6:2001:db8::1]"). A domain name is dot-separated
// labels of letters, digits and inner hyphens, with an optional trailing
// dot; underscores are allowed because real hosts use them, and so are
// printable non-ASCII characters in valid UTF-8 (RFC 6531 section 3.7.1).
// Control characters, spaces and anything else are not.
func acceptableHelo(s string) bool {
	if s == "" || len(s) > maxHeloLength || !utf8.ValidString(s) {
		return false
	}
	if strings.HasPrefix(s, "[") {
		// validHelo (trace.go) checks address literals for the Received
		// header with the same rule.
		return strings.HasSuffix(s, "]") && validHelo(s)
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if !heloLabel(label) {
			return false
		}
	}
	return true
}

// heloLabel reports whether label is one label of a HELO/EHLO domain name.
// The 63-octet limit applies to ASCII labels; a UTF-8 label is longer than
// its A-label form, which the client did not send.
func heloLabel(label string) bool {
	if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
		return false
	}
	ascii := true
	for _, r := range label {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		case r >= utf8.RuneSelf && r != utf8.RuneError && unicode.IsPrint(r):
			ascii = false
		default:
			return false
		}
	}
	return !ascii || len(label) <= 63
}

// quoteHelo returns a refused HELO/EHLO argument for the logs: shortened
// and quoted with %q, so that no raw byte of it reaches a log.
func quoteHelo(s string) string {
	if len(s) > maxLoggedHelo {
		s = s[:maxLoggedHelo]
	}
	return fmt.Sprintf("%q", s)
}

// checkRepeatedHelo handles a HELO/EHLO sent again in a session. go-smtp
// does not ask the backend about it: it stores the argument, resets the
// session (which calls this from Reset) and then answers "250 Hello
// <argument>" itself. A bad argument cannot be refused there, so the
// connection is closed with a 421 before go-smtp echoes it (its reply then
// goes nowhere). It runs on go-smtp's connection goroutine.
func (s *session) checkRepeatedHelo() {
	helo := s.conn.Hostname()
	s.mu.Lock()
	same := helo == s.helo
	if !same && acceptableHelo(helo) {
		s.helo = helo
		same = true
	}
	s.mu.Unlock()
	if same {
		return
	}
	s.log.Info("command refused", "op", "helo", "code", 421, "enhanced", "4.5.4", "helo", quoteHelo(helo))
	reply := &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 5, 4}, Message: "HELO/EHLO needs a domain name or an address literal, closing connection"}
	s.sendAndClose(s.conn.Conn(), reply)
}
