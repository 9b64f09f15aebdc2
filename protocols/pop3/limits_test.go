package pop3

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

func TestBadInput(t *testing.T) {
	e := newEnv(t, threeMessages, func(cfg *Config) { cfg.MaxBadCommands = 100 })
	c := e.dial(t)
	for _, tc := range []struct{ line, want string }{
		{"", "-ERR syntax error"},
		{" ", "-ERR syntax error"},
		{"\x00\x01\x02", "-ERR syntax error"},
		{"NOOP\x00", "-ERR syntax error"},
		{"\xff\xfe\xfd", "-ERR syntax error"},
		{"GET / HTTP/1.1", "-ERR unknown command"},
		{"USER " + strings.Repeat("a", 300), "-ERR line too long"},
		{"LIST " + strings.Repeat("1", 251), "-ERR line too long"},
		// AUTH lines may be longer than 255 octets, up to 8 KiB.
		{"AUTH PLAIN " + strings.Repeat("A", 4000), "-ERR [AUTH] authentication failed"},
		{"AUTH PLAIN " + strings.Repeat("A", maxAuthLine), "-ERR line too long"},
		{strings.Repeat("Z", 20000), "-ERR line too long"},
	} {
		c.cmdErr(tc.line, tc.want)
	}
	// A line exactly at the 255-octet limit (CRLF included) is accepted.
	c.cmdErr("USER "+strings.Repeat("a", maxCommandLine-len("USER ")-2), "+OK")
	// A bare LF ends a line too.
	c.conn.Write([]byte("CAPA\n"))
	c.expectOK("CAPA with LF")
	if _, err := c.tp.ReadDotLines(); err != nil {
		t.Fatal(err)
	}
	// The session still works.
	c.cmdOK("AUTH PLAIN " + plainIR("", testUser, testPassword))
	c.cmdOK("STAT")
	c.cmdErr("STAT "+strings.Repeat("9", 300), "-ERR line too long")
	c.cmdOK("QUIT")
}

func TestLineFloodCloses(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t)
	// Far more than maxDiscard octets without a line end: the server
	// gives up on the line and closes. The write may fail once the
	// server has closed, which is fine.
	go c.conn.Write([]byte(strings.Repeat("A", 4*maxDiscard)))
	if got := c.readLine(); got != "-ERR line too long, closing connection" {
		t.Fatalf("flood: %q", got)
	}
	c.expectClosed()
}

func TestTooManyBadCommands(t *testing.T) {
	e := newEnv(t, nil, func(cfg *Config) { cfg.MaxBadCommands = 3 })
	c := e.dial(t)
	c.cmdErr("FOO", "-ERR unknown command")
	c.cmdErr("STAT", "-ERR command not valid")
	c.cmdErr("BAR", "-ERR unknown command")
	if got := c.readLine(); got != "-ERR too many bad commands, closing connection" {
		t.Fatalf("third bad command: %q", got)
	}
	c.expectClosed()

	// Pipelined garbage hits the same limit; the rest is not answered.
	c = e.dial(t)
	c.send("A\r\nB\r\nC\r\nD\r\nE")
	for _, want := range []string{"-ERR unknown command", "-ERR unknown command", "-ERR unknown command", "-ERR too many bad commands, closing connection"} {
		if got := c.readLine(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	c.expectClosed()
}

func TestPipelining(t *testing.T) {
	e := newEnv(t, threeMessages)
	c := e.dial(t)
	// Everything in one write; the replies come back in order.
	c.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\nSTAT\r\nLIST 1\r\nRETR 3\r\nDELE 3\r\nSTAT\r\nRSET\r\nQUIT")
	for _, want := range []string{"+OK send PASS", "+OK maildrop locked", "+OK 3 ", "+OK 1 ", "+OK "} {
		if got := c.readLine(); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if body, err := c.tp.ReadDotBytes(); err != nil || !strings.Contains(string(body), "Subject: third") {
		t.Fatalf("RETR 3: %q, %v", body, err)
	}
	for _, want := range []string{"+OK message 3 deleted", "+OK 2 ", "+OK maildrop has 3", "+OK pop.example.org POP3 server signing off (3 messages left)"} {
		if got := c.readLine(); !strings.HasPrefix(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	c.expectClosed()
}

func TestServeAndClose(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- e.srv.Serve(ln) }()
	c2conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, c2conn)
	c2.expectOK("greeting on the second listener")

	if err := e.srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("serve after close: %v", err)
	}
	c.expectClosed()
	c2.expectClosed()
	// Serve after Close returns at once and closes the listener.
	ln3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Serve(ln3); err != nil {
		t.Fatalf("serve on a closed server: %v", err)
	}
	if _, err := ln3.Accept(); err == nil {
		t.Fatal("listener still open")
	}
}

func TestNewServerConfig(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := NewServer(Config{}, nil); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := NewServer(Config{Hostname: "a\r\nb"}, e.store.Store); err == nil {
		t.Error("hostname with CRLF accepted")
	}
	if _, err := NewServer(Config{IdleTimeout: -1}, e.store.Store); err == nil {
		t.Error("negative timeout accepted")
	}
	srv, err := NewServer(Config{}, e.store.Store)
	if err != nil {
		t.Fatal(err)
	}
	if srv.cfg.IdleTimeout != DefaultIdleTimeout || srv.cfg.MaxBadCommands != DefaultMaxBadCommands || srv.guard == nil {
		t.Errorf("defaults not applied: %+v", srv.cfg)
	}
	srv.Close()
}

func TestCommandRateLimit(t *testing.T) {
	limiter := protocols.NewCommandLimiter(protocols.CommandRateConfig{PerSecond: 0.001, Burst: 3, RefuseDelay: -1, Loopback: true, CloseAfter: 3}, nil)
	e := newEnv(t, nil, func(cfg *Config) { cfg.CommandRate = limiter })
	c := e.dial(t)
	for i := 0; i < 3; i++ {
		c.cmdErr("USER "+testUser, "+OK")
	}
	c.cmdErr("USER "+testUser, "-ERR [SYS/TEMP] too many commands, slow down")
	// The bucket is per client address, not per connection.
	c2 := e.dial(t)
	c2.cmdErr("USER "+testUser, "-ERR [SYS/TEMP] too many commands, slow down")
	if got := limiter.Limited(); len(got) != 1 || got[0].Value != "127.0.0.1" {
		t.Fatalf("limited %+v", got)
	}
	c.cmdErr("USER "+testUser, "-ERR [SYS/TEMP] too many commands, closing")
	c.expectClosed()
	// Cleared by an operator, the address may send commands again.
	if !limiter.Clear(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("clear found nothing")
	}
	c2.cmdErr("USER "+testUser, "+OK")
}
