package protocols

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// fakeClock is a clock the tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// fakeStore knows users, their passwords and app passwords;
// Authenticate is all the guard calls.
type fakeStore struct {
	Store
	users map[string]string
	// apps maps a user to an app password that logs in over IMAP only.
	apps map[string]string
	// last receives the credentials of the latest call.
	last *schema.Credentials
}

type fakeAccount struct {
	Account
	addr string
}

func (a fakeAccount) Address() string { return a.addr }
func (a fakeAccount) Close() error    { return nil }

func (s fakeStore) Authenticate(_ context.Context, cred schema.Credentials) (Account, error) {
	if s.last != nil {
		*s.last = cred
	}
	addr, _, err := schema.CanonicalAddress(cred.Username)
	if err != nil {
		return nil, schema.ErrAuthFailed
	}
	if app := s.apps[addr]; app != "" && cred.Password == app && cred.Protocol == schema.ProtocolIMAP {
		return fakeAccount{addr: addr}, nil
	}
	if cred.OnlyAppPassword || s.users[addr] == "" || s.users[addr] != cred.Password {
		return nil, schema.ErrAuthFailed
	}
	return fakeAccount{addr: addr}, nil
}

// countingObserver records what the guard reports.
type countingObserver struct {
	mu        sync.Mutex
	successes map[string]int // protocol
	errors    map[string]int // protocol
	failures  map[string]int // "protocol/locked"
	lockouts  map[string]int // "protocol/scope"
}

func (o *countingObserver) LoginSucceeded(protocol string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.successes[protocol]++
}

func (o *countingObserver) LoginError(protocol string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.errors[protocol]++
}

func (o *countingObserver) LoginFailed(protocol string, locked bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures[fmt.Sprintf("%s/%v", protocol, locked)]++
}

func (o *countingObserver) LockoutStarted(protocol string, scope LockScope) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lockouts[protocol+"/"+string(scope)]++
}

const (
	owner   = "owner@example.org"
	ownerPW = "owner-secret-pw"
	other   = "other@example.org"
	otherPW = "other-secret-pw"
	// ownerAppPW is the owner's app password, for IMAP only.
	ownerAppPW = "abcd-efgh-jkmn-pqrs"
)

// guardHarness is a guard on a fake clock over a fakeStore.
type guardHarness struct {
	t     *testing.T
	clock *fakeClock
	g     *AuthGuard
	store fakeStore
	obs   *countingObserver
	logs  *bytes.Buffer
}

func newGuardHarness(t *testing.T, cfg AuthGuardConfig) *guardHarness {
	h := &guardHarness{
		t:     t,
		clock: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		store: fakeStore{
			users: map[string]string{owner: ownerPW, other: otherPW},
			apps:  map[string]string{owner: ownerAppPW},
			last:  &schema.Credentials{},
		},
		obs:  &countingObserver{successes: map[string]int{}, errors: map[string]int{}, failures: map[string]int{}, lockouts: map[string]int{}},
		logs: &bytes.Buffer{},
	}
	cfg.Observer = h.obs
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.g = NewAuthGuard(cfg, h.clock.now)
	return h
}

// login tries user/pass from the IP address ip.
func (h *guardHarness) login(ip, user, pass string) error {
	h.t.Helper()
	remote := &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}
	acct, err := h.g.Login(context.Background(), h.store, Attempt{Protocol: "imap", Remote: remote, Username: user, Password: pass})
	if err == nil {
		acct.Close()
	}
	return err
}

// mustLogin fails the test unless the login succeeds.
func (h *guardHarness) mustLogin(ip, user, pass string) {
	h.t.Helper()
	if err := h.login(ip, user, pass); err != nil {
		h.t.Fatalf("login %s from %s: %v", user, ip, err)
	}
}

// mustFail fails the test unless the login fails as bad credentials;
// locked says whether it must also be a lockout.
func (h *guardHarness) mustFail(ip, user, pass string, locked bool) {
	h.t.Helper()
	err := h.login(ip, user, pass)
	if !errors.Is(err, schema.ErrAuthFailed) {
		h.t.Fatalf("login %s from %s: got %v, want an authentication failure", user, ip, err)
	}
	if errors.Is(err, ErrTooManyFailures) != locked {
		h.t.Fatalf("login %s from %s: got %v, want locked=%v", user, ip, err, locked)
	}
}

func (h *guardHarness) advance(d time.Duration) { h.clock.t = h.clock.t.Add(d) }

// userLimitConfig locks a user after 5 failures, an address after 100.
func userLimitConfig() AuthGuardConfig {
	return AuthGuardConfig{
		MaxFailuresPerIP: 100, MaxFailuresPerUser: 5,
		Window: time.Minute, Lockout: 10 * time.Minute, KnownAddressTTL: 30 * 24 * time.Hour,
	}
}

// TestAuthGuardLocksAttackerOut checks that guessing from addresses the
// user never logged in from locks the user out there, even though the
// owner's mail client keeps logging in from home meanwhile, and that the
// lockout lasts while the guessing goes on.
func TestAuthGuardLocksAttackerOut(t *testing.T) {
	h := newGuardHarness(t, userLimitConfig())
	const home = "192.0.2.10"
	h.mustLogin(home, owner, ownerPW)
	for i := 0; i < 4; i++ {
		h.mustFail(fmt.Sprintf("198.51.100.%d", i+1), owner, "guess", false)
	}
	// The owner's client polls: that must not give the attacker new guesses.
	h.mustLogin(home, owner, ownerPW)
	h.mustFail("198.51.100.5", owner, "guess", false)
	// Locked at every unknown address, even with the right password and
	// another spelling of the name.
	h.mustFail("198.51.100.6", owner, ownerPW, true)
	h.mustFail("203.0.113.1", "Owner@EXAMPLE.org", ownerPW, true)
	// Guessing on at the limit's rate during the lockout prolongs it: it
	// would have ended 10 minutes after it started.
	h.advance(5 * time.Minute)
	for i := 0; i < 5; i++ {
		h.advance(time.Second)
		h.mustFail("198.51.100.7", owner, "guess", true)
	}
	h.advance(9 * time.Minute)
	h.mustFail("198.51.100.8", owner, ownerPW, true)
	// Once the guessing stops, the lockout ends.
	h.advance(2 * time.Minute)
	h.mustLogin("198.51.100.8", owner, ownerPW)
	// Other users were never affected.
	h.mustLogin("198.51.100.9", other, otherPW)
}

// TestAuthGuardAppPasswordDuringUserLockout checks where app passwords
// sit between the two limits: while the user is locked out at an
// address, the account password is not even offered to the store (the
// store is told to accept app passwords only) and is answered like a
// wrong password, but the user's app password logs in; a wrong one
// counts as a failure. A locked address gets nothing checked at all.
func TestAuthGuardAppPasswordDuringUserLockout(t *testing.T) {
	h := newGuardHarness(t, userLimitConfig())
	const attacker, traveller = "198.51.100.1", "203.0.113.7"
	for i := 0; i < 5; i++ {
		h.mustFail(attacker, owner, "guess", false)
	}
	h.mustFail(traveller, owner, ownerPW, true)
	if !h.store.last.OnlyAppPassword {
		t.Fatalf("a user lockout did not restrict the store to app passwords: %+v", *h.store.last)
	}
	// The credentials reach the store with the protocol and the address.
	if h.store.last.Protocol != schema.ProtocolIMAP || h.store.last.Remote.String() != traveller {
		t.Errorf("store got protocol %q from %v", h.store.last.Protocol, h.store.last.Remote)
	}
	h.mustLogin(traveller, owner, ownerAppPW)
	h.mustFail("203.0.113.8", owner, "wxyz-wxyz-wxyz-wxyz", true)
	if n := h.obs.failures["imap/true"]; n != 2 {
		t.Errorf("%d locked failures counted, want 2", n)
	}
	// Without a lockout the store may check every credential.
	h.mustLogin("192.0.2.50", other, otherPW)
	if h.store.last.OnlyAppPassword {
		t.Error("a login without a lockout was restricted to app passwords")
	}

	// An address over its own limit gets no check, app password or not.
	cfg := userLimitConfig()
	cfg.MaxFailuresPerIP = 2
	h = newGuardHarness(t, cfg)
	h.mustFail(attacker, other, "guess", false)
	h.mustFail(attacker, other, "guess", false)
	*h.store.last = schema.Credentials{}
	h.mustFail(attacker, owner, ownerAppPW, true)
	if h.store.last.Username != "" {
		t.Errorf("a locked address reached the store: %+v", *h.store.last)
	}
}

// TestAuthGuardOwnerKeepsKnownAddresses checks that while an attacker has
// the user locked out, the owner still logs in from the addresses of
// recent successful logins, and only from those.
func TestAuthGuardOwnerKeepsKnownAddresses(t *testing.T) {
	h := newGuardHarness(t, userLimitConfig())
	const home, office, old = "192.0.2.10", "192.0.2.20", "192.0.2.30"
	h.mustLogin(old, owner, ownerPW)
	h.advance(2 * 24 * time.Hour)
	h.mustLogin(home, owner, ownerPW)
	h.mustLogin(office, owner, ownerPW)
	h.advance(29 * 24 * time.Hour) // old is now 31 days ago, home 29
	for i := 0; i < 5; i++ {
		h.mustFail("198.51.100.1", owner, "guess", false)
	}
	h.mustFail("198.51.100.1", owner, ownerPW, true)
	h.mustLogin(home, owner, ownerPW)
	h.mustLogin(office, "OWNER@example.org", ownerPW)
	h.mustFail(old, owner, ownerPW, true)
	h.mustFail("192.0.2.40", owner, ownerPW, true)
	// A wrong password from a known address is a plain failure, and does
	// not feed the user's lockout.
	h.mustFail(home, owner, "typo", false)
	h.mustLogin(home, owner, ownerPW)
	// Without a memory of known addresses the lockout applies everywhere.
	cfg := userLimitConfig()
	cfg.KnownAddressTTL = 0
	h2 := newGuardHarness(t, cfg)
	h2.mustLogin(home, owner, ownerPW)
	for i := 0; i < 5; i++ {
		h2.mustFail("198.51.100.1", owner, "guess", false)
	}
	h2.mustFail(home, owner, ownerPW, true)
}

// TestAuthGuardPerAddressLimit checks that the per-address limit applies
// to every user at every address, known ones included.
func TestAuthGuardPerAddressLimit(t *testing.T) {
	cfg := userLimitConfig()
	cfg.MaxFailuresPerIP = 3
	h := newGuardHarness(t, cfg)
	const shared, home = "192.0.2.10", "192.0.2.20"
	h.mustLogin(shared, owner, ownerPW)
	h.mustLogin(home, owner, ownerPW)
	// The user is locked out (from five addresses, one failure each)...
	for i := 0; i < 5; i++ {
		h.mustFail(fmt.Sprintf("198.51.100.%d", i+1), owner, "guess", false)
	}
	// ...but not at the shared address it logged in from...
	h.mustLogin(shared, owner, ownerPW)
	// ...until someone there fails three times: then that address is
	// locked for everyone, whatever the user.
	h.mustFail(shared, owner, "guess", false)
	h.mustFail(shared, other, "guess", false)
	h.mustFail(shared, "nobody@example.org", "guess", false)
	h.mustFail(shared, owner, ownerPW, true)
	h.mustFail(shared, other, otherPW, true)
	h.mustLogin(home, owner, ownerPW)
	// Unknown addresses have the same limit.
	for i := 0; i < 3; i++ {
		h.mustFail("203.0.113.5", "user"+fmt.Sprint(i)+"@example.org", "guess", false)
	}
	h.mustFail("203.0.113.5", other, otherPW, true)
	h.advance(11 * time.Minute)
	h.mustLogin("203.0.113.5", other, otherPW)
	h.mustLogin(shared, other, otherPW)
}

// TestAuthGuardWindowAndSuccess checks that failures outside the window
// do not count and that a success clears its address's count.
func TestAuthGuardWindowAndSuccess(t *testing.T) {
	h := newGuardHarness(t, AuthGuardConfig{MaxFailuresPerIP: 3, Window: time.Minute, Lockout: time.Hour})
	const ip = "192.0.2.1"
	h.mustFail(ip, owner, "bad", false)
	h.mustFail(ip, owner, "bad", false)
	h.advance(2 * time.Minute) // the window expired
	h.mustFail(ip, owner, "bad", false)
	h.mustFail(ip, owner, "bad", false)
	h.mustLogin(ip, owner, ownerPW) // a success clears the count
	h.mustFail(ip, owner, "bad", false)
	h.mustFail(ip, owner, "bad", false)
	h.mustLogin(ip, owner, ownerPW)
}

// TestAuthGuardIPv6Per64 checks that the addresses of one IPv6 /64 count
// as one client, for the per-address limit and as a known address, and
// that IPv4 addresses count one by one.
func TestAuthGuardIPv6Per64(t *testing.T) {
	cfg := userLimitConfig()
	cfg.MaxFailuresPerIP = 2
	h := newGuardHarness(t, cfg)
	h.mustFail("2001:db8:1:2::1", other, "bad", false)
	h.mustFail("2001:db8:1:2::ffff", "x@example.org", "bad", false)
	h.mustFail("2001:db8:1:2:abcd::9", other, otherPW, true)
	h.mustLogin("2001:db8:1:3::1", other, otherPW)

	// The owner logged in from one address of a /64 (and one IPv4
	// address); then the user is locked out.
	h.mustLogin("2001:db8:5:6::1", owner, ownerPW)
	h.mustLogin("192.0.2.1", owner, ownerPW)
	for i := 0; i < 5; i++ {
		h.mustFail(fmt.Sprintf("198.51.100.%d", i+1), owner, "guess", false)
	}
	h.mustLogin("2001:db8:5:6:8a2e:370:7334:1", owner, ownerPW) // another address of the /64
	h.mustFail("2001:db8:5:7::1", owner, ownerPW, true)         // another /64
	h.mustFail("192.0.2.2", owner, ownerPW, true)               // another IPv4 address
	// IPv4-mapped IPv6 is the IPv4 address.
	h.mustLogin("::ffff:192.0.2.1", owner, ownerPW)
}

// TestAuthGuardLockoutReported checks that a lockout is counted and
// logged once, when it starts, with the client address (the user only at
// debug level) and never the password, and that every refused login is
// counted.
func TestAuthGuardLockoutReported(t *testing.T) {
	cfg := userLimitConfig()
	cfg.MaxFailuresPerIP = 7
	h := newGuardHarness(t, cfg)
	for i := 0; i < 5; i++ {
		h.mustFail("198.51.100.1", owner, "guess-"+fmt.Sprint(i), false)
	}
	h.mustFail("198.51.100.1", owner, ownerPW, true)
	h.mustFail("198.51.100.1", owner, "guess-6", true) // 7th failure: the address too
	h.mustFail("198.51.100.1", owner, "guess-7", true)
	want := map[string]int{"imap/user": 1, "imap/address": 1}
	if fmt.Sprint(h.obs.lockouts) != fmt.Sprint(want) {
		t.Errorf("lockouts %v, want %v", h.obs.lockouts, want)
	}
	if got := fmt.Sprint(h.obs.failures); got != "map[imap/false:5 imap/true:3]" {
		t.Errorf("failures %s", got)
	}
	var warn, debug []string
	for _, line := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		switch {
		case strings.Contains(line, "level=WARN") && strings.Contains(line, `msg="login lockout started"`):
			warn = append(warn, line)
		case strings.Contains(line, "level=DEBUG") && strings.Contains(line, `msg="login lockout started"`):
			debug = append(debug, line)
		}
	}
	if len(warn) != 2 || len(debug) != 2 {
		t.Fatalf("want two lockout records per level, got:\n%s", h.logs)
	}
	for i, scope := range []string{"user", "address"} {
		if !strings.Contains(warn[i], "scope="+scope) || !strings.Contains(warn[i], "remote=198.51.100.1") ||
			!strings.Contains(warn[i], "protocol=imap") || !strings.Contains(warn[i], "component=auth") {
			t.Errorf("lockout record %q", warn[i])
		}
		if strings.Contains(warn[i], "@") {
			t.Errorf("warning carries a mail address: %q", warn[i])
		}
		if !strings.Contains(debug[i], "user="+owner) || !strings.Contains(debug[i], "remote=198.51.100.1") {
			t.Errorf("debug lockout record %q", debug[i])
		}
	}
	if strings.Contains(h.logs.String(), "guess") || strings.Contains(h.logs.String(), ownerPW) {
		t.Errorf("logs carry a password:\n%s", h.logs)
	}
}

// TestAuthGuardLockedAttemptWaits checks that a locked-out attempt waits
// the failure delay like a wrong password, so its timing tells nothing.
func TestAuthGuardLockedAttemptWaits(t *testing.T) {
	cfg := userLimitConfig()
	cfg.MaxFailuresPerIP = 1
	cfg.FailureDelay = 20 * time.Millisecond
	h := newGuardHarness(t, cfg)
	h.mustFail("192.0.2.1", owner, "bad", false)
	start := time.Now()
	h.mustFail("192.0.2.1", owner, ownerPW, true)
	if d := time.Since(start); d < cfg.FailureDelay {
		t.Fatalf("locked attempt answered after %v, before the failure delay %v", d, cfg.FailureDelay)
	}
}

// TestAuthGuardMemoryBounded checks that the per-node state stays within
// its bounds, forgetting the oldest known addresses first, and that names
// that are no valid address take no per-user counter.
func TestAuthGuardMemoryBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := newMemoryKnown(80)
	for i := 0; i < 1000; i++ {
		k.Remember(fmt.Sprintf("u%d@example.org", i), "192.0.2.1", now.Add(time.Duration(i)*time.Second))
		if len(k.last) > 80 {
			t.Fatalf("%d known pairs, bound 80", len(k.last))
		}
	}
	if !k.Known("u999@example.org", "192.0.2.1", now) || k.Known("u0@example.org", "192.0.2.1", now) {
		t.Fatal("the newest pair was forgotten or the oldest kept")
	}

	f := newMemoryFailures(80)
	lim := FailureLimit{Max: 2, Window: time.Minute, Lockout: time.Hour}
	for i := 0; i < 1000; i++ {
		f.Fail(fmt.Sprintf("k%d", i), lim, now)
		if len(f.entries) > 80 {
			t.Fatalf("%d failure counters, bound 80", len(f.entries))
		}
	}
	// Lockouts are kept over mere counters.
	f = newMemoryFailures(80)
	f.Fail("locked", FailureLimit{Max: 1, Window: time.Minute, Lockout: time.Hour}, now)
	for i := 0; i < 1000; i++ {
		f.Fail(fmt.Sprintf("k%d", i), lim, now)
	}
	if !f.Locked("locked", now) {
		t.Fatal("a lockout was dropped to make room for counters")
	}

	h := newGuardHarness(t, userLimitConfig())
	h.mustFail("192.0.2.1", strings.Repeat("x", MaxCredentialLength+1), "bad", false)
	h.mustFail("192.0.2.1", "not an address", "bad", false)
	if n := len(h.g.failures.(*memoryFailures).entries); n != 1 {
		t.Fatalf("%d counters, want only the address's", n)
	}
}

func TestConnLimiter(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	lim := NewConnLimiter(0, 2)
	ln := lim.Listener(raw, func(c net.Conn) { c.Write([]byte("BUSY\r\n")) })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	first, second := <-accepted, <-accepted
	// A third connection from the same address is turned away.
	third := dial()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(third).ReadString('\n')
	if err != nil || line != "BUSY\r\n" {
		t.Fatalf("over-limit connection got %q, %v", line, err)
	}
	// Closing an accepted connection frees its slot (once, even if closed twice).
	first.Close()
	first.Close()
	dial()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("freed slot not reused")
	}
	second.Close()
}

func TestLoginServer(t *testing.T) {
	var gotUser, gotPass string
	auth := func(u, p string) error {
		gotUser, gotPass = u, p
		if p != "pw" {
			return errors.New("bad")
		}
		return nil
	}
	s := NewLoginServer(auth)
	ch, done, err := s.Next(nil)
	if string(ch) != "Username:" || done || err != nil {
		t.Fatalf("first step %q %v %v", ch, done, err)
	}
	ch, done, err = s.Next([]byte("alice"))
	if string(ch) != "Password:" || done || err != nil {
		t.Fatalf("second step %q %v %v", ch, done, err)
	}
	if _, done, err = s.Next([]byte("pw")); !done || err != nil || gotUser != "alice" || gotPass != "pw" {
		t.Fatalf("final step %v %v (%q %q)", done, err, gotUser, gotPass)
	}
	if _, _, err := s.Next([]byte("more")); !errors.Is(err, sasl.ErrUnexpectedClientResponse) {
		t.Fatalf("extra response: %v", err)
	}
	// With the user name as initial response.
	s = NewLoginServer(auth)
	if ch, _, _ := s.Next([]byte("bob")); string(ch) != "Password:" {
		t.Fatalf("initial response step %q", ch)
	}
	if _, done, err := s.Next([]byte("nope")); !done || err == nil {
		t.Fatalf("wrong password accepted: %v", err)
	}
}
