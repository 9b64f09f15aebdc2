package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// waitEnded polls an IMAP client until its connection turns out closed.
func waitEnded(t *testing.T, c *imapclient.Client, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Noop().Wait() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the IMAP session is still open", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionsReport runs "user sessions --json" until check accepts its
// report (the history is written in the background).
func sessionsReport(t *testing.T, dir, user string, check func(SessionsReport) bool) SessionsReport {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var rep SessionsReport
		out := mustCLI(t, "", "user", "sessions", "--json", "--data", dir, user)
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("user sessions --json: %v\n%s", err, out)
		}
		if check(rep) {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("user sessions --json never showed what was expected:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCLIUserSessions: IMAP sessions of real go-imap clients are listed
// and ended by "user sessions --kill", by "user passwd" and (only the
// sessions of that app password) by app password revocation; the
// listing shows the logins with protocol, address, credential and
// result, and never a password.
func TestCLIUserSessions(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	const user, password, password2 = "carol@example.test", "carol-first-pw", "carol-second-pw"
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, password+"\n", "user", "add", "--data", dir, user)
	app := strings.TrimSpace(mustCLI(t, "", "user", "app-password", "add", "--data", dir, "--name", "phone", user))
	tlsCfg := clientTLS(t, cfg)
	dial := func(pw string) (*imapclient.Client, error) {
		c, err := imapclient.DialTLS(n.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.Login(user, pw).Wait()
	}
	login := func(pw string) *imapclient.Client {
		t.Helper()
		c, err := dial(pw)
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		return c
	}

	if _, err := dial("a-wrong-password"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	withPassword := login(password)
	withApp := login(app)

	rep := sessionsReport(t, dir, user, func(r SessionsReport) bool { return len(r.Logins) >= 3 })
	if len(rep.Open) != 2 || rep.Node != cfg.NodeID {
		t.Fatalf("open sessions: %+v", rep)
	}
	creds := map[string]bool{}
	for _, s := range rep.Open {
		if s.Protocol != "imap" || s.Remote != "127.0.0.1" || s.User != user || s.Node != cfg.NodeID {
			t.Errorf("open session %+v", s)
		}
		creds[s.Credential] = true
	}
	if !creds[protocols.CredentialPassword] || !creds["phone"] {
		t.Errorf("open sessions' credentials: %v", creds)
	}
	results := map[string]int{}
	for _, l := range rep.Logins {
		if l.Protocol != "imap" || l.Remote != "127.0.0.1" || l.Node != cfg.NodeID || l.Time.IsZero() {
			t.Errorf("login record %+v", l)
		}
		results[fmt.Sprintf("%v/%s", l.Success, l.Credential)]++
	}
	if results["true/password"] != 1 || results["true/phone"] != 1 || results["false/"] != 1 {
		t.Errorf("login records by result/credential: %v", results)
	}
	text := mustCLI(t, "", "user", "sessions", "--data", dir, user)
	for _, want := range []string{"nodes that answered: " + cfg.NodeID, "imap", "127.0.0.1", "phone", "failed"} {
		if !strings.Contains(text, want) {
			t.Errorf("user sessions does not show %q:\n%s", want, text)
		}
	}
	for _, out := range []string{text, mustCLI(t, "", "user", "sessions", "--json", "--data", dir, user)} {
		for _, secret := range []string{password, app, "a-wrong-password"} {
			if strings.Contains(out, secret) {
				t.Errorf("user sessions shows a password:\n%s", out)
			}
		}
	}

	// Revoking the app password ends its session only.
	mustCLI(t, "", "user", "app-password", "revoke", "--data", dir, user, "phone")
	waitEnded(t, withApp, "app password revoked")
	if err := withPassword.Noop().Wait(); err != nil {
		t.Fatalf("the password session ended with the app password: %v", err)
	}

	// --kill ends the rest.
	if out := mustCLI(t, "", "user", "sessions", "--kill", "--data", dir, user); !strings.Contains(out, "1 session(s)") {
		t.Errorf("user sessions --kill: %q", out)
	}
	waitEnded(t, withPassword, "sessions --kill")

	// A password change ends a session opened with the old password.
	again := login(password)
	mustCLI(t, password2+"\n", "user", "passwd", "--data", dir, user)
	waitEnded(t, again, "user passwd")
	login(password2)
	if got := n.sessions.registry.List(user); len(got) != 1 {
		t.Errorf("open sessions after the new login: %+v", got)
	}

	// A failed login of an unknown user leaves no record.
	err := n.directory.RecordLogin(t.Context(), "nobody@example.test", directoryRecord())
	if !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("record a login of an unknown user: %v", err)
	}
	failCLI(t, ExitUsage, "user sessions", "", "user", "sessions", "--data", dir)
}

// TestLoginHistoryThrottle: one node writes at most one record per
// user, protocol, client address, credential and result per
// loginRecordEvery, and
// its memory of what it wrote is bounded.
func TestLoginHistoryThrottle(t *testing.T) {
	s := &sessionService{last: map[loginKey]time.Time{}}
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ev := func(d time.Duration, user, proto, ip string, ok bool) protocols.LoginEvent {
		return protocols.LoginEvent{Time: t0.Add(d), User: user, Protocol: proto, Remote: netip.MustParseAddr(ip), Success: ok}
	}
	written := 0
	for i := 0; i < 1000; i++ { // a client logging in every second for 1000 s
		if s.admit(ev(time.Duration(i)*time.Second, "a@x.test", "imap", "192.0.2.1", true)) {
			written++
		}
	}
	if written != 2 { // at 0 and at 600 s
		t.Errorf("1000 logins in 1000 s wrote %d records, want 2", written)
	}
	for _, e := range []protocols.LoginEvent{
		ev(0, "b@x.test", "imap", "192.0.2.1", true),
		ev(0, "a@x.test", "pop3", "192.0.2.1", true),
		ev(0, "a@x.test", "imap", "192.0.2.2", true),
		ev(0, "a@x.test", "imap", "192.0.2.1", false),
		func() protocols.LoginEvent {
			e := ev(0, "a@x.test", "imap", "192.0.2.1", true)
			e.Credential = "phone"
			return e
		}(),
	} {
		if !s.admit(e) {
			t.Errorf("%+v was throttled by another key's record", e)
		}
	}
	// A key forgotten (its user is unknown) takes no room and throttles
	// nothing.
	unknown := ev(time.Second, "nobody@x.test", "imap", "192.0.2.1", false)
	if !s.admit(unknown) {
		t.Fatal("a new key was throttled")
	}
	s.forget(unknown)
	if !s.admit(unknown) {
		t.Error("a forgotten key is still throttled")
	}
	// A flood of distinct keys: the memory stays bounded, so writes stop.
	s = &sessionService{last: map[loginKey]time.Time{}}
	admitted := 0
	for i := 0; i < maxLoginThrottle+500; i++ {
		if s.admit(ev(0, fmt.Sprintf("u%d@x.test", i), "imap", "192.0.2.1", false)) {
			admitted++
		}
	}
	if admitted != maxLoginThrottle || len(s.last) != maxLoginThrottle {
		t.Errorf("flood: %d admitted, %d remembered; want %d", admitted, len(s.last), maxLoginThrottle)
	}
	if !s.admit(ev(loginRecordEvery, "late@x.test", "imap", "192.0.2.1", false)) || len(s.last) > maxLoginThrottle {
		t.Errorf("once the old keys age out, a new key is recorded again (%d remembered)", len(s.last))
	}
}

func directoryRecord() directory.LoginRecord {
	return directory.LoginRecord{Time: time.Now(), Protocol: "imap", Remote: "192.0.2.9"}
}
