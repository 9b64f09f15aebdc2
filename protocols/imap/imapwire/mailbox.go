package imapwire

import (
	"bytes"
	"errors"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrMailboxEncoding is the cause of DecodeMailbox's errors: the name is
// not valid modified UTF-7 (RFC 3501 section 5.1.3) with optional UTF-8
// (RFC 6855), or it holds control characters.
var ErrMailboxEncoding = errors.New("mailbox name is not valid modified UTF-7")

// mailboxError is an ErrMailboxEncoding with the reason.
type mailboxError struct{ reason string }

func (e *mailboxError) Error() string { return "mailbox name: " + e.reason }
func (e *mailboxError) Unwrap() error { return ErrMailboxEncoding }

// Reason says why a name was refused, in words a client may be shown.
func Reason(err error) string {
	var me *mailboxError
	if errors.As(err, &me) {
		return me.reason
	}
	return err.Error()
}

// base64 alphabet of modified UTF-7: RFC 2045's with ',' for '/'.
const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"

var b64Value = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(b64); i++ {
		t[b64[i]] = int8(i)
	}
	return t
}()

// DecodeMailbox decodes a mailbox name as a client sends it: modified
// UTF-7, in which UTF-8 is also accepted (as the IMAP library and
// UTF8=ACCEPT clients do). INBOX in any case is "INBOX". It refuses
// invalid UTF-8, control characters (raw or encoded), shifted sequences
// that are empty, unterminated, not whole UTF-16 or that encode
// printable ASCII (RFC 3501 section 5.1.3).
func DecodeMailbox(raw []byte) (string, error) {
	if strings.EqualFold(string(raw), "INBOX") {
		return "INBOX", nil
	}
	if !utf8.Valid(raw) {
		return "", &mailboxError{"not valid UTF-8"}
	}
	var sb strings.Builder
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '&' {
			r, n := utf8.DecodeRune(raw[i:])
			if unicode.IsControl(r) {
				return "", &mailboxError{"contains a control character"}
			}
			sb.WriteRune(r)
			i += n
			continue
		}
		end := i + 1
		for end < len(raw) && raw[end] != '-' {
			end++
		}
		if end == len(raw) {
			return "", &mailboxError{"unterminated modified UTF-7 shift (&...)"}
		}
		if end == i+1 {
			sb.WriteByte('&') // "&-"
			i = end + 1
			continue
		}
		if err := decodeShift(&sb, raw[i+1:end]); err != nil {
			return "", err
		}
		i = end + 1
	}
	return sb.String(), nil
}

// decodeShift decodes the base64 of one shifted sequence into sb.
func decodeShift(sb *strings.Builder, enc []byte) error {
	var units []uint16
	var bits uint32
	var nbits uint
	for _, c := range enc {
		v := b64Value[c]
		if v < 0 {
			return &mailboxError{"invalid character in modified UTF-7"}
		}
		bits = bits<<6 | uint32(v)
		nbits += 6
		if nbits >= 16 {
			nbits -= 16
			units = append(units, uint16(bits>>nbits))
			bits &= 1<<nbits - 1
		}
	}
	// What is left must be padding: fewer than 6 bits, all zero.
	if nbits >= 6 || bits != 0 || len(units) == 0 {
		return &mailboxError{"modified UTF-7 does not end on a character"}
	}
	for i := 0; i < len(units); i++ {
		u := units[i]
		var r rune
		switch {
		case utf16.IsSurrogate(rune(u)):
			if i+1 == len(units) {
				return &mailboxError{"broken UTF-16 in modified UTF-7"}
			}
			r = utf16.DecodeRune(rune(u), rune(units[i+1]))
			if r == utf8.RuneError {
				return &mailboxError{"broken UTF-16 in modified UTF-7"}
			}
			i++
		default:
			r = rune(u)
		}
		if r >= 0x20 && r <= 0x7e {
			return &mailboxError{"modified UTF-7 encodes printable ASCII"}
		}
		if unicode.IsControl(r) {
			return &mailboxError{"contains a control character"}
		}
		sb.WriteRune(r)
	}
	return nil
}

// DecodeMailboxUTF8 decodes a mailbox name as a client sends it once it
// has enabled UTF8=ACCEPT (RFC 6855 section 3): UTF-8 as it stands, "&"
// an ordinary character. INBOX in any case is "INBOX". It refuses
// invalid UTF-8 and control characters.
func DecodeMailboxUTF8(raw []byte) (string, error) {
	if strings.EqualFold(string(raw), "INBOX") {
		return "INBOX", nil
	}
	if !utf8.Valid(raw) {
		return "", &mailboxError{"not valid UTF-8"}
	}
	for _, r := range string(raw) {
		if unicode.IsControl(r) {
			return "", &mailboxError{"contains a control character"}
		}
	}
	return string(raw), nil
}

// EscapeAmpersands writes a UTF-8 mailbox name so that DecodeMailbox
// reads it back unchanged: every "&" becomes "&-".
func EscapeAmpersands(name []byte) []byte {
	n := bytes.Count(name, []byte("&"))
	if n == 0 {
		return name
	}
	out := make([]byte, 0, len(name)+n)
	for _, c := range name {
		out = append(out, c)
		if c == '&' {
			out = append(out, '-')
		}
	}
	return out
}

// AppendString appends s to a command as a quoted string, or as a
// non-synchronizing literal when it holds CR, LF or NUL.
func AppendString(dst, s []byte) []byte { return appendString(dst, s) }
