package directory

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The Sender Rewriting Scheme (SRS) keeps SPF passing for forwarded
// mail: the envelope sender becomes an address of ours that encodes the
// original one, so that bounces come back to us and can be relayed to
// it. The forms are those of Shevek's de-facto specification (the one
// libsrs2 and postsrsd implement):
//
//	SRS0=HHHHHH=TT=orig-domain=orig-local@srs-domain
//	SRS1=HHHHHH=first-forwarder==HHHHHH=TT=orig-domain=orig-local@srs-domain
//
// HHHHHH is the keyed hash, here HMAC-SHA256 over the lower-cased parts,
// base32 and truncated to srsHashLength characters; TT the day of the
// rewriting, days since the Unix epoch modulo 1024 in two base32
// characters. An SRS1 address is what a second forwarder makes of an
// SRS0 one: it names the first forwarder, keeps the SRS0 part opaque,
// and is reversed to the SRS0 address at the first forwarder.
const (
	// SRSMaxAge is how old (in days) a rewritten address may be when a
	// bounce comes back to it.
	SRSMaxAge = 21
	// srsHashLength is the number of base32 characters of the hash kept
	// (30 bits).
	srsHashLength = 6
	// maxSRSAddress bounds the addresses the parser looks at (RFC 5321
	// section 4.5.3.1.3: a path is at most 256 octets).
	maxSRSAddress = 254
)

// srsTimeBase is the base32 alphabet of SRS timestamps and hashes.
const srsTimeBase = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

var srsHashEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Errors of SRS addresses.
var (
	// ErrNotSRS: the address is not in an SRS form.
	ErrNotSRS = errors.New("not an SRS address")
	// ErrSRSForged: the hash does not match (a forged or damaged
	// address).
	ErrSRSForged = errors.New("SRS address with a wrong hash")
	// ErrSRSExpired: the address is older than SRSMaxAge days.
	ErrSRSExpired = errors.New("SRS address expired")
)

// SRS rewrites and reverses envelope senders with one secret.
type SRS struct {
	secret []byte
}

// NewSRS returns the rewriter keyed by secret (at least 16 bytes).
func NewSRS(secret []byte) (*SRS, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("srs secret of %d bytes: want at least 16", len(secret))
	}
	return &SRS{secret: append([]byte(nil), secret...)}, nil
}

func (s *SRS) hash(parts ...string) string {
	m := hmac.New(sha256.New, s.secret)
	for _, p := range parts {
		m.Write([]byte(strings.ToLower(p)))
		m.Write([]byte{0}) // parts cannot run into each other
	}
	return srsHashEncoding.EncodeToString(m.Sum(nil))[:srsHashLength]
}

func srsTimestamp(now time.Time) string {
	day := (now.Unix() / 86400) % 1024
	return string([]byte{srsTimeBase[day>>5], srsTimeBase[day&31]})
}

// srsAge returns the age in days of timestamp ts at now (ts is taken
// modulo 1024 days, so a stamp from the future is very old).
func srsAge(ts string, now time.Time) (int64, bool) {
	if len(ts) != 2 {
		return 0, false
	}
	hi := strings.IndexByte(srsTimeBase, upper(ts[0]))
	lo := strings.IndexByte(srsTimeBase, upper(ts[1]))
	if hi < 0 || lo < 0 {
		return 0, false
	}
	then := int64(hi<<5 | lo)
	today := (now.Unix() / 86400) % 1024
	return ((today-then)%1024 + 1024) % 1024, true
}

func upper(b byte) byte {
	if b >= 'a' && b <= 'z' {
		return b - 'a' + 'A'
	}
	return b
}

// Forward rewrites the envelope sender from for mail forwarded through
// domain, at now. The null sender stays null. An SRS0 address becomes an
// SRS1 one naming its forwarder; an SRS1 address keeps its first
// forwarder and opaque part and gets our hash and domain.
func (s *SRS) Forward(from, domain string, now time.Time) (string, error) {
	if from == "" {
		return "", nil
	}
	if len(from) > maxSRSAddress {
		return "", fmt.Errorf("srs forward: address of %d bytes: %w", len(from), ErrNotSRS)
	}
	at := strings.LastIndexByte(from, '@')
	if at <= 0 || at == len(from)-1 {
		return "", fmt.Errorf("srs forward: %q is not an address: %w", from, ErrNotSRS)
	}
	local, host := from[:at], from[at+1:]
	switch {
	case hasPrefixFold(local, "SRS0") && len(local) > 5 && isSRSSeparator(local[4]):
		opaque := "=" + local[5:]
		return "SRS1=" + s.hash(host, opaque) + "=" + host + "=" + opaque + "@" + domain, nil
	case hasPrefixFold(local, "SRS1") && len(local) > 5 && isSRSSeparator(local[4]):
		// SRS1=HHH=first==opaque: keep first and opaque.
		parts := strings.SplitN(local[5:], "=", 3)
		if len(parts) == 3 && parts[1] != "" && strings.HasPrefix(parts[2], "=") {
			first, opaque := parts[1], parts[2]
			return "SRS1=" + s.hash(first, opaque) + "=" + first + "=" + opaque + "@" + domain, nil
		}
	}
	ts := srsTimestamp(now)
	return "SRS0=" + s.hash(ts, host, local) + "=" + ts + "=" + host + "=" + local + "@" + domain, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// isSRSSeparator reports whether b may follow "SRS0"/"SRS1" (libsrs2
// accepts '=', '+' and '-' there).
func isSRSSeparator(b byte) bool { return b == '=' || b == '+' || b == '-' }

// Reverse returns the address a bounce to addr goes back to: for SRS0,
// the original sender, checked by hash and age (at most SRSMaxAge days
// at now); for SRS1, the first forwarder's SRS0 address, checked by
// hash. ErrNotSRS: addr is not an SRS address; ErrSRSForged,
// ErrSRSExpired: it is one this secret did not make, or an old one.
func (s *SRS) Reverse(addr string, now time.Time) (string, error) {
	if len(addr) > maxSRSAddress {
		return "", fmt.Errorf("srs reverse: address of %d bytes: %w", len(addr), ErrNotSRS)
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", ErrNotSRS
	}
	local := addr[:at]
	if len(local) < 6 || !isSRSSeparator(local[4]) {
		return "", ErrNotSRS
	}
	switch {
	case hasPrefixFold(local, "SRS0"):
		// HHH=TT=domain=local (the original local part may hold '=').
		parts := strings.SplitN(local[5:], "=", 4)
		if len(parts) != 4 || parts[2] == "" || parts[3] == "" {
			return "", fmt.Errorf("srs reverse: malformed SRS0 address: %w", ErrNotSRS)
		}
		hash, ts, host, orig := parts[0], parts[1], parts[2], parts[3]
		if !hmac.Equal([]byte(strings.ToUpper(hash)), []byte(s.hash(ts, host, orig))) {
			return "", ErrSRSForged
		}
		age, ok := srsAge(ts, now)
		if !ok {
			return "", fmt.Errorf("srs reverse: malformed timestamp: %w", ErrNotSRS)
		}
		if age > SRSMaxAge {
			return "", ErrSRSExpired
		}
		return orig + "@" + host, nil
	case hasPrefixFold(local, "SRS1"):
		// HHH=first==opaque
		parts := strings.SplitN(local[5:], "=", 3)
		if len(parts) != 3 || parts[1] == "" || !strings.HasPrefix(parts[2], "=") || len(parts[2]) < 2 {
			return "", fmt.Errorf("srs reverse: malformed SRS1 address: %w", ErrNotSRS)
		}
		hash, first, opaque := parts[0], parts[1], parts[2]
		if !hmac.Equal([]byte(strings.ToUpper(hash)), []byte(s.hash(first, opaque))) {
			return "", ErrSRSForged
		}
		return "SRS0" + opaque + "@" + first, nil
	}
	return "", ErrNotSRS
}

// IsSRS reports whether addr has the form of an SRS address (without
// checking it).
func IsSRS(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 6 {
		return false
	}
	return (hasPrefixFold(addr, "SRS0") || hasPrefixFold(addr, "SRS1")) && isSRSSeparator(addr[4])
}
