package node

import (
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
