package schema

// The rules for names and flags, shared by every implementation of the
// mail store (one rule, one place): domains, addresses, mailbox names,
// flags, passwords and the line endings of stored messages.

import (
	"bytes"
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

// MailboxNameError says why a mailbox name is refused, in words a client
// may be shown. It is ErrInvalid to errors.Is.
type MailboxNameError struct {
	Reason string
	// Limit is set when the name breaks a size limit (length, depth)
	// rather than the grammar.
	Limit bool
}

func (e *MailboxNameError) Error() string { return "mailbox name: " + e.Reason }

// Unwrap makes every MailboxNameError an ErrInvalid.
func (e *MailboxNameError) Unwrap() error { return ErrInvalid }

// CheckMailboxName is the one grammar of mailbox names, for every path
// that creates or renames one (IMAP, the admin API, imports): valid UTF-8
// of at most 1,000 bytes and 32 levels; no empty level (so no leading,
// trailing or doubled delimiter); no level "." or ".." (clients that map
// mailboxes onto directories refuse a whole account that has one); no
// control characters and no LIST wildcards.
func CheckMailboxName(name string) error { return checkMailboxName(name, true) }

// checkMailboxName checks name; lookups skip the rule on "." and ".."
// (strict false), so mailboxes made before it existed can still be
// opened, renamed and deleted.
func checkMailboxName(name string, strict bool) error {
	switch {
	case name == "":
		return &MailboxNameError{Reason: "empty"}
	case len(name) > maxMailboxName:
		return &MailboxNameError{Reason: fmt.Sprintf("longer than %d bytes", maxMailboxName), Limit: true}
	case !utf8.ValidString(name):
		return &MailboxNameError{Reason: "not valid UTF-8"}
	}
	for _, r := range name {
		switch {
		case unicode.IsControl(r) || r == utf8.RuneError:
			return &MailboxNameError{Reason: "contains a control character"}
		case r == '*' || r == '%':
			return &MailboxNameError{Reason: "contains a wildcard (* or %)"}
		}
	}
	levels := strings.Split(name, MailboxDelimiter)
	if len(levels) > maxMailboxDepth {
		return &MailboxNameError{Reason: fmt.Sprintf("deeper than %d levels", maxMailboxDepth), Limit: true}
	}
	for _, l := range levels {
		switch l {
		case "":
			return &MailboxNameError{Reason: "has an empty level"}
		case ".", "..":
			if !strict {
				continue
			}
			return &MailboxNameError{Reason: `has a level "." or ".."`}
		}
	}
	return nil
}

// CanonicalMailbox validates the name of an existing mailbox (as
// CheckMailboxName, but a "." or ".." level made before that rule is
// still found) and returns it with INBOX in upper case (RFC 3501 section
// 5.1: INBOX is case-insensitive, also as the first level of a
// hierarchy). Names of new mailboxes also pass CheckMailboxName.
func CanonicalMailbox(name string) (string, error) {
	if err := checkMailboxName(name, false); err != nil {
		return "", err
	}
	parts := strings.Split(name, MailboxDelimiter)
	if strings.EqualFold(parts[0], InboxName) {
		parts[0] = InboxName
	}
	return strings.Join(parts, MailboxDelimiter), nil
}

// CanonicalNewMailbox is CanonicalMailbox for the name of a mailbox
// about to be created or renamed to: it must pass CheckMailboxName.
func CanonicalNewMailbox(name string) (string, error) {
	if err := CheckMailboxName(name); err != nil {
		return "", err
	}
	return CanonicalMailbox(name)
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
	// Counted a line at a time (IndexByte runs at memory speed): the
	// mail of every delivery passes here, nearly always already CRLF.
	bare := 0
	for i := 0; ; {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || msg[i-1] != '\r' {
			bare++
		}
		i++
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
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
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
