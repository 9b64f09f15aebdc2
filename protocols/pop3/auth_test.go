package pop3

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

func TestAuthorizationState(t *testing.T) {
	e := newEnv(t, threeMessages, func(cfg *Config) { cfg.MaxBadCommands, cfg.MaxAuthFailures = 100, 100 })
	c := e.dial(t)
	for _, tc := range []struct{ line, want string }{
		{"STAT", "-ERR command not valid in the authorization state"},
		{"LIST", "-ERR command not valid in the authorization state"},
		{"UIDL 1", "-ERR command not valid in the authorization state"},
		{"TOP 1 1", "-ERR command not valid in the authorization state"},
		{"RETR 1", "-ERR command not valid in the authorization state"},
		{"DELE 1", "-ERR command not valid in the authorization state"},
		{"RSET", "-ERR command not valid in the authorization state"},
		{"NOOP", "-ERR command not valid in the authorization state"},
		{"APOP " + testUser + " 0123456789abcdef0123456789abcdef", "-ERR unknown command"},
		{"XYZZY", "-ERR unknown command"},
		{"PASS " + testPassword, "-ERR send USER first"},
		{"USER", "-ERR syntax"},
		{"USER a b", "-ERR syntax"},
		{"USER " + strings.Repeat("u", 200), "+OK"},
		{"PASS", "-ERR syntax"},
		{"USER " + testUser, "+OK"},
		{"PASS", "-ERR syntax"}, // the USER is spent
		{"PASS " + testPassword, "-ERR send USER first"},
		{"USER " + testUser, "+OK"},
		{"PASS wrong password", "-ERR [AUTH] authentication failed"},
		{"USER nobody@example.org", "+OK"},
		{"PASS " + testPassword, "-ERR [AUTH] authentication failed"},
		{"USER nobody@unknown.example", "+OK"},
		{"PASS " + testPassword, "-ERR [AUTH] authentication failed"},
		{"STLS x", "-ERR syntax"},
		{"QUIT x", "-ERR syntax"},
		{"AUTH PLAIN a b c", "-ERR syntax"},
		{"AUTH CRAM-MD5", "-ERR unsupported authentication mechanism"},
	} {
		c.cmdErr(tc.line, tc.want)
	}
	// USER/PASS with a password containing spaces works after failures.
	c.cmdOK("USER " + testUser)
	c.cmdOK("PASS " + testPassword)
	c.cmdOK("STAT")
	c.cmdOK("QUIT")
	c.expectClosed()

	// QUIT in the AUTHORIZATION state signs off.
	c = e.dial(t)
	if got := c.cmd("QUIT"); got != "+OK pop.example.org POP3 server signing off" {
		t.Fatalf("QUIT: %q", got)
	}
	c.expectClosed()
}

func TestCapabilities(t *testing.T) {
	base := "TOP UIDL RESP-CODES AUTH-RESP-CODE PIPELINING"
	t.Run("tls configured", func(t *testing.T) {
		e := newEnv(t, nil, withTLS)
		c := e.dial(t)
		if got := strings.Join(c.multiLines("CAPA"), " "); got != base+" STLS" {
			t.Fatalf("CAPA before TLS: %q", got)
		}
		c.cmdOK("STLS")
		c.startTLS(e.clientTLS)
		if got := strings.Join(c.multiLines("CAPA"), " "); got != base+" USER SASL PLAIN" {
			t.Fatalf("CAPA after STLS: %q", got)
		}
	})
	t.Run("insecure auth allowed", func(t *testing.T) {
		e := newEnv(t, nil)
		c := e.dial(t)
		if got := strings.Join(c.multiLines("CAPA"), " "); got != base+" USER SASL PLAIN STLS" {
			t.Fatalf("CAPA: %q", got)
		}
	})
	t.Run("no tls", func(t *testing.T) {
		e := newEnv(t, nil, withoutTLS)
		c := e.dial(t)
		if got := strings.Join(c.multiLines("CAPA"), " "); got != base+" USER SASL PLAIN" {
			t.Fatalf("CAPA: %q", got)
		}
		c.cmdErr("STLS", "-ERR TLS not available")
	})
}

func TestSTLS(t *testing.T) {
	e := newEnv(t, threeMessages, withTLS)
	c := e.dial(t)
	// Plaintext credentials are refused before TLS.
	refused := "-ERR [AUTH] plaintext authentication disallowed without TLS"
	c.cmdErr("USER "+testUser, refused)
	c.cmdErr("PASS "+testPassword, refused)
	c.cmdErr("AUTH PLAIN "+plainIR("", testUser, testPassword), refused)
	c.cmdErr("AUTH PLAIN", refused)
	c.cmdErr("AUTH", refused)

	// A command pipelined behind STLS is dropped, not run inside TLS.
	c.send("STLS\r\nUSER injected")
	c.expectOK("STLS")
	c.startTLS(e.clientTLS)
	c.cmdErr("PASS "+testPassword, "-ERR send USER first")
	c.cmdErr("STLS", "-ERR command not permitted when TLS active")
	c.cmdOK("USER " + testUser)
	c.cmdOK("PASS " + testPassword)
	if got := c.cmd("STAT"); !strings.HasPrefix(got, "+OK 3 ") {
		t.Fatalf("STAT over TLS: %q", got)
	}
	if tc, ok := c.conn.(*tls.Conn); !ok || tc.ConnectionState().Version < tls.VersionTLS12 {
		t.Fatal("not a TLS 1.2+ connection")
	}
	c.cmdOK("QUIT")

	// A failed handshake ends the session cleanly.
	c = e.dial(t)
	c.cmdOK("STLS")
	c.conn.Write([]byte("this is not a TLS client hello\r\n"))
	c.expectClosed()
}

func TestImplicitTLS(t *testing.T) {
	e := newEnv(t, threeMessages, withTLS)
	serverTLS, clientTLS := protocoltest.TLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The node wraps TLS listeners in a connection limiter; the server
	// must still find the *tls.Conn underneath.
	limiter := protocols.NewConnLimiter(10, 10)
	ln = limiter.Listener(tls.NewListener(ln, serverTLS), nil)
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		e.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), clientTLS)
	if err != nil {
		t.Fatalf("dial tls: %v", err)
	}
	c := newClient(t, conn)
	c.expectOK("greeting")
	caps := strings.Join(c.multiLines("CAPA"), " ")
	if strings.Contains(caps, "STLS") || !strings.Contains(caps, "USER") {
		t.Fatalf("CAPA on implicit TLS: %q", caps)
	}
	c.cmdErr("STLS", "-ERR command not permitted when TLS active")
	c.cmdOK("AUTH PLAIN " + plainIR("", testUser, testPassword))
	if got := c.cmd("STAT"); !strings.HasPrefix(got, "+OK 3 ") {
		t.Fatalf("STAT: %q", got)
	}
	c.cmdOK("QUIT")

	// A client that never completes the handshake is dropped by the
	// handshake timeout, not held forever.
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte("USER x\r\n"))
	raw.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 512)
	for {
		n, err := raw.Read(buf)
		if strings.Contains(string(buf[:n]), "+OK") {
			t.Fatal("greeting sent without TLS")
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("plaintext client on the TLS port not dropped")
			}
			break
		}
	}
}

func TestAuthPlain(t *testing.T) {
	e := newEnv(t, threeMessages, func(cfg *Config) { cfg.MaxBadCommands, cfg.MaxAuthFailures = 100, 100 })
	okIR := plainIR("", testUser, testPassword)

	t.Run("initial response", func(t *testing.T) {
		c := e.dial(t)
		c.cmdOK("AUTH PLAIN " + okIR)
		c.cmdOK("STAT")
		c.cmdOK("QUIT")
	})
	t.Run("continuation", func(t *testing.T) {
		c := e.dial(t)
		if got := c.cmd("AUTH plain"); got != "+ " {
			t.Fatalf("continuation: %q", got)
		}
		c.cmdOK(okIR)
		c.cmdOK("STAT")
		c.cmdOK("QUIT")
	})
	t.Run("authorization identity equal to user", func(t *testing.T) {
		c := e.dial(t)
		c.cmdOK("AUTH PLAIN " + plainIR(testUser, testUser, testPassword))
		c.cmdOK("QUIT")
	})
	t.Run("list mechanisms", func(t *testing.T) {
		c := e.dial(t)
		if got := c.multiLines("AUTH"); strings.Join(got, " ") != "PLAIN" {
			t.Fatalf("AUTH: %q", got)
		}
	})
	t.Run("failures", func(t *testing.T) {
		c := e.dial(t)
		for _, tc := range []struct {
			lines []string
			want  string
		}{
			{[]string{"AUTH PLAIN " + plainIR("", testUser, "wrong password")}, "-ERR [AUTH] authentication failed"},
			{[]string{"AUTH PLAIN " + plainIR("", "nobody@example.org", testPassword)}, "-ERR [AUTH] authentication failed"},
			{[]string{"AUTH PLAIN " + plainIR("bob@example.org", testUser, testPassword)}, "-ERR [AUTH] authentication failed"},
			{[]string{"AUTH PLAIN ="}, "-ERR [AUTH] authentication failed"},
			{[]string{"AUTH PLAIN !!!notbase64"}, "-ERR invalid base64"},
			{[]string{"AUTH PLAIN", "*"}, "-ERR authentication cancelled"},
			{[]string{"AUTH PLAIN", "%%%"}, "-ERR invalid base64"},
			{[]string{"AUTH PLAIN", ""}, "-ERR [AUTH] authentication failed"},
			{[]string{"AUTH PLAIN", "dXNlcgBwYXNz"}, "-ERR [AUTH] authentication failed"}, // two fields only
			{[]string{"AUTH PLAIN", strings.Repeat("A", maxAuthLine+10)}, "-ERR response too long"},
		} {
			for i, l := range tc.lines {
				c.send(l)
				if i < len(tc.lines)-1 {
					if got := c.readLine(); got != "+ " {
						t.Fatalf("%q: continuation %q", tc.lines, got)
					}
				}
			}
			if got := c.readLine(); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("%.40q: got %q, want %q", tc.lines, got, tc.want)
			}
		}
		// Still in the AUTHORIZATION state, and a good login works.
		c.cmdOK("AUTH PLAIN " + okIR)
		c.cmdOK("QUIT")
	})
}

// TestBruteForceLockout checks that a locked-out attempt, even with the
// right password, gets exactly the answer of a wrong password, through
// USER/PASS and AUTH PLAIN, on this and on a new connection.
func TestBruteForceLockout(t *testing.T) {
	guard := protocols.NewAuthGuard(protocols.AuthGuardConfig{
		MaxFailuresPerIP: 3, MaxFailuresPerUser: 100, Window: time.Minute, Lockout: time.Hour,
	}, nil)
	e := newEnv(t, threeMessages, func(cfg *Config) { cfg.Guard, cfg.MaxAuthFailures = guard, 100 })
	c := e.dial(t)
	var wrongPass, wrongAuth string
	for i := 0; i < 2; i++ {
		c.cmdOK("USER " + testUser)
		wrongPass = c.cmd("PASS wrong" + strings.Repeat("x", i))
	}
	wrongAuth = c.cmd("AUTH PLAIN " + plainIR("", testUser, "wrong again"))
	if wrongPass != "-ERR [AUTH] authentication failed" || wrongAuth != wrongPass {
		t.Fatalf("wrong password answers %q, %q", wrongPass, wrongAuth)
	}
	// Locked out now.
	for _, c := range []*client{c, e.dial(t)} {
		c.cmdOK("USER " + testUser)
		if got := c.cmd("PASS " + testPassword); got != wrongPass {
			t.Errorf("locked PASS answered %q, a wrong password %q", got, wrongPass)
		}
		if got := c.cmd("AUTH PLAIN " + plainIR("", testUser, testPassword)); got != wrongAuth {
			t.Errorf("locked AUTH answered %q, a wrong password %q", got, wrongAuth)
		}
	}
}

func TestMaildropInUse(t *testing.T) {
	e := newEnv(t, threeMessages)
	first := e.login(t)
	second := e.dial(t)
	second.cmdOK("USER " + testUser)
	second.cmdErr("PASS "+testPassword, "-ERR [IN-USE]")
	second.cmdErr("AUTH PLAIN "+plainIR("", testUser, testPassword), "-ERR [IN-USE]")
	// The user name is matched case-insensitively.
	second.cmdOK("USER " + strings.ToUpper(testUser))
	second.cmdErr("PASS "+testPassword, "-ERR [IN-USE]")
	// Still in the AUTHORIZATION state.
	second.cmdErr("STAT", "-ERR command not valid in the authorization state")

	first.cmdOK("QUIT")
	first.expectClosed()
	second.cmdOK("AUTH PLAIN " + plainIR("", testUser, testPassword))
	second.cmdOK("STAT")

	second.cmdOK("QUIT")

	// The lock is released before the +OK to QUIT, so a client that
	// reconnects at once is never told its maildrop is in use.
	acct := e.store.Login(t, testUser, testPassword)
	for i := 0; i < 5; i++ {
		c := e.login(t)
		c.cmdOK("QUIT")
		release, err := acct.LockMaildrop(context.Background())
		if err != nil {
			t.Fatalf("maildrop still locked when QUIT was answered: %v", err)
		}
		release()
	}
	second = e.login(t)

	// A dropped connection releases the lock too.
	second.conn.Close()
	third := e.dial(t)
	eventually(t, "lock release after a dropped connection", func() bool {
		third.send("AUTH PLAIN " + plainIR("", testUser, testPassword))
		reply := third.readLine()
		if strings.HasPrefix(reply, "-ERR [IN-USE]") {
			return false
		}
		if !strings.HasPrefix(reply, "+OK") {
			t.Fatalf("login: %q", reply)
		}
		return true
	})
}

func TestAuthFailuresPerConnection(t *testing.T) {
	e := newEnv(t, threeMessages, func(cfg *Config) { cfg.MaxAuthFailures = 2 })
	c := e.dial(t)
	// Malformed exchanges check no password and do not count.
	c.cmdErr("AUTH PLAIN =", "-ERR [AUTH] authentication failed")
	c.cmdErr("AUTH PLAIN "+plainIR("other@example.org", testUser, testPassword), "-ERR [AUTH] authentication failed")
	c.cmdOK("USER " + testUser)
	if got := c.cmd("PASS wrong one"); got != "-ERR [AUTH] authentication failed" {
		t.Fatalf("first failure: %q", got)
	}
	if got := c.cmd("AUTH PLAIN " + plainIR("", testUser, "wrong two")); got != "-ERR [AUTH] authentication failed, closing connection" {
		t.Fatalf("last failure: %q", got)
	}
	c.expectClosed()
	// The guard's limits were not reached: a new connection logs in.
	e.login(t).cmdOK("QUIT")
}
