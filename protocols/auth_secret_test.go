package protocols

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestCheckSecretCountsFailuresPerAddress checks that wrong secrets lock
// their client address out (without running the check any more), that
// other addresses are unaffected, and that the lockout ends.
func TestCheckSecretCountsFailuresPerAddress(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	g := NewAuthGuard(AuthGuardConfig{MaxFailuresPerIP: 3, Window: time.Minute, Lockout: 10 * time.Minute}, clock.now)
	ctx := context.Background()
	attacker := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 4000}
	admin := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4000}
	calls := 0
	check := func(ok bool) func() (bool, error) {
		return func() (bool, error) { calls++; return ok, nil }
	}
	for i := 0; i < 3; i++ {
		if err := g.CheckSecret(ctx, "admin", attacker, check(false)); !errors.Is(err, schema.ErrAuthFailed) || errors.Is(err, ErrTooManyFailures) {
			t.Fatalf("wrong secret %d: %v", i, err)
		}
	}
	calls = 0
	if err := g.CheckSecret(ctx, "admin", attacker, check(true)); !errors.Is(err, ErrTooManyFailures) || calls != 0 {
		t.Fatalf("locked address: %v after %d checks, want ErrTooManyFailures and no check", err, calls)
	}
	if err := g.CheckSecret(ctx, "admin", admin, check(true)); err != nil {
		t.Fatalf("other address: %v", err)
	}
	boom := errors.New("store down")
	if err := g.CheckSecret(ctx, "admin", admin, func() (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Fatalf("failing check: %v", err)
	}
	clock.t = clock.t.Add(11 * time.Minute)
	if err := g.CheckSecret(ctx, "admin", attacker, check(true)); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
}
