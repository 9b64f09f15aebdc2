package smtp

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

// traceInfo is what the Received header of one message records.
type traceInfo struct {
	helo     string     // the client's HELO/EHLO argument
	remote   netip.Addr // the client's IP address
	hostname string     // this server
	protocol string     // ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS... (RFC 3848, RFC 6531)
	id       string     // connection id and transaction number
	tls      string     // protocols.DescribeTLS, or "" without TLS
	rcpts    []string   // envelope recipients; recorded only when there is one
	from     string     // envelope sender, "" for the null reverse-path
	date     time.Time
}

// protocolName returns the "with" keyword of a Received header: RFC 3848
// (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 section 3.7.3 (UTF8SMTP...).
func protocolName(utf8Mode, tls, auth bool) string {
	name := "ESMTP"
	if utf8Mode {
		name = "UTF8SMTP"
	}
	if tls {
		name += "S"
	}
	if auth {
		name += "A"
	}
	return name
}

// stamp returns msg with the trace fields of its final delivery in front
// (RFC 5321 section 4.4: Return-Path, then Received) followed by extra
// header fields (the submission fixes). When msg is still where
// readMessage put it, stampRoom bytes into buf, and the fields fit in
// that room, they are written there and the message is not copied (for
// large mail, a copy of every byte and an allocation the size of the
// message); otherwise the result is a new buffer.
func stamp(buf, msg []byte, t traceInfo, extra []byte) []byte {
	returnPath := "Return-Path: <" + formatPath(t.from) + ">\r\n"
	received := t.received()
	n := len(returnPath) + len(received) + len(extra)
	if n <= stampRoom && len(msg) > 0 && len(buf) >= stampRoom+len(msg) && &buf[stampRoom] == &msg[0] {
		out := buf[stampRoom-n : stampRoom+len(msg)]
		k := copy(out, returnPath)
		k += copy(out[k:], received)
		copy(out[k:], extra)
		return out
	}
	out := make([]byte, 0, n+len(msg))
	out = append(out, returnPath...)
	out = append(out, received...)
	out = append(out, extra...)
	return append(out, msg...)
}

// stampRelay is stamp without Return-Path, for a message that goes on
// to another server: Return-Path is added at final delivery only, and a
// message sent on should not carry one (RFC 5321 section 4.4).
func stampRelay(msg []byte, t traceInfo, extra []byte) []byte {
	received := t.received()
	out := make([]byte, 0, len(received)+len(extra)+len(msg))
	out = append(out, received...)
	out = append(out, extra...)
	return append(out, msg...)
}

// received formats the Received header field (RFC 5321 section 4.4),
// folded so that no line is overly long. Everything the client chose is
// sanitized, so the field cannot be broken by what the client sent.
func (t traceInfo) received() string {
	var b strings.Builder
	b.WriteString("Received: from ")
	lit := addressLiteral(t.remote)
	if helo := t.helo; validHelo(helo) {
		b.WriteString(helo)
		b.WriteString(" (")
		b.WriteString(lit)
		b.WriteString(")")
	} else {
		b.WriteString(lit)
		b.WriteString(" (helo=")
		b.WriteString(commentText(helo, 255))
		b.WriteString(")")
	}
	b.WriteString("\r\n\tby ")
	b.WriteString(commentText(t.hostname, 255))
	b.WriteString(" (mailcluster) with ")
	b.WriteString(t.protocol)
	b.WriteString(" id ")
	b.WriteString(t.id)
	if t.tls != "" {
		b.WriteString("\r\n\t(")
		b.WriteString(commentText(t.tls, 255))
		b.WriteString(")")
	}
	if len(t.rcpts) == 1 {
		// With several recipients, naming one would disclose it to the
		// others (RFC 5321 section 7.2).
		b.WriteString("\r\n\tfor <")
		b.WriteString(formatPath(t.rcpts[0]))
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(t.date.Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// submissionFields returns the Date and Message-ID fields a submission
// server adds when the message lacks them (RFC 6409 section 8).
func submissionFields(h textproto.Header, now time.Time, hostname string) ([]byte, error) {
	var b strings.Builder
	if !h.Has("Date") {
		b.WriteString("Date: ")
		b.WriteString(now.Format(time.RFC1123Z))
		b.WriteString("\r\n")
	}
	if !h.Has("Message-Id") {
		var r [16]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, fmt.Errorf("message id: %w", err)
		}
		local := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(r[:]))
		domain := messageIDDomain(hostname)
		b.WriteString("Message-ID: <" + local + "@" + domain + ">\r\n")
	}
	return []byte(b.String()), nil
}

// messageIDDomain returns hostname if it can be the right side of a
// Message-ID (a dot-atom), or "localhost".
func messageIDDomain(hostname string) string {
	if hostname == "" || len(hostname) > 255 {
		return "localhost"
	}
	for _, part := range strings.Split(hostname, ".") {
		if part == "" || !isAtext(part) {
			return "localhost"
		}
	}
	return hostname
}

// addressLiteral returns the RFC 5321 section 4.1.3 address literal of ip.
func addressLiteral(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "unknown"
	case ip.Is4():
		return "[" + ip.String() + "]"
	default:
		return "[IPv6:" + ip.String() + "]"
	}
}

// validHelo reports whether a HELO/EHLO argument is a domain name or an
// address literal, and so may appear bare in a Received header.
func validHelo(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		inner := s[1 : len(s)-1]
		if v6, ok := strings.CutPrefix(inner, "IPv6:"); ok {
			a, err := netip.ParseAddr(v6)
			return err == nil && a.Is6()
		}
		a, err := netip.ParseAddr(inner)
		return err == nil && a.Is4()
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// commentText makes s safe inside a header comment: printable ASCII only,
// no parentheses or backslashes, at most max bytes.
func commentText(s string, max int) string {
	s = sanitize(s, max)
	return strings.Map(func(r rune) rune {
		if r == '(' || r == ')' || r == '\\' {
			return '?'
		}
		return r
	}, s)
}

// sanitize returns s reduced to printable ASCII (others become '?'),
// truncated to max bytes, for headers and logs.
func sanitize(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f {
			return '?'
		}
		return r
	}, s)
}

// formatPath formats an envelope address for a path (<...>): the local
// part is quoted when it is not a dot-atom (RFC 5321 section 4.1.2). The
// address has passed checkAddress, so it holds no control characters.
func formatPath(addr string) string {
	if addr == "" {
		return ""
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return quoteLocal(addr)
	}
	local, domain := addr[:at], addr[at+1:]
	return quoteLocal(local) + "@" + sanitizeDomain(domain)
}

// quoteLocal returns local as a dot-string or, failing that, a quoted
// string.
func quoteLocal(local string) string {
	dotAtom := local != ""
	for _, part := range strings.Split(local, ".") {
		if part == "" || !isAtext(part) {
			dotAtom = false
			break
		}
	}
	if dotAtom {
		return local
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range local {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// sanitizeDomain keeps a domain (or address literal) from breaking the
// path syntax.
func sanitizeDomain(d string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20 || r == 0x7f:
			return '?'
		case strings.ContainsRune(" <>()\\\",;@", r):
			return '?'
		}
		return r
	}, d)
}

// isAtext reports whether s consists of RFC 5322 atext characters (with
// RFC 6532's UTF-8 extension).
func isAtext(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 0x80:
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r):
		default:
			return false
		}
	}
	return true
}
