package imap

import (
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols"
)

// TestCommandRateLimit: past the burst a command gets NO [LIMIT], the
// bucket is shared by the connections of one address, a NOOP counts, the
// command after a successful one does not pay twice for its poll, and
// persistent abuse gets BYE. (A NOOP over the limit is only delayed:
// the library ends the connection on any error of a poll.)
func TestCommandRateLimit(t *testing.T) {
	limiter := protocols.NewCommandLimiter(protocols.CommandRateConfig{PerSecond: 0.001, Burst: 4, RefuseDelay: -1, Loopback: true, CloseAfter: 3}, nil)
	ts := newTestServer(t, func(c *Config) { c.CommandRate = limiter })
	c := ts.login(t, nil)                                    // LOGIN: 1 token
	if _, err := c.Select("INBOX", nil).Wait(); err != nil { // 2
		t.Fatal(err)
	}
	if err := c.Noop().Wait(); err != nil { // 3: a NOOP counts...
		t.Fatal(err)
	}
	// ...and a command's own poll does not.
	if _, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil { // 4
		t.Fatal(err)
	}
	_, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if imapCode(err) != imap.ResponseCodeLimit {
		t.Fatalf("past the burst: %v, want NO [LIMIT]", err)
	}
	raw := dialRaw(t, ts.addr)
	if _, status := raw.cmd("LOGIN " + testUser + " \"" + testPassword + "\""); !strings.HasPrefix(status, "NO [LIMIT]") {
		t.Fatalf("another connection of the address: %q", status)
	}
	if got := limiter.Limited(); len(got) != 1 || got[0].Scope != protocols.LockCommandRate {
		t.Fatalf("limited %+v", got)
	}
	raw.send("T9 LOGIN x y\r\n")
	if l := raw.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("persistent abuse: %q, want BYE", l)
	}
}

// TestCommandRateLimitInTheFront: the commands the front answers itself
// (ID, refusals of client errors) take tokens too, so a flood of them is
// refused NO [LIMIT] and then closed like one of the library's commands.
func TestCommandRateLimitInTheFront(t *testing.T) {
	limiter := protocols.NewCommandLimiter(protocols.CommandRateConfig{PerSecond: 0.001, Burst: 3, RefuseDelay: -1, Loopback: true, CloseAfter: 3}, nil)
	ts := newTestServer(t, func(c *Config) { c.CommandRate = limiter })
	raw := dialRaw(t, ts.addr)
	for i, cmd := range []string{"ID NIL", `CREATE "&"`, "ID NIL"} {
		if _, status := raw.cmd(cmd); strings.HasPrefix(status, "NO [LIMIT]") {
			t.Fatalf("command %d (%s) within the burst: %q", i+1, cmd, status)
		}
	}
	if _, status := raw.cmd("ID NIL"); !strings.HasPrefix(status, "NO [LIMIT]") {
		t.Fatalf("ID past the burst: %q, want NO [LIMIT]", status)
	}
	if _, status := raw.cmd(`CREATE "&Jjo"`); !strings.HasPrefix(status, "NO [LIMIT]") {
		t.Fatalf("a refused command past the burst: %q, want NO [LIMIT]", status)
	}
	raw.send("T9 ID NIL\r\n")
	if l := raw.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("persistent abuse: %q, want BYE", l)
	}
}
