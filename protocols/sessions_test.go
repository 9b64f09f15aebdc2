package protocols

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// loginLog keeps the login events a guard reports.
type loginLog struct {
	mu     sync.Mutex
	events []LoginEvent
}

func (l *loginLog) RecordLogin(e LoginEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// TestSessionRegistryEnd: End ends every session of a user, or only those
// of one credential, calls each end once, and leaves other users alone.
func TestSessionRegistryEnd(t *testing.T) {
	r := NewSessionRegistry(nil)
	ended := map[string]int{}
	var mu sync.Mutex
	open := func(user, cred, name string) func() {
		return r.Open(user, "imap", netip.MustParseAddr("192.0.2.1"), cred, time.Time{}, func() {
			mu.Lock()
			ended[name]++
			mu.Unlock()
		})
	}
	open("ann@example.test", CredentialPassword, "a1")
	open("ann@example.test", "phone", "a2")
	doneA3 := open("ann@example.test", "phone", "a3")
	open("bob@example.test", CredentialPassword, "b1")
	doneA3() // a3 logged out by itself
	doneA3() // twice is fine

	if got := r.List("ann@example.test"); len(got) != 2 || got[0].Remote != "192.0.2.1" || got[1].Credential != "phone" {
		t.Fatalf("List = %+v, want two sessions of ann", got)
	}
	if n := r.End("ann@example.test", "phone"); n != 1 || ended["a2"] != 1 || ended["a1"] != 0 {
		t.Fatalf("End(phone) = %d, ended %v; want only a2", n, ended)
	}
	if n := r.End("ann@example.test", ""); n != 1 || ended["a1"] != 1 {
		t.Fatalf("End(all) = %d, ended %v; want a1", n, ended)
	}
	if n := r.End("ann@example.test", ""); n != 0 {
		t.Fatalf("End again ended %d sessions", n)
	}
	if ended["a3"] != 0 || ended["b1"] != 0 || r.Count() != 1 {
		t.Fatalf("ended %v, %d open; want bob's session alone left", ended, r.Count())
	}
	open("cy@other.test", CredentialPassword, "c1")
	open("bob@example.test", "phone", "b2")
	if n := r.EndDomain("example.test", CredentialPassword); n != 1 || ended["b1"] != 1 || ended["b2"] != 0 || ended["c1"] != 0 {
		t.Fatalf("EndDomain = %d, ended %v; want b1 alone", n, ended)
	}
}

// TestAuthGuardRecordsLogins: the guard reports accepted and refused
// logins of valid user names with protocol, address and credential, never
// a password, and tracks a session it is asked to.
func TestAuthGuardRecordsLogins(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	logins := &loginLog{}
	sessions := NewSessionRegistry(clock.now)
	cfg := DefaultAuthGuardConfig()
	cfg.FailureDelay = 0
	cfg.Logins, cfg.Sessions = logins, sessions
	g := NewAuthGuard(cfg, clock.now)
	store := fakeStore{users: map[string]string{"ann@example.test": "secret-pw-1"}}
	remote := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 1234}
	ctx := context.Background()

	acct, err := g.Login(ctx, store, Attempt{Protocol: "imap", Remote: remote, Username: "Ann@Example.test", Password: "secret-pw-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Login(ctx, store, Attempt{Protocol: "pop3", Remote: remote, Username: "ann@example.test", Password: "wrong-pw-2"}); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if _, err := g.Login(ctx, store, Attempt{Protocol: "pop3", Remote: remote, Username: "not an address", Password: "x"}); err == nil {
		t.Fatal("an invalid name logged in")
	}
	if len(logins.events) != 2 {
		t.Fatalf("events = %+v, want two", logins.events)
	}
	ok, bad := logins.events[0], logins.events[1]
	if !ok.Success || ok.User != "ann@example.test" || ok.Protocol != "imap" || ok.Remote.String() != "198.51.100.7" || ok.Credential != CredentialPassword {
		t.Errorf("success event = %+v", ok)
	}
	if bad.Success || bad.User != "ann@example.test" || bad.Protocol != "pop3" || bad.Credential != "" {
		t.Errorf("failure event = %+v", bad)
	}
	for _, e := range logins.events {
		if s := strings.ToLower(fmtEvent(e)); strings.Contains(s, "secret-pw-1") || strings.Contains(s, "wrong-pw-2") {
			t.Errorf("event carries a password: %s", s)
		}
	}

	server, client := net.Pipe()
	defer client.Close()
	done := g.TrackSession(acct, "imap", remote, server)
	if got := sessions.List("ann@example.test"); len(got) != 1 || got[0].Protocol != "imap" {
		t.Fatalf("sessions = %+v", got)
	}
	if sessions.End("ann@example.test", "") != 1 {
		t.Fatal("the session was not ended")
	}
	if _, err := server.Write([]byte("x")); err == nil {
		t.Error("the ended session's connection is still open")
	}
	done()
}

func fmtEvent(e LoginEvent) string {
	return e.Time.String() + e.Protocol + e.User + e.Remote.String() + e.Credential
}

// TestSessionRegistryLoginInFlight: a session whose credentials were
// checked before a kill of its user, or of its credential, but that
// registers after it is ended at once; one checked after the kill, or
// killed for another credential, stays.
func TestSessionRegistryLoginInFlight(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	r := NewSessionRegistry(clock.now)
	checked := clock.t
	clock.t = clock.t.Add(time.Second)
	r.End("ann@example.test", "")
	r.End("bob@example.test", "phone")
	ended := 0
	open := func(user, cred string, at time.Time) {
		r.Open(user, "imap", netip.Addr{}, cred, at, func() { ended++ })
	}
	open("ann@example.test", CredentialPassword, checked)
	if ended != 1 || r.Count() != 0 {
		t.Fatalf("a login checked before the kill: ended %d, %d open", ended, r.Count())
	}
	open("bob@example.test", "phone", checked)
	open("bob@example.test", CredentialPassword, checked)
	if ended != 2 || r.Count() != 1 {
		t.Fatalf("a login checked before its app password's kill: ended %d, %d open", ended, r.Count())
	}
	open("ann@example.test", CredentialPassword, clock.t.Add(time.Millisecond))
	if ended != 2 || r.Count() != 2 {
		t.Fatalf("a login checked after the kill: ended %d, %d open", ended, r.Count())
	}
	clock.t = clock.t.Add(2 * killMemory)
	r.End("carl@example.test", "") // forgets the old kills
	open("ann@example.test", CredentialPassword, checked)
	if ended != 2 {
		t.Errorf("a kill was remembered beyond killMemory")
	}
}
