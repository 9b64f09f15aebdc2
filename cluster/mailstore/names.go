package mailstore

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Limits on mailbox names.
const (
	maxMailboxName   = 1000
	maxMailboxDepth  = 32
	mailboxDelimiter = "/"
)

// canonicalMailbox validates a mailbox name and returns it with INBOX in
// upper case (RFC 3501 section 5.1: INBOX is case-insensitive, also as
// the first level of a hierarchy).
func canonicalMailbox(name string) (string, error) {
	if name == "" || len(name) > maxMailboxName || !utf8.ValidString(name) {
		return "", fmt.Errorf("mailbox name: %w", schema.ErrInvalid)
	}
	parts := strings.Split(name, mailboxDelimiter)
	if len(parts) > maxMailboxDepth {
		return "", fmt.Errorf("mailbox name too deep: %w", schema.ErrInvalid)
	}
	for _, p := range parts {
		if p == "" {
			return "", fmt.Errorf("mailbox name has an empty level: %w", schema.ErrInvalid)
		}
		for _, r := range p {
			if unicode.IsControl(r) || r == '*' || r == '%' {
				return "", fmt.Errorf("mailbox name: character %q not allowed: %w", r, schema.ErrInvalid)
			}
		}
	}
	if strings.EqualFold(parts[0], schema.InboxName) {
		parts[0] = schema.InboxName
	}
	return strings.Join(parts, mailboxDelimiter), nil
}

// parentMailboxes returns the names of the levels above name, outermost
// first.
func parentMailboxes(name string) []string {
	var out []string
	for i := 0; i < len(name); i++ {
		if name[i] == mailboxDelimiter[0] {
			out = append(out, name[:i])
		}
	}
	return out
}

// normalizeCRLF returns msg with every line ending as CRLF, so that the
// stored size is the exact RFC 822 size every protocol reports.
func normalizeCRLF(msg []byte) []byte {
	bare := 0
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			bare++
		}
	}
	if bare == 0 {
		return msg
	}
	out := make([]byte, 0, len(msg)+bare)
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// headerLength returns the length of the header section of msg, including
// the blank line that ends it, or len(msg) if there is no body.
func headerLength(msg []byte) int {
	if len(msg) >= 2 && msg[0] == '\r' && msg[1] == '\n' {
		return 2
	}
	for i := 0; i+3 < len(msg); i++ {
		if msg[i] == '\r' && msg[i+1] == '\n' && msg[i+2] == '\r' && msg[i+3] == '\n' {
			return i + 4
		}
	}
	return len(msg)
}
