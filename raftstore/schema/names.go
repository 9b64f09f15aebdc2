package schema

// The rules for names and flags, shared by every implementation of the
// mail store (one rule, one place): domains, addresses, mailbox names,
// flags, passwords and the line endings of stored messages.

import (
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on names.
const (
	maxAddressLength = 254
	maxDomainLength  = 253
	maxMailboxName   = 1000
	maxMailboxDepth  = 32
	// MailboxDelimiter separates the levels of a mailbox name.
	MailboxDelimiter = "/"
	// MinPasswordLength and MaxPasswordLength bound passwords.
	MinPasswordLength = 8
	MaxPasswordLength = 1024
)

// CanonicalDomain validates a domain name and returns it in lower case.
func CanonicalDomain(name string) (string, error) {
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if d == "" || len(d) > maxDomainLength || !strings.Contains(d, ".") {
		return "", fmt.Errorf("domain %q: %w", name, ErrInvalid)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("domain %q: bad label: %w", name, ErrInvalid)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("domain %q: use the ASCII (punycode) form: %w", name, ErrInvalid)
			}
		}
	}
	return d, nil
}

// CanonicalAddress validates an address and returns it in lower case with
// its domain.
func CanonicalAddress(addr string) (address, domain string, err error) {
	a := strings.TrimSpace(addr)
	if len(a) > maxAddressLength {
		return "", "", fmt.Errorf("address too long: %w", ErrInvalid)
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", "", fmt.Errorf("malformed address: %w", ErrInvalid)
	}
	local := a[:at]
	domain, err = CanonicalDomain(a[at+1:])
	if err != nil {
		return "", "", err
	}
	if !utf8.ValidString(local) || strings.ContainsAny(local, " \t\r\n<>()[]\\,;:\"") {
		return "", "", fmt.Errorf("address has a bad local part: %w", ErrInvalid)
	}
	if _, err := mail.ParseAddress(local + "@" + domain); err != nil {
		return "", "", fmt.Errorf("malformed address: %w", ErrInvalid)
	}
	return strings.ToLower(local) + "@" + domain, domain, nil
}

// CanonicalMailbox validates a mailbox name and returns it with INBOX in
// upper case (RFC 3501 section 5.1: INBOX is case-insensitive, also as
// the first level of a hierarchy).
func CanonicalMailbox(name string) (string, error) {
	if name == "" || len(name) > maxMailboxName || !utf8.ValidString(name) {
		return "", fmt.Errorf("mailbox name: %w", ErrInvalid)
	}
	parts := strings.Split(name, MailboxDelimiter)
	if len(parts) > maxMailboxDepth {
		return "", fmt.Errorf("mailbox name too deep: %w", ErrInvalid)
	}
	for _, p := range parts {
		if p == "" {
			return "", fmt.Errorf("mailbox name has an empty level: %w", ErrInvalid)
		}
		for _, r := range p {
			if unicode.IsControl(r) || r == '*' || r == '%' {
				return "", fmt.Errorf("mailbox name: character %q not allowed: %w", r, ErrInvalid)
			}
		}
	}
	if strings.EqualFold(parts[0], InboxName) {
		parts[0] = InboxName
	}
	return strings.Join(parts, MailboxDelimiter), nil
}

// ParentMailboxes returns the names of the levels above name, outermost
// first.
func ParentMailboxes(name string) []string {
	var out []string
	for i := 0; i < len(name); i++ {
		if name[i] == MailboxDelimiter[0] {
			out = append(out, name[:i])
		}
	}
	return out
}

// NormalizeCRLF returns msg with every line ending as CRLF, so that the
// stored size is the exact RFC 822 size every protocol reports.
func NormalizeCRLF(msg []byte) []byte {
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

// HeaderLength returns the length of the header section of msg, including
// the blank line that ends it, or len(msg) if there is no body.
func HeaderLength(msg []byte) int {
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

// CanonicalFlags validates flags and removes duplicates (compared
// case-insensitively) and \Recent, which clients cannot set.
func CanonicalFlags(flags []string) ([]string, error) {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if !ValidFlag(f) {
			return nil, fmt.Errorf("flag %q: %w", f, ErrInvalid)
		}
		if strings.EqualFold(f, `\Recent`) || ContainsFold(out, f) {
			continue
		}
		out = append(out, f)
	}
	return out, nil
}

// ValidFlag reports whether f is a flag: an IMAP atom, optionally after
// a backslash (RFC 3501 section 9, flag-keyword and flag-extension).
func ValidFlag(f string) bool {
	atom := strings.TrimPrefix(f, `\`)
	if atom == "" || len(f) > 256 {
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

// ContainsFold reports whether list holds s, compared case-insensitively
// as IMAP flags are.
func ContainsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

// ApplyFlags returns cur changed by op with flags.
func ApplyFlags(cur []string, op FlagOp, flags []string) []string {
	switch op {
	case FlagsSet:
		return slices.Clone(flags)
	case FlagsAdd:
		out := slices.Clone(cur)
		for _, f := range flags {
			if !ContainsFold(out, f) {
				out = append(out, f)
			}
		}
		return out
	default:
		return slices.DeleteFunc(slices.Clone(cur), func(x string) bool { return ContainsFold(flags, x) })
	}
}

// SameFlags reports whether a and b hold the same flags in any order.
func SameFlags(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, f := range a {
		if !ContainsFold(b, f) {
			return false
		}
	}
	return true
}

// ValidatePassword checks a new password's length.
func ValidatePassword(pw string) error {
	if len(pw) < MinPasswordLength {
		return fmt.Errorf("password must be at least %d characters: %w", MinPasswordLength, ErrInvalid)
	}
	if len(pw) > MaxPasswordLength {
		return fmt.Errorf("password longer than %d bytes: %w", MaxPasswordLength, ErrInvalid)
	}
	return nil
}

// specialUses are the special-use attributes (RFC 6154) a mailbox may be
// created with.
var specialUses = map[string]bool{
	SpecialNone: true, SpecialSent: true, SpecialDrafts: true,
	SpecialTrash: true, SpecialJunk: true, SpecialArchive: true,
	`\All`: true, `\Flagged`: true,
}

// ValidSpecialUse reports whether a mailbox may be created with the
// special-use attribute s ("" for none).
func ValidSpecialUse(s string) bool { return specialUses[s] }
