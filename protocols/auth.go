package protocols

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// MaxCredentialLength bounds user names and passwords accepted for a login
// attempt; longer ones fail without reaching the password hash.
const MaxCredentialLength = 1024

// AuthGuardConfig sets the brute-force limits.
type AuthGuardConfig struct {
	// MaxFailuresPerIP is how many failed logins one address may make in
	// Window before it is locked out for Lockout.
	MaxFailuresPerIP int
	// MaxFailuresPerUser is the same limit per user name, whatever the
	// address.
	MaxFailuresPerUser int
	Window             time.Duration
	Lockout            time.Duration
	// FailureDelay is how long a failed attempt waits before it answers,
	// which slows down guessing on one connection.
	FailureDelay time.Duration
}

// DefaultAuthGuardConfig returns limits suited to a public mail server.
func DefaultAuthGuardConfig() AuthGuardConfig {
	return AuthGuardConfig{
		MaxFailuresPerIP:   10,
		MaxFailuresPerUser: 20,
		Window:             5 * time.Minute,
		Lockout:            10 * time.Minute,
		FailureDelay:       time.Second,
	}
}

// AuthGuard throttles failed logins per client address and per user name.
// It is shared by every frontend of a node, so guessing on IMAP also
// counts against POP3 and SMTP AUTH.
type AuthGuard struct {
	cfg AuthGuardConfig
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	count       int
	windowStart time.Time
	lockedUntil time.Time
}

const maxGuardEntries = 100000

// NewAuthGuard returns a guard with the given limits; now is the clock
// (time.Now when nil).
func NewAuthGuard(cfg AuthGuardConfig, now func() time.Time) *AuthGuard {
	if now == nil {
		now = time.Now
	}
	return &AuthGuard{cfg: cfg, now: now, entries: make(map[string]*failures)}
}

func ipKey(ip netip.Addr) string {
	if ip.Is6() && !ip.Is4In6() {
		// Throttle IPv6 clients per /64: one host usually owns the prefix.
		p, _ := ip.Prefix(64)
		return "ip:" + p.String()
	}
	return "ip:" + ip.Unmap().String()
}

func userKey(user string) string { return "user:" + strings.ToLower(user) }

// Allow reports whether a login attempt from ip for user may proceed.
func (g *AuthGuard) Allow(ip netip.Addr, user string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for _, k := range []string{ipKey(ip), userKey(user)} {
		if f := g.entries[k]; f != nil && now.Before(f.lockedUntil) {
			return ErrTooManyFailures
		}
	}
	return nil
}

// Failed records a failed attempt.
func (g *AuthGuard) Failed(ip netip.Addr, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if len(g.entries) >= maxGuardEntries {
		g.sweepLocked(now)
	}
	g.failLocked(ipKey(ip), g.cfg.MaxFailuresPerIP, now)
	g.failLocked(userKey(user), g.cfg.MaxFailuresPerUser, now)
}

func (g *AuthGuard) failLocked(key string, max int, now time.Time) {
	if max <= 0 {
		return
	}
	f := g.entries[key]
	if f == nil || now.Sub(f.windowStart) > g.cfg.Window {
		f = &failures{windowStart: now}
		g.entries[key] = f
	}
	f.count++
	if f.count >= max {
		f.lockedUntil = now.Add(g.cfg.Lockout)
		f.count = 0
		f.windowStart = now
	}
}

// Succeeded clears the failure count of the address and the user.
func (g *AuthGuard) Succeeded(ip netip.Addr, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, k := range []string{ipKey(ip), userKey(user)} {
		if f := g.entries[k]; f != nil && !g.now().Before(f.lockedUntil) {
			delete(g.entries, k)
		}
	}
}

func (g *AuthGuard) sweepLocked(now time.Time) {
	for k, f := range g.entries {
		if now.Sub(f.windowStart) > g.cfg.Window && !now.Before(f.lockedUntil) {
			delete(g.entries, k)
		}
	}
}

// Login authenticates against store under the guard's limits. It returns
// schema.ErrAuthFailed for bad credentials (after the failure delay),
// ErrTooManyFailures while throttled, and other errors for store failures.
func (g *AuthGuard) Login(ctx context.Context, store Store, remote net.Addr, username, password string) (Account, error) {
	ip := RemoteIP(remote)
	if err := g.Allow(ip, username); err != nil {
		return nil, err
	}
	var acct Account
	err := schema.ErrAuthFailed
	if username != "" && len(username) <= MaxCredentialLength && len(password) <= MaxCredentialLength {
		acct, err = store.Authenticate(ctx, username, password)
	}
	if errors.Is(err, schema.ErrAuthFailed) {
		g.Failed(ip, username)
		if g.cfg.FailureDelay > 0 {
			t := time.NewTimer(g.cfg.FailureDelay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		return nil, schema.ErrAuthFailed
	}
	if err != nil {
		return nil, err
	}
	g.Succeeded(ip, username)
	return acct, nil
}

// RemoteIP returns the IP address of a connection's remote address, or
// the zero Addr when it has none (a pipe in tests).
func RemoteIP(addr net.Addr) netip.Addr {
	if addr == nil {
		return netip.Addr{}
	}
	if ta, ok := addr.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// NewLoginServer returns a server for the obsolete but widely used SASL
// LOGIN mechanism (draft-murchison-sasl-login): the server prompts for the
// user name, then the password. go-sasl has a LOGIN client but no server.
func NewLoginServer(authenticate func(username, password string) error) sasl.Server {
	return &loginServer{authenticate: authenticate}
}

type loginServer struct {
	authenticate func(username, password string) error
	username     string
	step         int
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step++
		if len(response) > 0 {
			// Initial response carries the user name (SASL-IR).
			s.username = string(response)
			s.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		s.username = string(response)
		s.step++
		return []byte("Password:"), false, nil
	case 2:
		s.step++
		return nil, true, s.authenticate(s.username, string(response))
	default:
		return nil, true, sasl.ErrUnexpectedClientResponse
	}
}
