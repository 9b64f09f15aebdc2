package protocols

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

// fakeClock is a clock the tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestAuthGuardLocksOutPerIPAndPerUser(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g := NewAuthGuard(AuthGuardConfig{MaxFailuresPerIP: 3, MaxFailuresPerUser: 5, Window: time.Minute, Lockout: 10 * time.Minute}, clock.now)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")

	for i := 0; i < 3; i++ {
		if err := g.Allow(a, "alice"); err != nil {
			t.Fatalf("attempt %d refused: %v", i, err)
		}
		g.Failed(a, "alice")
	}
	if err := g.Allow(a, "bob"); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("address not locked out after 3 failures: %v", err)
	}
	if err := g.Allow(b, "alice"); err != nil {
		t.Fatalf("user locked out too early: %v", err)
	}
	// Two more failures for alice from another address lock the user.
	g.Failed(b, "alice")
	g.Failed(b, "Alice")
	if err := g.Allow(netip.MustParseAddr("198.51.100.7"), "ALICE"); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("user not locked out after 5 failures: %v", err)
	}
	// Lockouts end.
	clock.t = clock.t.Add(11 * time.Minute)
	if err := g.Allow(a, "alice"); err != nil {
		t.Fatalf("still locked out after the lockout: %v", err)
	}
}

func TestAuthGuardWindowAndSuccess(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g := NewAuthGuard(AuthGuardConfig{MaxFailuresPerIP: 3, Window: time.Minute, Lockout: time.Hour}, clock.now)
	ip := netip.MustParseAddr("192.0.2.1")
	g.Failed(ip, "u")
	g.Failed(ip, "u")
	clock.t = clock.t.Add(2 * time.Minute) // the window expired
	g.Failed(ip, "u")
	if err := g.Allow(ip, "u"); err != nil {
		t.Fatalf("failures outside the window counted: %v", err)
	}
	g.Failed(ip, "u")
	g.Succeeded(ip, "u") // a success clears the count
	g.Failed(ip, "u")
	if err := g.Allow(ip, "u"); err != nil {
		t.Fatalf("success did not clear failures: %v", err)
	}
}

func TestAuthGuardGroupsIPv6By64(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	g := NewAuthGuard(AuthGuardConfig{MaxFailuresPerIP: 2, Window: time.Minute, Lockout: time.Hour}, clock.now)
	g.Failed(netip.MustParseAddr("2001:db8:1:2::1"), "x")
	g.Failed(netip.MustParseAddr("2001:db8:1:2::ffff"), "y")
	if err := g.Allow(netip.MustParseAddr("2001:db8:1:2:abcd::9"), "z"); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("one /64 not treated as one client: %v", err)
	}
	if err := g.Allow(netip.MustParseAddr("2001:db8:1:3::1"), "z"); err != nil {
		t.Fatalf("another /64 locked out: %v", err)
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
