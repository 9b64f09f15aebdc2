package node

import (
	"crypto/tls"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/pquerna/otp/totp"
)

// TestSessionsOfEveryProtocol: POP3 and SMTP submission sessions are
// registered and listed like IMAP ones and end with the user's kill;
// confirming MFA, a domain that starts requiring MFA and deleting the
// user end the sessions too.
func TestSessionsOfEveryProtocol(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	const user, password = "erin@example.test", "erin-first-pw"
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, password+"\n", "user", "add", "--data", dir, user)
	tlsCfg := clientTLS(t, cfg)

	// POP3 over implicit TLS, in the TRANSACTION state.
	conn, err := tls.Dial("tcp", n.Addr(ListenPOP3S).String(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	pop := textproto.NewConn(conn)
	for _, line := range []string{"", "USER " + user, "PASS " + password} {
		if line != "" {
			pop.PrintfLine("%s", line)
		}
		if l, err := pop.ReadLine(); err != nil || !strings.HasPrefix(l, "+OK") {
			t.Fatalf("pop3 %q: %q, %v", line, l, err)
		}
	}
	// SMTP submission after STARTTLS and AUTH PLAIN.
	sc, err := gosmtp.DialStartTLS(n.Addr(ListenSubmission).String(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		t.Fatalf("smtp auth: %v", err)
	}

	rep := sessionsReport(t, dir, user, func(r SessionsReport) bool { return len(r.Open) == 2 && len(r.Logins) == 2 })
	protos := map[string]bool{}
	for _, s := range rep.Open {
		protos[s.Protocol] = s.Remote == "127.0.0.1"
	}
	for _, l := range rep.Logins {
		protos["login "+l.Protocol] = l.Success && l.Remote == "127.0.0.1"
	}
	for _, p := range []string{"pop3", "smtp", "login pop3", "login smtp"} {
		if !protos[p] {
			t.Errorf("%s missing from the report: %+v", p, rep)
		}
	}
	mustCLI(t, "", "user", "sessions", "--kill", "--data", dir, user)
	pop.PrintfLine("STAT")
	if l, err := pop.ReadLine(); err == nil {
		t.Errorf("the POP3 session answered %q after the kill", l)
	}
	if err := sc.Noop(); err == nil {
		t.Error("the SMTP session answered NOOP after the kill")
	}
	if got := n.sessions.registry.List(user); len(got) != 0 {
		t.Errorf("sessions left after the kill: %+v", got)
	}

	imapLogin := func() *imapclient.Client {
		t.Helper()
		c, err := imapclient.DialTLS(n.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Login(user, password).Wait(); err != nil {
			t.Fatalf("imap login: %v", err)
		}
		return c
	}
	// Confirming MFA ends the sessions of the account password.
	c := imapLogin()
	uri, err := url.Parse(strings.SplitN(mustCLI(t, "", "user", "mfa", "enable", "--data", dir, user), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("a pending MFA enrolment ended the session: %v", err)
	}
	code, err := totp.GenerateCode(uri.Query().Get("secret"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "", "user", "mfa", "confirm", "--data", dir, user, code)
	waitEnded(t, c, "mfa confirm")
	mustCLI(t, "", "user", "mfa", "disable", "--data", dir, user)

	// A domain that starts requiring MFA ends its password sessions.
	c = imapLogin()
	mustCLI(t, "", "domain", "mfa", "--data", dir, "example.test", "optional")
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("MFA optional ended the session: %v", err)
	}
	mustCLI(t, "", "domain", "mfa", "--data", dir, "example.test", "require")
	waitEnded(t, c, "domain mfa require")
	mustCLI(t, "", "domain", "mfa", "--data", dir, "example.test", "optional")

	// Deleting the user ends its sessions.
	c = imapLogin()
	mustCLI(t, "", "user", "del", "--data", dir, user)
	waitEnded(t, c, "user del")
}
