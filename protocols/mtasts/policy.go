package mtasts

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 section 5).
type Mode string

// Policy modes.
const (
	// ModeEnforce: deliver only over TLS with a valid certificate to an
	// MX host the policy names.
	ModeEnforce Mode = "enforce"
	// ModeTesting: deliver as usual, but report what enforce would
	// have refused (TLS-RPT).
	ModeTesting Mode = "testing"
	// ModeNone: the domain has withdrawn its policy.
	ModeNone Mode = "none"
)

// Valid reports whether m is a known mode.
func (m Mode) Valid() bool { return m == ModeEnforce || m == ModeTesting || m == ModeNone }

// Limits of what is parsed.
const (
	// MaxPolicySize is the largest policy body accepted (RFC 8461
	// section 3.3).
	MaxPolicySize = 64 << 10
	// MaxMX bounds the mx patterns of one policy.
	MaxMX = 100
	// MaxAge is the largest max_age a policy may have (RFC 8461 section
	// 3.2: 31557600 seconds, about a year).
	MaxAge = 31557600 * time.Second
	// maxFields bounds the lines of a policy.
	maxFields = 1000
	// maxRecordLen bounds a _mta-sts TXT record.
	maxRecordLen = 1024
)

// ErrInvalid marks malformed policies and records.
var ErrInvalid = errors.New("mta-sts: invalid")

// Policy is a domain's MTA-STS policy (RFC 8461 section 3.2).
type Policy struct {
	Mode Mode
	// MX are the patterns of the hosts that may receive the domain's
	// mail: a host name, or "*." and a name for any one label in front
	// of it.
	MX []string
	// MaxAge is how long a sender may cache the policy.
	MaxAge time.Duration
	// ID is the id of the _mta-sts TXT record the policy was fetched
	// under ("" for a policy not fetched).
	ID string
}

// Text returns the policy in its served form, CRLF line endings.
func (p Policy) Text() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\n")
	b.WriteString("mode: " + string(p.Mode) + "\r\n")
	for _, mx := range p.MX {
		b.WriteString("mx: " + mx + "\r\n")
	}
	b.WriteString("max_age: " + strconv.FormatInt(int64(p.MaxAge/time.Second), 10) + "\r\n")
	return b.String()
}

// TextID returns an id for the _mta-sts TXT record that changes whenever
// the policy's text does: 20 characters of base32 of its SHA-256 (RFC
// 8461 section 3.1 allows 1 to 32 letters and digits).
func (p Policy) TextID() string {
	sum := sha256.Sum256([]byte(p.Text()))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])[:20])
}

// Record returns the _mta-sts TXT record announcing the policy.
func (p Policy) Record() string { return "v=STSv1; id=" + p.TextID() }

// Allowed reports whether mail may go to mxHost under the policy: it
// matches one of the mx patterns (RFC 8461 section 4.1). A nil policy,
// or one of mode none, allows every host.
func (p *Policy) Allowed(mxHost string) bool {
	if p == nil || p.Mode == ModeNone {
		return true
	}
	host := strings.ToLower(strings.TrimSuffix(mxHost, "."))
	if host == "" {
		return false
	}
	for _, pat := range p.MX {
		if MatchMX(pat, host) {
			return true
		}
	}
	return false
}

// Enforced reports whether the policy refuses delivery that does not
// meet it (mode enforce), rather than reporting only.
func (p *Policy) Enforced() bool { return p != nil && p.Mode == ModeEnforce }

// MatchMX reports whether host (lower case, no final dot) matches one mx
// pattern: equal, or for "*.name", one label followed by name.
func MatchMX(pattern, host string) bool {
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		label, parent, found := strings.Cut(host, ".")
		return found && label != "" && parent == rest
	}
	return pattern == host
}

// Parse parses a policy body (RFC 8461 section 3.2): "key: value" lines
// ending in CRLF or LF, version STSv1, a mode, max_age, and mx patterns
// (at least one unless the mode is none); unknown keys are ignored.
func Parse(body []byte) (*Policy, error) {
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("%w: policy of more than %d bytes", ErrInvalid, MaxPolicySize)
	}
	p := &Policy{}
	var version, maxAge bool
	lines := bytes.Split(body, []byte("\n"))
	if len(lines) > maxFields {
		return nil, fmt.Errorf("%w: policy of more than %d lines", ErrInvalid, maxFields)
	}
	for i, raw := range lines {
		line := strings.TrimSuffix(string(raw), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%w: line %d has no colon", ErrInvalid, i+1)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "version":
			if value != "STSv1" || version {
				return nil, fmt.Errorf("%w: version %q", ErrInvalid, value)
			}
			version = true
		case "mode":
			if !Mode(value).Valid() || p.Mode != "" {
				return nil, fmt.Errorf("%w: mode %q", ErrInvalid, value)
			}
			p.Mode = Mode(value)
		case "max_age":
			n, err := strconv.ParseUint(value, 10, 64)
			if err != nil || len(value) > 10 || time.Duration(n)*time.Second > MaxAge || maxAge {
				return nil, fmt.Errorf("%w: max_age %q", ErrInvalid, value)
			}
			p.MaxAge, maxAge = time.Duration(n)*time.Second, true
		case "mx":
			if !validMX(value) {
				return nil, fmt.Errorf("%w: mx %q", ErrInvalid, value)
			}
			if len(p.MX) == MaxMX {
				return nil, fmt.Errorf("%w: more than %d mx patterns", ErrInvalid, MaxMX)
			}
			p.MX = append(p.MX, strings.ToLower(strings.TrimSuffix(value, ".")))
		}
	}
	switch {
	case !version:
		return nil, fmt.Errorf("%w: no version", ErrInvalid)
	case p.Mode == "":
		return nil, fmt.Errorf("%w: no mode", ErrInvalid)
	case !maxAge:
		return nil, fmt.Errorf("%w: no max_age", ErrInvalid)
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, fmt.Errorf("%w: no mx", ErrInvalid)
	}
	return p, nil
}

// validMX checks an mx pattern's form: a host name, optionally with a
// "*." in front.
func validMX(v string) bool {
	v = strings.TrimSuffix(strings.TrimPrefix(v, "*."), ".")
	if v == "" || len(v) > 253 {
		return false
	}
	for _, label := range strings.Split(v, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ParseRecord parses a _mta-sts TXT record (RFC 8461 section 3.1) and
// returns its id: "v=STSv1" first, then "id=" 1 to 32 letters and
// digits, fields separated by ";"; other fields are ignored.
func ParseRecord(txt string) (string, error) {
	if len(txt) > maxRecordLen {
		return "", fmt.Errorf("%w: TXT record of %d bytes", ErrInvalid, len(txt))
	}
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=STSv1" {
		return "", fmt.Errorf("%w: TXT record does not start with v=STSv1", ErrInvalid)
	}
	id := ""
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || k != "id" {
			continue
		}
		if id != "" || !validID(v) {
			return "", fmt.Errorf("%w: TXT record id %q", ErrInvalid, v)
		}
		id = v
	}
	if id == "" {
		return "", fmt.Errorf("%w: TXT record has no id", ErrInvalid)
	}
	return id, nil
}

func validID(v string) bool {
	if len(v) == 0 || len(v) > 32 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
