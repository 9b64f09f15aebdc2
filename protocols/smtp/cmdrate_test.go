package smtp

import (
	"io"
	"testing"

	"github.com/mailcluster/mailcluster/protocols"
)

// TestCommandRateLimit: EHLO, MAIL and RCPT take tokens of the client
// address's bucket; past it the client gets 421 4.7.0 and the connection
// closes, and a new connection of the address is refused too until the
// bucket refills or an operator clears it.
func TestCommandRateLimit(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	limiter := protocols.NewCommandLimiter(protocols.CommandRateConfig{PerSecond: 0.001, Burst: 3, RefuseDelay: -1, Loopback: true}, nil)
	cfg.CommandRate = limiter
	addr, _ := f.start(cfg, false)
	c := dialRaw(t, addr, nil)
	c.mustCmd(250, "EHLO client.example.net")   // 1
	c.mustCmd(250, "MAIL FROM:<a@example.net>") // 2
	c.mustCmd(250, "RSET")                      // answered by go-smtp alone
	c.mustCmd(250, "MAIL FROM:<a@example.net>") // 3
	if code, msg := c.cmd("RCPT TO:<nobody@example.net>"); code != 421 || msg != "4.7.0 Too many commands, closing connection" {
		t.Fatalf("past the burst: %d %q", code, msg)
	}
	if _, err := c.text.ReadLine(); err != io.EOF {
		t.Fatalf("after 421: %v, want the connection closed", err)
	}
	if got := limiter.Limited(); len(got) != 1 || got[0].Value != "127.0.0.1" {
		t.Fatalf("limited %+v", got)
	}
	c2 := dialRaw(t, addr, nil)
	if code, _ := c2.cmd("EHLO client.example.net"); code != 421 {
		t.Fatalf("another connection of the address: %d", code)
	}
}
