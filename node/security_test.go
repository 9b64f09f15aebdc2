package node

import (
	"crypto/tls"
	"net/textproto"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"
)

// TestCLISecurityBlocked: failed logins that lock the client address out
// are listed by "security blocked", and "security unblock" lifts it.
func TestCLISecurityBlocked(t *testing.T) {
	cfg := testConfig(t)
	cfg.AuthGuard.MaxFailuresPerIP = 3
	n := startNode(t, cfg)
	dir := cfg.DataDir
	if out := mustCLI(t, "", "security", "blocked", "--data", dir); !strings.Contains(out, "no lockouts") {
		t.Errorf("before any failure: %q", out)
	}
	for i := 0; i < 3; i++ {
		c, err := imapclient.DialTLS(n.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: clientTLS(t, cfg)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login("nobody@example.test", "wrong-password").Wait(); err == nil {
			t.Fatal("a wrong password logged in")
		}
		c.Close()
	}
	out := mustCLI(t, "", "security", "blocked", "--data", dir)
	if !strings.Contains(out, "address  127.0.0.1") {
		t.Fatalf("security blocked: %q", out)
	}
	if out := mustCLI(t, "", "security", "blocked", "--data", dir, "--json"); !strings.Contains(out, `"scope": "address"`) {
		t.Errorf("--json: %q", out)
	}
	if out := mustCLI(t, "", "security", "unblock", "--data", dir, "127.0.0.1"); !strings.Contains(out, "unblocked on every node") {
		t.Errorf("unblock: %q", out)
	}
	if l := n.authState.Load().Lockouts(n.now()); len(l) != 0 {
		t.Errorf("still locked: %+v", l)
	}
	failCLI(t, ExitError, "no IP address", "", "security", "unblock", "--data", dir, "garbage")
	failCLI(t, ExitUsage, "blocked or unblock", "", "security", "--data", dir)
}

// TestCLISecurityCommandRate: a client address over the command rate is
// refused on every port it uses (here POP3, then IMAP), listed by
// "security blocked" as command_rate, and "security unblock" lets it
// send commands again.
func TestCLISecurityCommandRate(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.CommandsPerSecond, cfg.Limits.CommandBurst = 0.01, 3
	cfg.Limits.CommandRateLoopback = true // the test's client is on loopback
	n := startNode(t, cfg)
	dir := cfg.DataDir
	conn, err := tls.Dial("tcp", n.Addr(ListenPOP3S).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tp := textproto.NewConn(conn)
	line := func() string {
		t.Helper()
		l, err := tp.ReadLine()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	line() // greeting
	for i := 0; i < 3; i++ {
		tp.PrintfLine("USER someone@example.test")
		if l := line(); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("command %d: %q", i, l)
		}
	}
	tp.PrintfLine("USER someone@example.test")
	if l := line(); l != "-ERR [SYS/TEMP] too many commands, slow down" {
		t.Fatalf("past the burst: %q", l)
	}
	// The same address on another port shares the bucket.
	c, err := imapclient.DialTLS(n.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: clientTLS(t, cfg)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("someone@example.test", "whatever-password").Wait(); err == nil || !strings.Contains(err.Error(), "LIMIT") {
		t.Fatalf("IMAP login over the limit: %v", err)
	}
	if v, _ := tlsMetric(t, n, `mail_node_commands_refused_total{action="refused"}`); v != 2 {
		t.Errorf("mail_node_commands_refused_total{action=refused} = %v, want 2", v)
	}
	out := mustCLI(t, "", "security", "blocked", "--data", dir)
	if !strings.Contains(out, "command_rate  127.0.0.1") {
		t.Fatalf("security blocked: %q", out)
	}
	if out := mustCLI(t, "", "security", "unblock", "--data", dir, "127.0.0.1"); !strings.Contains(out, "unblocked on every node") {
		t.Errorf("unblock: %q", out)
	}
	if l := n.cmdRate.Load().Limited(); len(l) != 0 {
		t.Fatalf("still limited: %+v", l)
	}
	tp.PrintfLine("USER someone@example.test")
	if l := line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("after unblock: %q", l)
	}
}
