package protocols_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// lineServer is a toy line protocol behind a TimeoutListener, shaped like
// the real frontends: a greeting, a fresh read deadline (libDeadline)
// before every command, STARTTLS and LOGIN. Every command is answered
// "ok", STARTTLS "go" (or "no" without TLS).
type lineServer struct {
	addr        string
	clientTLS   *tls.Config
	timeouts    chan protocols.TimeoutKind
	libDeadline time.Duration
}

type lineServerConfig struct {
	listener    protocols.TimeoutListenerConfig
	noTLS       bool          // refuse STARTTLS
	libDeadline time.Duration // the server's own idle timeout; 0: 1 minute
}

func startLineServer(t *testing.T, cfg lineServerConfig) *lineServer {
	t.Helper()
	serverTLS, clientTLS := protocoltest.TLS(t)
	tracked := protocols.TrackHandshakes(serverTLS)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{addr: raw.Addr().String(), clientTLS: clientTLS, timeouts: make(chan protocols.TimeoutKind, 16), libDeadline: cfg.libDeadline}
	if s.libDeadline == 0 {
		s.libDeadline = time.Minute
	}
	lc := cfg.listener
	lc.OnTimeout = func(kind protocols.TimeoutKind, remote net.Addr, open time.Duration) {
		if remote == nil || open <= 0 {
			t.Errorf("OnTimeout(%s, %v, %s)", kind, remote, open)
		}
		s.timeouts <- kind
	}
	ln := protocols.NewTimeoutListener(raw, lc)
	if lc.ImplicitTLS {
		ln = tls.NewListener(ln, tracked)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go s.serve(c, tracked, cfg.noTLS)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return s
}

func (s *lineServer) serve(c net.Conn, tlsCfg *tls.Config, noTLS bool) {
	defer c.Close()
	tc := protocols.TimeoutConnOf(c)
	conn := c
	r := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "hello\r\n"); err != nil {
		return
	}
	for {
		if err := conn.SetReadDeadline(time.Now().Add(s.libDeadline)); err != nil {
			return
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		reply := "ok\r\n"
		switch strings.TrimSpace(line) {
		case "LOGIN":
			tc.SetLoggedIn(true)
		case "LOGOUT":
			tc.SetLoggedIn(false)
		case "STARTTLS":
			if noTLS {
				reply = "no\r\n"
				break
			}
			if _, err := io.WriteString(conn, "go\r\n"); err != nil {
				return
			}
			conn = tls.Server(conn, tlsCfg)
			r = bufio.NewReader(conn)
			continue
		}
		if _, err := io.WriteString(conn, reply); err != nil {
			return
		}
	}
}

// expectTimeout waits for the server to report one timeout, of kind.
func (s *lineServer) expectTimeout(t *testing.T, kind protocols.TimeoutKind) {
	t.Helper()
	select {
	case got := <-s.timeouts:
		if got != kind {
			t.Fatalf("timeout %q, want %q", got, kind)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s timeout reported", kind)
	}
}

// expectNoTimeout checks that no timeout was reported.
func (s *lineServer) expectNoTimeout(t *testing.T) {
	t.Helper()
	select {
	case got := <-s.timeouts:
		t.Fatalf("unexpected %s timeout", got)
	default:
	}
}

func (s *lineServer) dial(t *testing.T) *protocoltest.LineClient {
	t.Helper()
	return protocoltest.DialLine(t, s.addr, nil)
}

func (s *lineServer) dialTLS(t *testing.T) *protocoltest.LineClient {
	t.Helper()
	return protocoltest.DialLine(t, s.addr, s.clientTLS)
}

// cmd sends a command and checks the reply.
func cmd(c *protocoltest.LineClient, line, want string) {
	c.Send("%s", line)
	c.Expect(want)
}

// startTLS upgrades the connection with STARTTLS.
func startTLS(c *protocoltest.LineClient, cfg *tls.Config) {
	cmd(c, "STARTTLS", "go")
	c.StartTLS(cfg)
}

const (
	short = 150 * time.Millisecond
	long  = 10 * time.Second
)

func TestTimeoutIdleBeforeLogin(t *testing.T) {
	s := startLineServer(t, lineServerConfig{listener: protocols.TimeoutListenerConfig{
		Timeouts: protocols.ConnTimeouts{Handshake: long, PreLoginIdle: short, Login: long}}})
	c := s.dial(t)
	c.Expect("hello")
	c.ExpectClosed(long)
	s.expectTimeout(t, protocols.TimeoutIdle)
}

func TestTimeoutLoginEndsPreLoginBounds(t *testing.T) {
	s := startLineServer(t, lineServerConfig{listener: protocols.TimeoutListenerConfig{
		Timeouts: protocols.ConnTimeouts{Handshake: short, PreLoginIdle: short, Login: 2 * short}}})
	c := s.dial(t)
	c.Expect("hello")
	cmd(c, "NOOP", "ok")
	cmd(c, "LOGIN", "ok")
	c.ExpectOpen(4 * short)
	cmd(c, "NOOP", "ok")
	s.expectNoTimeout(t)

	// Logging out starts the bounds again.
	cmd(c, "LOGOUT", "ok")
	c.ExpectClosed(long)
	s.expectTimeout(t, protocols.TimeoutIdle)
}

func TestTimeoutLoginBoundsABusyClient(t *testing.T) {
	s := startLineServer(t, lineServerConfig{listener: protocols.TimeoutListenerConfig{
		Timeouts: protocols.ConnTimeouts{Handshake: long, PreLoginIdle: long, Login: 3 * short}}})
	c := s.dial(t)
	c.Expect("hello")
	deadline := time.Now().Add(long)
	for {
		if time.Now().After(deadline) {
			t.Fatal("a client that never logs in kept its connection")
		}
		conn := c.Conn()
		if _, err := io.WriteString(conn, "NOOP\r\n"); err != nil {
			break
		}
		conn.SetReadDeadline(time.Now().Add(long))
		if _, err := conn.Read(make([]byte, 64)); err != nil {
			break
		}
	}
	s.expectTimeout(t, protocols.TimeoutLogin)
}

func TestTimeoutServerDeadlineIsNotCounted(t *testing.T) {
	s := startLineServer(t, lineServerConfig{
		listener:    protocols.TimeoutListenerConfig{Timeouts: protocols.ConnTimeouts{Handshake: long, PreLoginIdle: long, Login: long}},
		libDeadline: short,
	})
	c := s.dial(t)
	c.Expect("hello")
	c.ExpectClosed(long)
	s.expectNoTimeout(t)
}

func TestTimeoutImplicitTLS(t *testing.T) {
	cfg := lineServerConfig{listener: protocols.TimeoutListenerConfig{ImplicitTLS: true, StartTLS: "STARTTLS",
		Timeouts: protocols.ConnTimeouts{Handshake: short, PreLoginIdle: 4 * short, Login: long}}}
	s := startLineServer(t, cfg)

	t.Run("silent", func(t *testing.T) {
		c := s.dial(t)
		c.ExpectClosed(long)
		s.expectTimeout(t, protocols.TimeoutHandshake)
	})
	t.Run("partial hello", func(t *testing.T) {
		c := s.dial(t)
		// The start of a ClientHello record, and nothing more.
		c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
		c.ExpectClosed(long)
		s.expectTimeout(t, protocols.TimeoutHandshake)
	})
	t.Run("silent after handshake", func(t *testing.T) {
		c := s.dialTLS(t)
		c.Expect("hello")
		// Past the handshake bound, within the idle bound.
		c.ExpectOpen(2 * short)
		cmd(c, "NOOP", "ok")
		c.ExpectClosed(long)
		s.expectTimeout(t, protocols.TimeoutIdle)
	})
	t.Run("login", func(t *testing.T) {
		c := s.dialTLS(t)
		c.Expect("hello")
		cmd(c, "LOGIN", "ok")
		c.ExpectOpen(6 * short)
		cmd(c, "NOOP", "ok")
		s.expectNoTimeout(t)
	})
}

func TestTimeoutStartTLS(t *testing.T) {
	cfg := lineServerConfig{listener: protocols.TimeoutListenerConfig{StartTLS: "STARTTLS",
		Timeouts: protocols.ConnTimeouts{Handshake: short, PreLoginIdle: 4 * short, Login: long}}}
	s := startLineServer(t, cfg)

	t.Run("no hello", func(t *testing.T) {
		c := s.dial(t)
		c.Expect("hello")
		cmd(c, "STARTTLS", "go")
		c.ExpectClosed(long)
		s.expectTimeout(t, protocols.TimeoutHandshake)
	})
	t.Run("silent after handshake", func(t *testing.T) {
		c := s.dial(t)
		c.Expect("hello")
		startTLS(c, s.clientTLS)
		c.ExpectOpen(2 * short)
		cmd(c, "NOOP", "ok")
		c.ExpectClosed(long)
		s.expectTimeout(t, protocols.TimeoutIdle)
	})
	t.Run("login", func(t *testing.T) {
		c := s.dial(t)
		c.Expect("hello")
		startTLS(c, s.clientTLS)
		cmd(c, "LOGIN", "ok")
		c.ExpectOpen(6 * short)
		cmd(c, "NOOP", "ok")
		s.expectNoTimeout(t)
	})
}

func TestTimeoutStartTLSRefused(t *testing.T) {
	s := startLineServer(t, lineServerConfig{noTLS: true, listener: protocols.TimeoutListenerConfig{StartTLS: "STARTTLS",
		Timeouts: protocols.ConnTimeouts{Handshake: short, PreLoginIdle: 4 * short, Login: long}}})
	c := s.dial(t)
	c.Expect("hello")
	cmd(c, "STARTTLS", "no")
	// The client goes on in plaintext: the handshake bound no longer
	// applies, the idle bound does.
	cmd(c, "NOOP", "ok")
	c.ExpectOpen(2 * short)
	cmd(c, "NOOP", "ok")
	c.ExpectClosed(long)
	s.expectTimeout(t, protocols.TimeoutIdle)
}

func TestTimeoutLoginOnFirstLine(t *testing.T) {
	s := startLineServer(t, lineServerConfig{listener: protocols.TimeoutListenerConfig{StartTLS: "STARTTLS", LoginOnFirstLine: true,
		Timeouts: protocols.ConnTimeouts{Handshake: short, PreLoginIdle: short, Login: long}}})

	t.Run("silent", func(t *testing.T) {
		c := s.dial(t)
		c.Expect("hello")
		c.ExpectClosed(long)
		s.expectTimeout(t, protocols.TimeoutIdle)
	})
	t.Run("after a command", func(t *testing.T) {
		c := s.dial(t)
		c.Expect("hello")
		cmd(c, "EHLO client.example", "ok")
		c.ExpectOpen(4 * short)
		// STARTTLS still has its bound after the first command.
		cmd(c, "STARTTLS", "go")
		c.ExpectClosed(long)
		s.expectTimeout(t, protocols.TimeoutHandshake)
	})
}

func TestTimeoutWatchLogin(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := protocols.NewTimeoutListener(raw, protocols.TimeoutListenerConfig{
		Timeouts: protocols.ConnTimeouts{PreLoginIdle: short}})
	defer ln.Close()
	client, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	loggedIn := false
	protocols.TimeoutConnOf(conn).WatchLogin(func() bool { return loggedIn })

	var nilConn *protocols.TimeoutConn
	nilConn.SetLoggedIn(true) // no-op, no panic
	if protocols.TimeoutConnOf(client) != nil {
		t.Fatal("TimeoutConnOf found a TimeoutConn under a plain connection")
	}

	buf := make([]byte, 1)
	if _, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent client before login: %v, want a timeout", err)
	}
	// Once cut off, a connection stays cut off.
	loggedIn = true
	if _, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the timeout: %v", err)
	}
}

func TestTimeoutWatchLoginLiftsBounds(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := protocols.NewTimeoutListener(raw, protocols.TimeoutListenerConfig{
		Timeouts: protocols.ConnTimeouts{PreLoginIdle: short}})
	defer ln.Close()
	client, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	protocols.TimeoutConnOf(conn).WatchLogin(func() bool { return true })
	// The server's own deadline, past the idle bound, is the one that
	// applies.
	conn.SetReadDeadline(time.Now().Add(3 * short))
	start := time.Now()
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want the server's own deadline", err)
	}
	if waited := time.Since(start); waited < 3*short-20*time.Millisecond {
		t.Fatalf("read gave up after %s, before the server's deadline", waited)
	}
}

func TestIsStartTLSCommand(t *testing.T) {
	// Which lines, read on their own, start the handshake bound.
	tests := []struct {
		startTLS string
		tagged   bool
		line     string
		want     bool
	}{
		{"STARTTLS", false, "STARTTLS\r\n", true},
		{"STARTTLS", false, "starttls\n", true},
		{"STARTTLS", false, "STARTTLS x\r\n", false},
		{"STARTTLS", false, "STARTTLS\r\nEHLO x\r\n", false},
		{"STARTTLS", true, "a1 STARTTLS\r\n", true},
		{"STARTTLS", true, "STARTTLS\r\n", false},
		{"STLS", false, "STLS\r\n", true},
		{"STLS", false, "STARTTLS\r\n", false},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSpace(tt.line), func(t *testing.T) {
			s := startLineServer(t, lineServerConfig{listener: protocols.TimeoutListenerConfig{StartTLS: tt.startTLS, Tagged: tt.tagged,
				Timeouts: protocols.ConnTimeouts{Handshake: time.Nanosecond, PreLoginIdle: long, Login: long}}})
			c := s.dial(t)
			c.Expect("hello")
			c.Write([]byte(tt.line))
			// With a handshake bound of 1ns, a STARTTLS line cuts the
			// connection off at once; anything else is answered.
			c.Conn().SetReadDeadline(time.Now().Add(long))
			_, err := c.Conn().Read(make([]byte, 64))
			closed := err != nil
			if closed != tt.want {
				t.Fatalf("closed = %v (%v), want %v", closed, err, tt.want)
			}
		})
	}
}

// pipeListener accepts one end of a net.Pipe, once.
type pipeListener struct{ c chan net.Conn }

func (l pipeListener) Accept() (net.Conn, error) {
	c, ok := <-l.c
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l pipeListener) Close() error   { return nil }
func (l pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// FuzzTimeoutConnReads feeds arbitrary client bytes, in arbitrary pieces
// (split at 0xff), through a TimeoutConn that follows the plaintext for
// STARTTLS and first lines: it must pass every byte on unchanged.
func FuzzTimeoutConnReads(f *testing.F) {
	f.Add([]byte("EHLO x\r\n\xffSTARTTLS\r\n\xff\x16\x03\x01"), false)
	f.Add([]byte("a1 STARTTLS\r\n\xffa2 NOOP\r\n"), true)
	f.Add([]byte("\xff\xff\n\xff"), false)
	f.Fuzz(func(t *testing.T, data []byte, tagged bool) {
		server, client := net.Pipe()
		conns := make(chan net.Conn, 1)
		conns <- server
		close(conns)
		ln := protocols.NewTimeoutListener(pipeListener{conns}, protocols.TimeoutListenerConfig{
			StartTLS: "STARTTLS", Tagged: tagged, LoginOnFirstLine: !tagged,
			Timeouts: protocols.ConnTimeouts{Handshake: time.Minute, PreLoginIdle: time.Minute, Login: time.Minute},
		})
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go func() {
			defer client.Close()
			for _, piece := range strings.Split(string(data), "\xff") {
				if _, err := client.Write([]byte(piece)); err != nil {
					return
				}
			}
		}()
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if want := strings.ReplaceAll(string(data), "\xff", ""); string(got) != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	})
}
