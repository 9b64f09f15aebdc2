package protocoltest

import (
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The validation and canonical forms below copy those of the production
// store (cluster/names.go, cluster/messages.go, cluster/password.go), so
// that MemStore accepts and refuses exactly what it does.

// Limits on names and passwords.
const (
	maxAddressLength  = 254
	maxDomainLength   = 253
	maxMailboxName    = 1000
	maxMailboxDepth   = 32
	mailboxDelimiter  = string(protocols.MailboxDelimiter)
	minPasswordLength = 8
	maxPasswordLength = 1024
	maxFlagLength     = 256
)

// canonicalDomain validates a domain name and returns it in lower case.
func canonicalDomain(name string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if d == "" || len(d) > maxDomainLength || !strings.Contains(d, ".") {
		return "", fmt.Errorf("domain %q: %w", name, schema.ErrInvalid)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("domain %q: bad label: %w", name, schema.ErrInvalid)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("domain %q: use the ASCII (punycode) form: %w", name, schema.ErrInvalid)
			}
		}
	}
	return d, nil
}

// canonicalAddress validates an address and returns it in lower case with
// its domain.
func canonicalAddress(addr string) (address, domain string, err error) {
	a := strings.TrimSpace(addr)
	if len(a) > maxAddressLength {
		return "", "", fmt.Errorf("address too long: %w", schema.ErrInvalid)
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", "", fmt.Errorf("malformed address: %w", schema.ErrInvalid)
	}
	local := a[:at]
	domain, err = canonicalDomain(a[at+1:])
	if err != nil {
		return "", "", err
	}
	if !utf8.ValidString(local) || strings.ContainsAny(local, " \t\r\n<>()[]\\,;:\"") {
		return "", "", fmt.Errorf("address has a bad local part: %w", schema.ErrInvalid)
	}
	if _, err := mail.ParseAddress(local + "@" + domain); err != nil {
		return "", "", fmt.Errorf("malformed address: %w", schema.ErrInvalid)
	}
	return strings.ToLower(local) + "@" + domain, domain, nil
}

// validatePassword enforces the production store's password length.
func validatePassword(pw string) error {
	if len(pw) < minPasswordLength {
		return fmt.Errorf("password must be at least %d characters: %w", minPasswordLength, schema.ErrInvalid)
	}
	if len(pw) > maxPasswordLength {
		return fmt.Errorf("password longer than %d bytes: %w", maxPasswordLength, schema.ErrInvalid)
	}
	return nil
}

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

// isBelow reports whether name is parent or one of its descendants.
func isBelow(name, parent string) bool {
	return name == parent || strings.HasPrefix(name, parent+mailboxDelimiter)
}

// specialUses are the special-use attributes a mailbox may be created with.
var specialUses = map[string]bool{
	schema.SpecialNone: true, schema.SpecialSent: true, schema.SpecialDrafts: true,
	schema.SpecialTrash: true, schema.SpecialJunk: true, schema.SpecialArchive: true,
	`\All`: true, `\Flagged`: true,
}

// normalizeCRLF returns msg with every line ending as CRLF, so that the
// stored size is the exact RFC 822 size every protocol reports. It
// returns msg itself when there is nothing to change.
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

// canonicalFlags validates flags and removes duplicates (compared
// case-insensitively) and \Recent, which clients cannot set.
func canonicalFlags(flags []string) ([]string, error) {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if !validFlag(f) {
			return nil, fmt.Errorf("flag %q: %w", f, schema.ErrInvalid)
		}
		if strings.EqualFold(f, `\Recent`) || containsFold(out, f) {
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// validFlag reports whether f is a flag: an IMAP atom, optionally after
// a backslash (RFC 3501 section 9, flag-keyword and flag-extension).
func validFlag(f string) bool {
	atom := strings.TrimPrefix(f, `\`)
	if atom == "" || len(f) > maxFlagLength {
		return false
	}
	for i := 0; i < len(atom); i++ {
		c := atom[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

// applyFlags returns cur changed by op.
func applyFlags(cur []string, op schema.FlagOp, flags []string) []string {
	switch op {
	case schema.FlagsSet:
		return slices.Clone(flags)
	case schema.FlagsAdd:
		out := slices.Clone(cur)
		for _, f := range flags {
			if !containsFold(out, f) {
				out = append(out, f)
			}
		}
		return out
	default:
		return slices.DeleteFunc(slices.Clone(cur), func(x string) bool { return containsFold(flags, x) })
	}
}

// sameFlags reports whether a and b hold the same flags, in any order.
func sameFlags(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, f := range a {
		if !containsFold(b, f) {
			return false
		}
	}
	return true
}

// storedFlags is flags as the production store returns them after a
// round trip through its sealed record: nil when empty.
func storedFlags(flags []string) []string {
	if len(flags) == 0 {
		return nil
	}
	return slices.Clone(flags)
}
