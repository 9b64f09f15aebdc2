package schema

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The protocols a user logs in with; an app password's scope is a set of
// them.
const (
	ProtocolIMAP = "imap"
	ProtocolPOP3 = "pop3"
	ProtocolSMTP = "smtp"
)

// LoginProtocols returns every protocol a login can come from, in the
// order scopes are written.
func LoginProtocols() []string { return []string{ProtocolIMAP, ProtocolPOP3, ProtocolSMTP} }

// Credentials is one login attempt as the mail store checks it: what the
// client sent, and where it came from, because whether a credential may
// log in depends on the protocol (an app password's scope) and the
// address is recorded as the app password's last use.
type Credentials struct {
	Username string
	Password string
	// Protocol is one of the Protocol* names; "" (a caller that is no
	// frontend) matches no app password's scope.
	Protocol string
	// Remote is the client's IP address (the zero Addr when unknown).
	Remote netip.Addr
	// OnlyAppPassword is set while the user is locked out at the
	// client's address after too many failures: only an app password,
	// too long and random to be guessed in the attempts left, may log in
	// then; the account password is not checked.
	OnlyAppPassword bool
}

// CanonicalScope checks an app password's scope and returns it sorted in
// LoginProtocols order without duplicates. An empty scope means every
// protocol. Names are matched case-insensitively.
func CanonicalScope(scope []string) ([]string, error) {
	if len(scope) == 0 {
		return LoginProtocols(), nil
	}
	if len(scope) > 16 {
		return nil, fmt.Errorf("scope of %d protocols: %w", len(scope), ErrInvalid)
	}
	seen := map[string]bool{}
	for _, p := range scope {
		p = strings.ToLower(strings.TrimSpace(p))
		if !slices.Contains(LoginProtocols(), p) {
			return nil, fmt.Errorf("scope %.32q: not imap, pop3 or smtp: %w", p, ErrInvalid)
		}
		seen[p] = true
	}
	var out []string
	for _, p := range LoginProtocols() {
		if seen[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// ScopeAllows reports whether an app password of the given scope (empty
// meaning every protocol) may log in over protocol.
func ScopeAllows(scope []string, protocol string) bool {
	if !slices.Contains(LoginProtocols(), protocol) {
		return false
	}
	return len(scope) == 0 || slices.Contains(scope, protocol)
}
