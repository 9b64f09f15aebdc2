package protocols

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestSharedAuthStateAcrossNodes: two nodes' guards whose states publish
// to each other count a guessing run spread over both as one, and a
// login from an address on one node makes it known on the other.
func TestSharedAuthStateAcrossNodes(t *testing.T) {
	var a, b *SharedAuthState
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a = NewSharedAuthState(func(e AuthEvent) { b.Apply(e, clock()) })
	b = NewSharedAuthState(func(e AuthEvent) { a.Apply(e, clock()) })
	cfg := DefaultAuthGuardConfig()
	cfg.FailureDelay = 0
	guardOn := func(s *SharedAuthState) *AuthGuard {
		c := cfg
		c.Failures, c.Known = s, s
		return NewAuthGuard(c, clock)
	}
	ga, gb := guardOn(a), guardOn(b)
	store := fakeStore{users: map[string]string{"ann@example.test": "right-password"}}
	attacker := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 1}
	ctx := context.Background()
	// Half the per-address limit on each node: together the limit.
	for i := 0; i < cfg.MaxFailuresPerIP; i++ {
		g := ga
		if i%2 == 1 {
			g = gb
		}
		if _, err := g.Login(ctx, store, Attempt{Protocol: "imap", Remote: attacker, Username: "ann@example.test", Password: "guess"}); err == nil {
			t.Fatal("a wrong password logged in")
		}
	}
	for name, s := range map[string]*SharedAuthState{"a": a, "b": b} {
		if !s.Locked(addressKey(clientKey(RemoteIP(attacker))), now) {
			t.Errorf("node %s: the address is not locked after %d failures over both nodes", name, cfg.MaxFailuresPerIP)
		}
	}
	// The right password from the locked address fails on both.
	if _, err := gb.Login(ctx, store, Attempt{Protocol: "imap", Remote: attacker, Username: "ann@example.test", Password: "right-password"}); err == nil {
		t.Error("a locked address logged in on the other node")
	}
	// A login on a makes its address known on b.
	home := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 1}
	if _, err := ga.Login(ctx, store, Attempt{Protocol: "imap", Remote: home, Username: "ann@example.test", Password: "right-password"}); err != nil {
		t.Fatal(err)
	}
	if !b.Known("ann@example.test", clientKey(RemoteIP(home)), now.Add(-time.Minute)) {
		t.Error("a login on one node did not make its address known on the other")
	}
}

// TestSharedAuthStateApplyRefuses: events from a peer out of bounds are
// dropped, and a time ahead of the clock is taken as now.
func TestSharedAuthStateApplyRefuses(t *testing.T) {
	s := NewSharedAuthState(func(AuthEvent) {})
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lim := FailureLimit{Max: 1, Window: time.Minute, Lockout: time.Minute}
	for _, e := range []AuthEvent{
		{Kind: "fail", Key: "k1", Limit: lim, Time: now.Add(-2 * time.Hour)},
		{Kind: "fail", Key: "k2", Limit: FailureLimit{Max: 1, Window: time.Minute, Lockout: 48 * time.Hour}, Time: now},
		{Kind: "bogus", Key: "k3", Limit: lim, Time: now},
		{Kind: "fail", Key: string(make([]byte, 600)), Limit: lim, Time: now},
	} {
		s.Apply(e, now)
	}
	for _, k := range []string{"k1", "k2", "k3"} {
		if s.Locked(k, now) {
			t.Errorf("%s locked by an event that should have been dropped", k)
		}
	}
	s.Apply(AuthEvent{Kind: "fail", Key: "k4", Limit: lim, Time: now.Add(time.Hour)}, now)
	if !s.Locked("k4", now) || s.Locked("k4", now.Add(2*time.Minute)) {
		t.Error("a future-dated failure was not taken as now")
	}
}

// TestLockoutsListedAndLifted: running lockouts are listed by scope, and
// unblocking one lifts it on every node.
func TestLockoutsListedAndLifted(t *testing.T) {
	var a, b *SharedAuthState
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	a = NewSharedAuthState(func(e AuthEvent) { b.Apply(e, now) })
	b = NewSharedAuthState(func(e AuthEvent) { a.Apply(e, now) })
	lim := FailureLimit{Max: 1, Window: time.Minute, Lockout: 10 * time.Minute}
	a.Fail(addressKey(clientKey(netip.MustParseAddr("2001:db8:1:2:3::4"))), lim, now)
	a.Fail(userKey("ann@example.test"), FailureLimit{Max: 1, Window: time.Minute, Lockout: 5 * time.Minute}, now)
	got := b.Lockouts(now)
	want := []Lockout{{Scope: LockUser, Value: "ann@example.test", Until: now.Add(5 * time.Minute)},
		{Scope: LockAddress, Value: "2001:db8:1:2::/64", Until: now.Add(10 * time.Minute)}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("lockouts on the other node: %+v, want %+v", got, want)
	}
	if was, err := b.Unblock("2001:db8:1:2:ffff::1", now); err != nil || !was {
		t.Fatalf("unblock an address of the /64: %v, %v", was, err)
	}
	if was, err := a.Unblock("Ann@Example.test", now); err != nil || !was {
		t.Fatalf("unblock the user: %v, %v", was, err)
	}
	for name, s := range map[string]*SharedAuthState{"a": a, "b": b} {
		if l := s.Lockouts(now); len(l) != 0 {
			t.Errorf("node %s still lists %+v", name, l)
		}
	}
	if _, err := a.Unblock("not an address", now); err == nil {
		t.Error("unblock of garbage accepted")
	}
}
