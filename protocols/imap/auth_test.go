package imap

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/mailcluster/mailcluster/protocols"
)

func capsOf(t *testing.T, c *imapclient.Client) imap.CapSet {
	t.Helper()
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatalf("capability: %v", err)
	}
	return caps
}

func TestTLSAndLoginDisabled(t *testing.T) {
	ts := newTestServer(t, withSecureAuth())

	t.Run("plaintext", func(t *testing.T) {
		c := ts.dial(t, nil)
		caps := capsOf(t, c)
		for _, want := range []imap.Cap{imap.CapStartTLS, imap.CapLoginDisabled} {
			if !caps.Has(want) {
				t.Errorf("before TLS: capability %s missing from %v", want, caps)
			}
		}
		if caps.Has("AUTH=PLAIN") {
			t.Errorf("before TLS: AUTH=PLAIN advertised")
		}
		err := c.Login(testUser, testPassword).Wait()
		if err == nil || imapCode(err) != imap.ResponseCodePrivacyRequired {
			t.Fatalf("login without TLS: got %v, want NO [PRIVACYREQUIRED]", err)
		}
	})

	check := func(t *testing.T, c *imapclient.Client) {
		caps := capsOf(t, c)
		if caps.Has(imap.CapLoginDisabled) || caps.Has(imap.CapStartTLS) || !caps.Has("AUTH=PLAIN") || !caps.Has("AUTH=LOGIN") {
			t.Errorf("over TLS, before login: caps %v", caps)
		}
		if err := c.Login(testUser, testPassword).Wait(); err != nil {
			t.Fatalf("login over TLS: %v", err)
		}
		caps = capsOf(t, c)
		for _, want := range []imap.Cap{
			imap.CapIMAP4rev1, imap.CapIMAP4rev2, imap.CapNamespace, imap.CapUIDPlus, imap.CapMove,
			imap.CapSpecialUse, imap.CapCreateSpecialUse, imap.CapListExtended, imap.CapListStatus,
			imap.CapESearch, imap.CapSearchRes, imap.CapStatusSize, imap.CapBinary, imap.CapChildren,
			imap.CapLiteralPlus, imap.CapUnselect, imap.CapIdle, imap.CapUnauthenticate, "APPENDLIMIT=52436992",
		} {
			if !caps.Has(want) {
				t.Errorf("after login: capability %s missing", want)
			}
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("select: %v", err)
		}
	}

	t.Run("starttls", func(t *testing.T) {
		c, err := imapclient.DialStartTLS(ts.addr, &imapclient.Options{TLSConfig: ts.clientTLS})
		if err != nil {
			t.Fatalf("dial starttls: %v", err)
		}
		defer c.Close()
		check(t, c)
	})

	t.Run("implicit", func(t *testing.T) {
		c, err := imapclient.DialTLS(ts.tlsAddr, &imapclient.Options{TLSConfig: ts.clientTLS})
		if err != nil {
			t.Fatalf("dial tls: %v", err)
		}
		defer c.Close()
		check(t, c)
	})
}

func TestLoginFailures(t *testing.T) {
	ts := newTestServer(t)
	cases := []struct{ name, user, pass string }{
		{"wrong password", testUser, "not-the-password"},
		{"unknown user", "nobody@example.org", "whatever-pass"},
		{"unknown domain", "alice@elsewhere.example", testPassword},
		{"empty password", testUser, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial(t, nil)
			err := c.Login(tc.user, tc.pass).Wait()
			if imapCode(err) != imap.ResponseCodeAuthenticationFailed {
				t.Fatalf("got %v, want NO [AUTHENTICATIONFAILED]", err)
			}
			// The connection stays usable for another attempt.
			if err := c.Login(testUser, testPassword).Wait(); err != nil {
				t.Fatalf("login after failure: %v", err)
			}
		})
	}
	logs := ts.logs.String()
	for _, secret := range []string{testPassword, "not-the-password", "whatever-pass"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a password %q", secret)
		}
	}
}

// TestLockedLoginAnswersLikeWrongPassword checks that a locked-out
// attempt, even with the right password, gets exactly the answer of a
// wrong password, through LOGIN and AUTHENTICATE.
func TestLockedLoginAnswersLikeWrongPassword(t *testing.T) {
	guard := protocols.NewAuthGuard(protocols.AuthGuardConfig{
		MaxFailuresPerIP: 100, MaxFailuresPerUser: 2, Window: time.Minute, Lockout: time.Hour,
	}, nil)
	ts := newTestServer(t, withGuard(guard))
	plain := func(user, pass string) string {
		return "AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))
	}
	rc := dialRaw(t, ts.addr)
	_, wrongLogin := rc.cmd("LOGIN " + testUser + " bad-password-1")
	_, wrongAuth := rc.cmd(plain(testUser, "bad-password-2"))
	if !strings.HasPrefix(wrongLogin, "NO [AUTHENTICATIONFAILED]") || !strings.HasPrefix(wrongAuth, "NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("wrong password answers %q, %q", wrongLogin, wrongAuth)
	}
	// The user is locked out now.
	for _, rc := range []*rawConn{rc, dialRaw(t, ts.addr)} {
		if _, got := rc.cmd("LOGIN " + testUser + " " + testPassword); got != wrongLogin {
			t.Errorf("locked LOGIN answered %q, a wrong password %q", got, wrongLogin)
		}
		if _, got := rc.cmd(plain(testUser, testPassword)); got != wrongAuth {
			t.Errorf("locked AUTHENTICATE answered %q, a wrong password %q", got, wrongAuth)
		}
	}
	if !strings.Contains(ts.logs.String(), "login throttled") {
		t.Errorf("no throttled login logged:\n%s", ts.logs)
	}
	// Another user is not affected.
	c := ts.dial(t, nil)
	if err := c.Login(otherUser, otherPass).Wait(); err != nil {
		t.Fatalf("other user: %v", err)
	}
}

// TestLoginLogs checks that the records of logins, failed logins and
// throttled logins carry the client address (as "remote", like SMTP),
// the user name at debug level only, and never the password.
func TestLoginLogs(t *testing.T) {
	guard := protocols.NewAuthGuard(protocols.AuthGuardConfig{
		MaxFailuresPerIP: 100, MaxFailuresPerUser: 1, Window: time.Minute, Lockout: time.Hour,
	}, nil)
	ts := newTestServer(t, withGuard(guard))
	c := ts.dial(t, nil)
	if err := c.Login(otherUser, otherPass).Wait(); err != nil {
		t.Fatalf("login: %v", err)
	}
	c = ts.dial(t, nil)
	for _, pass := range []string{"wrong-password-1", testPassword} { // failed, then throttled
		if err := c.Login(testUser, pass).Wait(); imapCode(err) != imap.ResponseCodeAuthenticationFailed {
			t.Fatalf("got %v, want NO [AUTHENTICATIONFAILED]", err)
		}
	}
	logs := ts.logs.String()
	for _, want := range []struct{ msg, user string }{
		{"msg=login ", otherUser},
		{`msg="login failed"`, testUser},
		{`msg="login throttled"`, testUser},
	} {
		var info, debug string
		for _, line := range strings.Split(logs, "\n") {
			if !strings.Contains(line+" ", want.msg) {
				continue
			}
			switch {
			case strings.Contains(line, "level=INFO"):
				info = line
			case strings.Contains(line, "level=DEBUG"):
				debug = line
			}
		}
		if !strings.Contains(info, "remote=127.0.0.1") || !strings.Contains(info, "conn=") {
			t.Errorf("%s: info record %q lacks the client address", want.msg, info)
		}
		if strings.Contains(info, "@") {
			t.Errorf("%s: info record %q carries a mail address", want.msg, info)
		}
		if !strings.Contains(debug, "remote=127.0.0.1") || !strings.Contains(debug, "user="+want.user) {
			t.Errorf("%s: debug record %q lacks the client address or the user", want.msg, debug)
		}
	}
	for _, secret := range []string{testPassword, otherPass, "wrong-password-1"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a password %q", secret)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	ts := newTestServer(t)
	cases := []struct {
		name   string
		client sasl.Client
		ok     bool
	}{
		{"plain", sasl.NewPlainClient("", testUser, testPassword), true},
		{"plain with identity", sasl.NewPlainClient(testUser, testUser, testPassword), true},
		{"login", sasl.NewLoginClient(testUser, testPassword), true},
		{"plain bad password", sasl.NewPlainClient("", testUser, "wrong-password"), false},
		{"plain other identity", sasl.NewPlainClient(otherUser, testUser, testPassword), false},
		{"login bad password", sasl.NewLoginClient(testUser, "wrong-password"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial(t, nil)
			err := c.Authenticate(tc.client)
			if tc.ok {
				if err != nil {
					t.Fatalf("authenticate: %v", err)
				}
				if _, err := c.Select("INBOX", nil).Wait(); err != nil {
					t.Fatalf("select after authenticate: %v", err)
				}
				return
			}
			if imapCode(err) != imap.ResponseCodeAuthenticationFailed {
				t.Fatalf("got %v, want NO [AUTHENTICATIONFAILED]", err)
			}
		})
	}

	t.Run("malformed", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		// "AAAA" decodes to three zero bytes: no valid PLAIN message.
		_, status := rc.cmd("AUTHENTICATE PLAIN AAAA")
		if !strings.HasPrefix(status, "NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("malformed PLAIN: %s", status)
		}
		_, status = rc.cmd("AUTHENTICATE CRAM-MD5")
		if !strings.HasPrefix(status, "NO") {
			t.Fatalf("unsupported mechanism: %s", status)
		}
	})
}

func TestUnauthenticate(t *testing.T) {
	ts := newTestServer(t)
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", false)
	if err := c.Unauthenticate().Wait(); err != nil {
		t.Fatalf("unauthenticate: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err == nil {
		t.Fatal("select after unauthenticate succeeded")
	}
	if err := c.Login(otherUser, otherPass).Wait(); err != nil {
		t.Fatalf("login as another user: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("select as other user: %v", err)
	}
}

// TestAppPasswordScope logs in with the real client: an app password
// logs in over IMAP only when its scope has IMAP, through LOGIN and
// AUTHENTICATE alike, and once the user has MFA the account password
// fails exactly like a wrong one while the IMAP app password still works.
func TestAppPasswordScope(t *testing.T) {
	ts := newTestServer(t)
	const imapApp, popApp = "imap-app-pass-1234", "pop3-app-pass-5678"
	if err := ts.env.Mem.AddAppPassword(testUser, imapApp, []string{"imap", "smtp"}); err != nil {
		t.Fatal(err)
	}
	if err := ts.env.Mem.AddAppPassword(testUser, popApp, []string{"pop3"}); err != nil {
		t.Fatal(err)
	}
	login := func(pass string) error {
		c := ts.dial(t, nil)
		return c.Login(testUser, pass).Wait()
	}
	auth := func(pass string) error {
		c := ts.dial(t, nil)
		return c.Authenticate(sasl.NewPlainClient("", testUser, pass))
	}
	for _, try := range []func(string) error{login, auth} {
		if err := try(imapApp); err != nil {
			t.Errorf("app password with IMAP in its scope: %v", err)
		}
		if err := try(popApp); imapCode(err) != imap.ResponseCodeAuthenticationFailed {
			t.Errorf("app password for POP3 only over IMAP: got %v, want NO [AUTHENTICATIONFAILED]", err)
		}
		if err := try(testPassword); err != nil {
			t.Errorf("account password without MFA: %v", err)
		}
	}

	if err := ts.env.Mem.SetMFA(testUser, true); err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, ts.addr)
	_, wrong := rc.cmd("LOGIN " + testUser + " not-the-password")
	_, account := rc.cmd("LOGIN " + testUser + " " + testPassword)
	if !strings.HasPrefix(wrong, "NO [AUTHENTICATIONFAILED]") || account != wrong {
		t.Errorf("account password with MFA answered %q, a wrong password %q", account, wrong)
	}
	if _, ok := rc.cmd("LOGIN " + testUser + " " + imapApp); !strings.HasPrefix(ok, "OK") {
		t.Errorf("IMAP app password with MFA: %q", ok)
	}
	if err := login(popApp); imapCode(err) != imap.ResponseCodeAuthenticationFailed {
		t.Errorf("POP3 app password over IMAP with MFA: %v", err)
	}
	logs := ts.logs.String()
	for _, secret := range []string{imapApp, popApp, testPassword} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a password %q", secret)
		}
	}
}
