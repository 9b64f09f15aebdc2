package directory

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Limits on names.
const (
	maxAddressLength = 254
	maxDomainLength  = 253
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
