package protocols

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// MaxCredentialLength bounds user names and passwords accepted for a login
// attempt; longer ones fail without reaching the password hash.
const MaxCredentialLength = 1024

// DefaultKnownAddressTTL is how long a successful login keeps its client
// address exempt from the user's lockout in DefaultAuthGuardConfig.
const DefaultKnownAddressTTL = 30 * 24 * time.Hour

// AuthGuardConfig sets the brute-force limits. A client address is an
// IPv4 address or an IPv6 /64 (one host usually owns the prefix).
type AuthGuardConfig struct {
	// MaxFailuresPerIP is how many failed logins one client address may
	// make in Window before it is locked out for Lockout, for every user.
	// 0 disables the limit.
	MaxFailuresPerIP int
	// MaxFailuresPerUser is how many failed logins for one user name, from
	// addresses the user has not logged in from within KnownAddressTTL,
	// lock that user out for Lockout at every such address. Addresses with
	// a recent successful login of the user are not locked by it (only by
	// MaxFailuresPerIP), so an attacker cannot keep the owner out of the
	// account. 0 disables the limit.
	MaxFailuresPerUser int
	// Window is the period failures are counted over.
	Window time.Duration
	// Lockout is how long a lockout lasts. Failed attempts during a
	// lockout still count, so steady guessing prolongs it.
	Lockout time.Duration
	// KnownAddressTTL is how long a successful login exempts its (user,
	// client address) pair from the user's lockout. 0 exempts no address:
	// the user's lockout then applies everywhere.
	KnownAddressTTL time.Duration
	// FailureDelay is how long after it started a failed attempt answers,
	// which slows down guessing on one connection and makes a locked
	// attempt as slow as one that checked the password.
	FailureDelay time.Duration

	// Logger receives a record when a lockout starts; nil discards them.
	Logger *slog.Logger
	// Observer is told about failed logins and lockouts (the node counts
	// them as metrics); nil means nobody.
	Observer AuthObserver
	// Failures holds the failure counters and lockouts, and Known the
	// recent successful logins; nil means bounded memory of this node.
	// (A cluster-wide guard would keep them in the replicated store.)
	Failures FailureCounter
	Known    KnownAddresses
	// Sessions keeps the open authenticated sessions, registered by the
	// frontends through TrackSession; nil tracks none.
	Sessions *SessionRegistry
	// Logins is told of every decided login (for the login history);
	// nil means nobody.
	Logins LoginRecorder
}

// DefaultAuthGuardConfig returns limits suited to a public mail server.
func DefaultAuthGuardConfig() AuthGuardConfig {
	return AuthGuardConfig{
		MaxFailuresPerIP:   10,
		MaxFailuresPerUser: 20,
		Window:             5 * time.Minute,
		Lockout:            10 * time.Minute,
		KnownAddressTTL:    DefaultKnownAddressTTL,
		FailureDelay:       time.Second,
	}
}

// LockScope says what a lockout applies to.
type LockScope string

// The scopes of a lockout.
const (
	// LockUser locks a user name out at the client addresses without a
	// recent successful login of that user.
	LockUser LockScope = "user"
	// LockAddress locks a client address out, whoever it logs in as.
	LockAddress LockScope = "address"
)

// AuthObserver is told how the logins through the AuthGuard end, so they
// can be counted: each login is reported once, by exactly one of
// LoginSucceeded, LoginFailed and LoginError. Its methods must be quick
// and safe for concurrent use.
type AuthObserver interface {
	// LoginSucceeded is called for every accepted login.
	LoginSucceeded(protocol string)
	// LoginFailed is called for every refused login: bad credentials, or
	// a locked-out attempt (locked is true) whose password was not checked.
	LoginFailed(protocol string, locked bool)
	// LoginError is called for a login that could not be checked because
	// the store failed.
	LoginError(protocol string)
	// LockoutStarted is called once when a lockout starts (not when
	// further failures prolong it).
	LockoutStarted(protocol string, scope LockScope)
}

// FailureLimit is the limit a FailureCounter applies to one key.
type FailureLimit struct {
	// Max failures within Window start a lockout of Lockout.
	Max     int
	Window  time.Duration
	Lockout time.Duration
}

// FailureCounter counts failed logins per key (a client address or a user
// name) and locks a key out when it reaches its limit. Implementations
// must be safe for concurrent use.
type FailureCounter interface {
	// Locked reports whether key is locked out at now.
	Locked(key string, now time.Time) bool
	// Fail counts one failure of key. It reports whether this failure
	// started a lockout; one that prolongs a running lockout does not.
	Fail(key string, limit FailureLimit, now time.Time) (started bool)
	// Reset forgets the failures of key unless it is locked out.
	Reset(key string, now time.Time)
}

// KnownAddresses remembers which client addresses each user logged in
// from. Implementations must be safe for concurrent use and may forget
// the oldest logins to bound their memory.
type KnownAddresses interface {
	// Remember records a successful login of user from client at now.
	Remember(user, client string, now time.Time)
	// Known reports whether user logged in from client at or after since.
	Known(user, client string, since time.Time) bool
}

// Bounds of the memory state: beyond them the oldest entries go.
const (
	maxFailureEntries = 100000
	maxKnownEntries   = 200000
)

// AuthGuard throttles failed logins per client address and per user name.
// It is shared by every frontend of a node, so guessing on IMAP also
// counts against POP3 and SMTP AUTH.
//
// A locked-out attempt gets the same answer as a wrong password, after
// the same delay, and counts as a failure like one: a client cannot tell
// that a lockout is running (the client answer of a Login error is that
// of schema.ErrAuthFailed).
type AuthGuard struct {
	cfg      AuthGuardConfig
	now      func() time.Time
	log      *slog.Logger
	obs      AuthObserver
	failures FailureCounter
	known    KnownAddresses
}

// NewAuthGuard returns a guard with the given limits; now is the clock
// (time.Now when nil).
func NewAuthGuard(cfg AuthGuardConfig, now func() time.Time) *AuthGuard {
	if now == nil {
		now = time.Now
	}
	g := &AuthGuard{cfg: cfg, now: now, log: cfg.Logger, obs: cfg.Observer, failures: cfg.Failures, known: cfg.Known}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.log = g.log.With("component", "auth")
	if g.obs == nil {
		g.obs = nopObserver{}
	}
	if g.failures == nil {
		g.failures = newMemoryFailures(maxFailureEntries)
	}
	if g.known == nil {
		g.known = newMemoryKnown(maxKnownEntries)
	}
	return g
}

type nopObserver struct{}

func (nopObserver) LoginSucceeded(string)            {}
func (nopObserver) LoginFailed(string, bool)         {}
func (nopObserver) LoginError(string)                {}
func (nopObserver) LockoutStarted(string, LockScope) {}

// errLocked is what Login returns for a locked-out attempt: to the client
// the same failure as a wrong password, to the logs ErrTooManyFailures.
var errLocked = fmt.Errorf("%w: %w", schema.ErrAuthFailed, ErrTooManyFailures)

// Attempt is one login attempt as a frontend received it.
type Attempt struct {
	// Protocol names the frontend (schema.ProtocolIMAP, ProtocolPOP3,
	// ProtocolSMTP) in metrics and logs; the store checks app password
	// scopes against it.
	Protocol string
	// Remote is the client's address.
	Remote   net.Addr
	Username string
	Password string
}

// clientKey names the client address the limits apply to: an IPv4
// address, or the /64 of an IPv6 address.
func clientKey(ip netip.Addr) string {
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.Unmap().String()
}

func addressKey(client string) string { return "ip:" + client }

// canonicalUser returns the form of a user name the per-user limit and
// the known addresses are kept under, and false for a name that is no
// valid address: no account has it, so it needs no per-user limit (and
// attackers cannot fill the memory with long names).
func canonicalUser(user string) (string, bool) {
	if len(user) > MaxCredentialLength {
		return "", false
	}
	addr, _, err := schema.CanonicalAddress(user)
	if err != nil {
		return "", false
	}
	return addr, true
}

func userKey(user string) string { return "user:" + user }

// Login authenticates against store under the guard's limits. Bad
// credentials and locked-out attempts both return an error that is
// schema.ErrAuthFailed, after the failure delay; for a locked-out attempt
// it is also ErrTooManyFailures, which frontends may log but must answer
// like a wrong password. While only the user (not the client address) is
// locked out, an app password still logs in. Other errors are store
// failures.
func (g *AuthGuard) Login(ctx context.Context, store Store, a Attempt) (Account, error) {
	start := time.Now() // the real clock: the delay is a real wait
	ip := RemoteIP(a.Remote)
	client := clientKey(ip)
	user, validUser := canonicalUser(a.Username)
	now := g.now()
	known := validUser && g.cfg.KnownAddressTTL > 0 && g.known.Known(user, client, now.Add(-g.cfg.KnownAddressTTL))

	// The per-address limit binds every attempt. The per-user lockout
	// binds only addresses without a recent successful login of the user.
	//
	// App passwords sit between the two checks: a long random app
	// password cannot be guessed in the attempts the per-address limit
	// leaves, so it is checked (and logs the user in) while the user is
	// locked out; a wrong one counts like any failure. The account
	// password stays behind the per-user lockout: the store is told to
	// check app passwords only, and a refusal is answered like any wrong
	// password.
	addressLocked := g.failures.Locked(addressKey(client), now)
	userLocked := validUser && !known && g.failures.Locked(userKey(user), now)
	locked := addressLocked || userLocked

	var acct Account
	err := schema.ErrAuthFailed
	if !addressLocked && a.Username != "" && len(a.Username) <= MaxCredentialLength && len(a.Password) <= MaxCredentialLength {
		acct, err = store.Authenticate(ctx, schema.Credentials{
			Username: a.Username, Password: a.Password, Protocol: a.Protocol, Remote: ip,
			OnlyAppPassword: userLocked,
		})
	}
	if errors.Is(err, schema.ErrAuthFailed) {
		g.failed(a, ip, client, user, validUser && !known, now)
		g.obs.LoginFailed(a.Protocol, locked)
		if validUser {
			g.recordLogin(a, user, nil, false)
		}
		g.delay(ctx, start)
		if locked {
			return nil, errLocked
		}
		return nil, schema.ErrAuthFailed
	}
	if err != nil {
		g.obs.LoginError(a.Protocol)
		return nil, err
	}
	g.obs.LoginSucceeded(a.Protocol)
	g.recordLogin(a, user, acct, true)
	if g.cfg.Sessions != nil {
		acct = guardedAccount{Account: acct, credential: credentialOf(acct), checked: now}
	}
	g.failures.Reset(addressKey(client), now)
	// The user's own count is not reset: the owner's mail client logging
	// in every few minutes would otherwise give an attacker a fresh set of
	// guesses each time.
	if validUser && g.cfg.KnownAddressTTL > 0 {
		g.known.Remember(user, client, now)
	}
	return acct, nil
}

// failed counts a failed (or locked-out) attempt against the client
// address, and against the user when the address is not one the user
// recently logged in from; it reports the lockouts it starts.
func (g *AuthGuard) failed(a Attempt, ip netip.Addr, client, user string, countUser bool, now time.Time) {
	if g.cfg.MaxFailuresPerIP > 0 {
		lim := FailureLimit{Max: g.cfg.MaxFailuresPerIP, Window: g.cfg.Window, Lockout: g.cfg.Lockout}
		if g.failures.Fail(addressKey(client), lim, now) {
			g.lockoutStarted(a, ip, LockAddress, user)
		}
	}
	if countUser && g.cfg.MaxFailuresPerUser > 0 {
		lim := FailureLimit{Max: g.cfg.MaxFailuresPerUser, Window: g.cfg.Window, Lockout: g.cfg.Lockout}
		if g.failures.Fail(userKey(user), lim, now) {
			g.lockoutStarted(a, ip, LockUser, user)
		}
	}
}

// lockoutStarted logs and counts a new lockout. The client address is
// logged at warning level; the user name, like every mail address, only
// at debug level.
func (g *AuthGuard) lockoutStarted(a Attempt, ip netip.Addr, scope LockScope, user string) {
	g.obs.LockoutStarted(a.Protocol, scope)
	attrs := []any{"protocol", a.Protocol, "scope", string(scope), "remote", ip.String(), "lockout", g.cfg.Lockout}
	g.log.Warn("login lockout started", attrs...)
	if user == "" {
		user = truncate(a.Username, 256)
	}
	g.log.Debug("login lockout started", append(attrs, "user", user)...)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// delay waits until FailureDelay after start, or until ctx ends.
func (g *AuthGuard) delay(ctx context.Context, start time.Time) {
	d := g.cfg.FailureDelay - time.Since(start)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// memoryFailures is the per-node FailureCounter, bounded to max keys.
type memoryFailures struct {
	max int

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	count       int
	windowStart time.Time
	window      time.Duration
	lockedUntil time.Time
}

// expired reports whether the entry counts for nothing any more.
func (f *failures) expired(now time.Time) bool {
	return now.Sub(f.windowStart) > f.window && !now.Before(f.lockedUntil)
}

func newMemoryFailures(max int) *memoryFailures {
	return &memoryFailures{max: max, entries: make(map[string]*failures)}
}

func (m *memoryFailures) Locked(key string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.entries[key]
	return f != nil && now.Before(f.lockedUntil)
}

func (m *memoryFailures) Fail(key string, lim FailureLimit, now time.Time) bool {
	if lim.Max <= 0 {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.entries[key]
	if f == nil {
		if len(m.entries) >= m.max {
			m.shrinkLocked(now)
		}
		f = &failures{windowStart: now}
		m.entries[key] = f
	}
	f.window = lim.Window
	if now.Sub(f.windowStart) > lim.Window {
		f.count, f.windowStart = 0, now
	}
	f.count++
	if f.count < lim.Max {
		return false
	}
	wasLocked := now.Before(f.lockedUntil)
	f.lockedUntil = now.Add(lim.Lockout)
	f.count, f.windowStart = 0, now
	return !wasLocked
}

// locked returns the keys locked out at now, with the end of each lockout.
func (m *memoryFailures) locked(now time.Time) map[string]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]time.Time{}
	for k, f := range m.entries {
		if now.Before(f.lockedUntil) {
			out[k] = f.lockedUntil
		}
	}
	return out
}

// clear forgets key, lockout included.
func (m *memoryFailures) clear(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
}

func (m *memoryFailures) Reset(key string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.entries[key]; f != nil && !now.Before(f.lockedUntil) {
		delete(m.entries, key)
	}
}

// shrinkLocked makes room: it drops expired entries, then counters that
// lock nothing, then (under a flood of lockouts) any entries.
func (m *memoryFailures) shrinkLocked(now time.Time) {
	target := m.max - m.max/8
	for k, f := range m.entries {
		if f.expired(now) {
			delete(m.entries, k)
		}
	}
	for k, f := range m.entries {
		if len(m.entries) < target {
			return
		}
		if !now.Before(f.lockedUntil) {
			delete(m.entries, k)
		}
	}
	for k := range m.entries {
		if len(m.entries) < target {
			return
		}
		delete(m.entries, k)
	}
}

// memoryKnown is the per-node KnownAddresses, bounded to max pairs.
type memoryKnown struct {
	max int

	mu   sync.Mutex
	last map[knownPair]time.Time
}

type knownPair struct{ user, client string }

func newMemoryKnown(max int) *memoryKnown {
	return &memoryKnown{max: max, last: make(map[knownPair]time.Time)}
}

func (m *memoryKnown) Remember(user, client string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := knownPair{user, client}
	if _, ok := m.last[p]; !ok && len(m.last) >= m.max {
		m.forgetOldestLocked()
	}
	m.last[p] = now
}

func (m *memoryKnown) Known(user, client string, since time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.last[knownPair{user, client}]
	return ok && !t.Before(since)
}

// forgetOldestLocked drops the oldest eighth of the pairs (at least one),
// so the sort is paid once per many insertions.
func (m *memoryKnown) forgetOldestLocked() {
	times := make([]time.Time, 0, len(m.last))
	for _, t := range m.last {
		times = append(times, t)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	cutoff := times[len(times)/8]
	for p, t := range m.last {
		if !t.After(cutoff) {
			delete(m.last, p)
		}
	}
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
