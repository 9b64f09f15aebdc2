package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// expectTagged reads lines until the one tagged tag and returns it; it
// fails on a continuation request, which a refused literal must not get.
func (rc *rawConn) expectTagged(tag string) string {
	rc.t.Helper()
	for {
		l := rc.line()
		if strings.HasPrefix(l, "+") {
			rc.t.Fatalf("continuation request %q before %s's answer", l, tag)
		}
		if strings.HasPrefix(l, tag+" ") {
			return strings.TrimPrefix(l, tag+" ")
		}
	}
}

// stillInSync checks that the session answers the next command.
func (rc *rawConn) stillInSync() {
	rc.t.Helper()
	rc.send("x2 NOOP\r\n")
	if st := rc.expectTagged("x2"); !strings.HasPrefix(st, "OK") {
		rc.t.Fatalf("NOOP after the refusal: %q", st)
	}
}

// TestLiteralLimits: a synchronizing literal over the limit outside
// APPEND is refused at once, without "+", before and after login, and the
// session stays in step (issue 13, item 1); a non-synchronizing one is
// read and dropped, or ends the connection when too large to skip.
func TestLiteralLimits(t *testing.T) {
	ts := newTestServer(t)

	t.Run("before login", func(t *testing.T) {
		for _, cmd := range []string{"a1 LOGIN {4097}", "x1 LOGIN {4294967295}", "x1 LOGIN {99999999999999999999}", "a1 SEARCH SUBJECT {8192}"} {
			rc := dialRaw(t, ts.addr)
			tag := strings.Fields(cmd)[0]
			rc.send(cmd + "\r\n")
			if st := rc.expectTagged(tag); !strings.HasPrefix(st, "NO [TOOBIG]") && !strings.HasPrefix(st, "BAD") {
				t.Errorf("%s: %q", cmd, st)
			}
			rc.stillInSync()
			rc.mustOK("LOGIN " + testUser + " " + testPassword)
		}
		if strings.Contains(ts.logs.String(), "login failed") {
			t.Errorf("a refused literal counted as a failed login:\n%s", ts.logs.String())
		}
	})
	t.Run("after login", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.mustOK("LOGIN " + testUser + " " + testPassword)
		rc.mustOK("SELECT INBOX")
		rc.send("a1 SEARCH SUBJECT {8192}\r\n")
		if st := rc.expectTagged("a1"); !strings.HasPrefix(st, "NO [TOOBIG]") {
			t.Errorf("SEARCH with an 8 KiB literal: %q", st)
		}
		rc.stillInSync()
		// Non-synchronizing: the literal and the rest of the command are
		// skipped.
		rc.send("a2 SEARCH SUBJECT {5000+}\r\n" + strings.Repeat("x", 5000) + " BODY {3+}\r\nabc\r\n")
		if st := rc.expectTagged("a2"); !strings.HasPrefix(st, "NO [TOOBIG]") {
			t.Errorf("SEARCH with a 5000-byte LITERAL+: %q", st)
		}
		rc.stillInSync()
		// Literals within the limit work, synchronizing or not.
		rc.send("a3 SEARCH SUBJECT {5}\r\n")
		if l := rc.line(); !strings.HasPrefix(l, "+ ") {
			t.Fatalf("literal within the limit: %q", l)
		}
		rc.send("hello BODY {3+}\r\na\"b\r\n")
		if st := rc.expectTagged("a3"); !strings.HasPrefix(st, "OK") {
			t.Errorf("SEARCH with literals: %q", st)
		}
		// Too large to skip: the connection ends with BYE.
		rc.send("a4 SEARCH SUBJECT {4294967295+}\r\n")
		if st := rc.expectTagged("a4"); !strings.HasPrefix(st, "NO [TOOBIG]") {
			t.Errorf("LITERAL+ of 4 GiB: %q", st)
		}
		if l := rc.line(); !strings.HasPrefix(l, "* BYE") {
			t.Errorf("after a LITERAL+ of 4 GiB: %q", l)
		}
	})
	t.Run("literals in LOGIN", func(t *testing.T) {
		rc := dialRaw(t, ts.addr)
		rc.send("l1 LOGIN {" + itoaTest(len(testUser)) + "}\r\n")
		if l := rc.line(); !strings.HasPrefix(l, "+ ") {
			t.Fatalf("LOGIN literal: %q", l)
		}
		rc.send(testUser + " {" + itoaTest(len(testPassword)) + "+}\r\n" + testPassword + "\r\n")
		if st := rc.expectTagged("l1"); !strings.HasPrefix(st, "OK") {
			t.Fatalf("LOGIN with literals: %q", st)
		}
	})
}

// TestAppendLiterals: APPEND's message is accepted up to APPENDLIMIT;
// over it, a synchronizing literal is refused without "+", a
// non-synchronizing one skipped or the connection ended; garbage after
// the message is BAD and stores nothing.
func TestAppendLiterals(t *testing.T) {
	ts := newTestServer(t, withMaxMessageSize(32<<10))
	limit := ts.srv.appendLimit()
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)

	msg := "From: a@example.net\r\nSubject: streamed\r\n\r\n" + strings.Repeat("body line\r\n", 3000)
	rc.send("a1 APPEND INBOX (\\Seen) {" + itoaTest(len(msg)) + "}\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("APPEND: %q", l)
	}
	rc.send(msg + "\r\n")
	if st := rc.expectTagged("a1"); !strings.HasPrefix(st, "OK [APPENDUID") {
		t.Fatalf("APPEND: %q", st)
	}
	rc.send("a2 APPEND INBOX {" + itoaTest(int(limit)+1) + "}\r\n")
	if st := rc.expectTagged("a2"); !strings.HasPrefix(st, "NO [TOOBIG]") {
		t.Errorf("APPEND over the limit: %q", st)
	}
	rc.stillInSync()
	// Non-synchronizing and small enough to skip (up to 64 KiB).
	rc.send("a3 APPEND INBOX {" + itoaTest(int(limit)+1) + "+}\r\n" + strings.Repeat("y", int(limit)+1) + "\r\n")
	if st := rc.expectTagged("a3"); !strings.HasPrefix(st, "NO [TOOBIG]") {
		t.Errorf("APPEND LITERAL+ over the limit: %q", st)
	}
	rc.stillInSync()
	// Garbage after the message: BAD, nothing stored, the session goes
	// on (the front reads the whole command before storing).
	rc.send("a4 APPEND INBOX {5+}\r\nhello garbage\r\n")
	if st := rc.expectTagged("a4"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("garbage after APPEND's message: %q", st)
	}
	rc.stillInSync()
	c := ts.login(t, nil)
	if data := selectMailbox(t, c, "INBOX", true); data.NumMessages != 1 {
		t.Errorf("INBOX has %d messages, want 1", data.NumMessages)
	}
}

// TestClientErrorsAnsweredAsSuch: malformed mailbox names (also as
// literals) and searches nested too deep get BAD or NO [CANNOT], the
// session goes on, and the log calls it a client error (issue 13, item 2).
func TestClientErrorsAnsweredAsSuch(t *testing.T) {
	ts := newTestServer(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	cmds := []string{
		`CREATE "&"`, `CREATE "&Jjo"`, `CREATE "&AGEAYgBj-"`, `CREATE "a&AAE-b"`,
		"CREATE \"bad\x01name\"", "CREATE \"\xff\xfe\"", "RENAME INBOX \"&Jjo\"",
		"SELECT \"\x7f\"", `STATUS "&" (MESSAGES)`,
		"SEARCH " + strings.Repeat("(", 10000) + "ALL" + strings.Repeat(")", 10000),
		"SEARCH " + strings.Repeat("OR ", 10000) + strings.Repeat("ALL ", 10000) + "ALL",
		"SEARCH " + strings.Repeat("OR ALL ", 1000) + "ALL",
	}
	for _, cmd := range cmds {
		_, st := rc.cmd(cmd)
		if !strings.HasPrefix(st, "BAD") && !strings.HasPrefix(st, "NO [CANNOT]") {
			t.Errorf("%.40q: %q", cmd, st)
		}
	}
	// The same names as literals, synchronizing and not.
	for _, name := range []string{"&Jjo", "bad\x01name", "\xff"} {
		rc.send("s1 CREATE {" + itoaTest(len(name)) + "}\r\n")
		if l := rc.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("CREATE literal: %q", l)
		}
		rc.send(name + "\r\n")
		if st := rc.expectTagged("s1"); !strings.HasPrefix(st, "BAD") && !strings.HasPrefix(st, "NO [CANNOT]") {
			t.Errorf("CREATE literal %q: %q", name, st)
		}
		rc.send("s2 CREATE {" + itoaTest(len(name)) + "+}\r\n" + name + "\r\n")
		if st := rc.expectTagged("s2"); !strings.HasPrefix(st, "BAD") && !strings.HasPrefix(st, "NO [CANNOT]") {
			t.Errorf("CREATE literal+ %q: %q", name, st)
		}
	}
	// An over-long line (up to 1 MiB) is answered and skipped.
	if _, st := rc.cmd("NOOP " + strings.Repeat("x", 200<<10)); !strings.HasPrefix(st, "BAD") {
		t.Errorf("200 KiB command line: %q", st)
	}
	rc.stillInSync()
	// Valid names with modified UTF-7 still work.
	rc.mustOK(`CREATE "&ZeVnLIqe-"`)
	rc.mustOK(`SEARCH OR OR FROM a FROM b NOT (SUBJECT c)`)
	logs := ts.logs.String()
	if strings.Contains(logs, "SERVERBUG") || strings.Contains(logs, "imap library") {
		t.Errorf("client errors logged as server errors:\n%s", logs)
	}
	if !strings.Contains(logs, "client error") {
		t.Errorf("no client error in the log:\n%s", logs)
	}
}

// TestID: the front answers ID in any state and advertises it.
func TestID(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial(t, nil)
	if !c.Caps().Has(imap.CapID) {
		t.Errorf("ID not advertised: %v", c.Caps())
	}
	data, err := c.ID(&imap.IDData{Name: "test-client", Version: "1.0"}).Wait()
	if err != nil {
		t.Fatalf("ID: %v", err)
	}
	if data.Name != "mailcluster" {
		t.Errorf("ID name %q", data.Name)
	}
	if !strings.Contains(ts.logs.String(), "client_name=test-client") {
		t.Errorf("client name not logged at debug level")
	}
	if err := c.Login(testUser, testPassword).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ID(nil).Wait(); err != nil {
		t.Errorf("ID NIL after login: %v", err)
	}
	rc := dialRaw(t, ts.addr)
	for _, bad := range []string{`ID ("name")`, `ID ("` + strings.Repeat("f", 31) + `" "v")`, `ID (("a" "b"))`, "ID"} {
		if _, st := rc.cmd(bad); !strings.HasPrefix(st, "BAD") {
			t.Errorf("%s: %q", bad, st)
		}
	}
	rc.stillInSync()
}

// TestPipelinedCommands: commands sent in one write, LITERAL+ included,
// are answered in order.
func TestPipelinedCommands(t *testing.T) {
	ts := newTestServer(t)
	deliverN(t, ts, 2)
	rc := dialRaw(t, ts.addr)
	rc.send("p1 LOGIN " + testUser + " " + testPassword + "\r\np2 SELECT {5+}\r\nINBOX\r\np3 ID NIL\r\np4 FETCH 1:* (FLAGS BODY.PEEK[])\r\np5 NOOP\r\n")
	for _, tag := range []string{"p1", "p2", "p3", "p4", "p5"} {
		if st := rc.expectTagged(tag); !strings.HasPrefix(st, "OK") {
			t.Fatalf("%s: %q", tag, st)
		}
	}
}

// TestStartTLSPlaintextDropped: what a client pipelines after STARTTLS
// is dropped, never answered over TLS.
func TestStartTLSPlaintextDropped(t *testing.T) {
	ts := newTestServer(t, withSecureAuth())
	rc := dialRaw(t, ts.addr)
	if _, st := rc.cmd("STARTTLS now"); !strings.HasPrefix(st, "BAD") {
		t.Errorf("STARTTLS with an argument: %q", st)
	}
	rc.send("s1 STARTTLS\r\ns2 CAPABILITY\r\n")
	if st := rc.expectTagged("s1"); !strings.HasPrefix(st, "OK") {
		t.Fatalf("STARTTLS: %q", st)
	}
	rc.handshake(ts.clientTLS)
	untagged, st := rc.cmd("CAPABILITY")
	if !strings.HasPrefix(st, "OK") || len(untagged) != 1 {
		t.Fatalf("CAPABILITY over TLS: %q %q (an injected command was answered?)", untagged, st)
	}
	if caps := untagged[0]; strings.Contains(caps, "STARTTLS") || strings.Contains(caps, "LOGINDISABLED") || !strings.Contains(caps, "AUTH=PLAIN") {
		t.Errorf("capabilities over TLS: %q", caps)
	}
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	// The session sees the client's TLS through the front.
	if !strings.Contains(ts.logs.String(), "msg=login component=imap host=imap.test conn=1 remote=127.0.0.1 tls=\"TLS 1.") {
		t.Errorf("login record without the TLS version:\n%s", ts.logs.String())
	}
}

// newRegisteredServer starts a test server whose sessions are counted in
// the registry it returns (through an AuthGuard whose limits no test
// here reaches).
func newRegisteredServer(t *testing.T) (*testServer, *protocols.SessionRegistry) {
	t.Helper()
	reg := protocols.NewSessionRegistry(time.Now)
	guard := protocols.NewAuthGuard(protocols.AuthGuardConfig{
		MaxFailuresPerIP: 1000, MaxFailuresPerUser: 1000, Window: time.Minute, Lockout: time.Minute, Sessions: reg,
	}, nil)
	return newTestServer(t, withGuard(guard)), reg
}

// TestFrontTeardown: logout, a client that vanishes (also during IDLE
// and in the middle of a literal), a killed session and server-side
// closes leave no goroutine behind, and killing a session closes the
// client's connection.
func TestFrontTeardown(t *testing.T) {
	ts, reg := newRegisteredServer(t)
	// One connection first, so that the server's goroutines are counted
	// in the baseline.
	warm := ts.login(t, nil)
	if err := warm.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	base := waitGoroutines(t, -1)

	c := ts.login(t, nil)
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("logout: %v", err)
	}
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	rc.send("i1 IDLE\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("IDLE: %q", l)
	}
	rc.conn.Close()
	rc = dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.send("a1 APPEND INBOX {100+}\r\npartial")
	rc.conn.Close()

	waitFor(t, "the earlier sessions to end", func() bool { return reg.Count() == 0 })
	killed := dialRaw(t, ts.addr)
	killed.mustOK("LOGIN " + testUser + " " + testPassword)
	if n := reg.End(testUser, ""); n != 1 {
		t.Fatalf("ended %d sessions, want 1", n)
	}
	killed.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(killed.r); err != nil {
		t.Errorf("killed session: read %v, want the connection closed", err)
	}
	waitGoroutines(t, base)

	// The server closes with sessions open, one of them idling.
	other := newTestServer(t)
	idle := other.login(t, nil)
	if _, err := idle.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idleCmd, err := idle.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	open := dialRaw(t, other.addr)
	open.mustOK("ID NIL")
	if err := other.srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := idleCmd.Wait(); err == nil {
		t.Errorf("IDLE went on after the server closed")
	}
	open.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(open.r); err != nil {
		t.Errorf("open connection after the server closed: %v", err)
	}
	waitGoroutines(t, base+2) // the second server's two Serve loops end at cleanup
}

// waitGoroutines waits until at most want goroutines run (want < 0: until
// the count settles) and returns the count.
func waitGoroutines(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := -1
	for {
		n := runtime.NumGoroutine()
		if (want >= 0 && n <= want) || (want < 0 && n == last) {
			return n
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", n, want, buf[:runtime.Stack(buf, true)])
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkSelectFetch runs SELECT and a FETCH of flags and bodies
// through the front and the library ("front"), and through the library
// alone on a listener of its own ("library"), so the cost of the front's
// hop shows as the difference.
func BenchmarkSelectFetch(b *testing.B) {
	ts := newTestServer(b, func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	for i := range 20 {
		ts.deliver(b, simpleMessage("a@example.net", testUser, "bench "+itoaTest(i), "Mon, 02 Jan 2006 15:04:05 +0000", strings.Repeat("body text\r\n", 200)))
	}
	direct, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go ts.srv.imap.Serve(direct) // closed by the server's Close
	var all imap.SeqSet
	all.AddRange(1, 20)
	for _, target := range []struct{ name, addr string }{{"front", ts.addr}, {"library", direct.Addr().String()}} {
		b.Run(target.name, func(b *testing.B) {
			c, err := imapclient.DialInsecure(target.addr, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Login(testUser, testPassword).Wait(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
					b.Fatal(err)
				}
				msgs, err := c.Fetch(all, &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
				if err != nil || len(msgs) != 20 {
					b.Fatalf("fetch: %d messages, %v", len(msgs), err)
				}
			}
		})
	}
}

// A panic in the front's own goroutine closes that connection and is
// logged; the process and the other sessions go on.
func TestFrontPanicClosesOnlyItsConnection(t *testing.T) {
	testHookRun = func(cmd *imapwire.Command) {
		if cmd.Tag == "boom" {
			var m map[string]int
			m["x"]++ // a nil map: a runtime panic, as a bug would give
		}
	}
	t.Cleanup(func() { testHookRun = nil })
	ts := newTestServer(t)
	other := dialRaw(t, ts.addr)
	other.mustOK("LOGIN " + testUser + " " + testPassword)

	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.send("boom NOOP\r\n")
	rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(rc.r); err != nil || len(rest) != 0 {
		t.Fatalf("after the panic: %q, %v; want the connection closed", rest, err)
	}
	waitFor(t, "the panic logged", func() bool { return strings.Contains(ts.logs.String(), "panic serving a connection") })

	other.mustOK("NOOP")
	fresh := dialRaw(t, ts.addr)
	fresh.mustOK("LOGIN " + testUser + " " + testPassword)
}

// TestEndedConnectionKeepsNoBuffers: once a connection has ended and
// given its buffers back, a late write (a library goroutine finishing a
// command) fails and nothing reaches the pooled writer's old target.
func TestEndedConnectionKeepsNoBuffers(t *testing.T) {
	var out bytes.Buffer
	f := &frontConn{}
	f.br = frontReaders.Get().(*bufio.Reader)
	f.br.Reset(strings.NewReader("a1 NOOP\r\n"))
	f.bw = frontWriters.Get().(*bufio.Writer)
	f.bw.Reset(&out)
	f.releaseBuffers()
	if err := f.writeLine("* late"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after the end: %v, want net.ErrClosed", err)
	}
	if f.bw != nil || f.br != nil || out.Len() != 0 {
		t.Errorf("after release: writer %v, reader %v, %q written", f.bw, f.br, out.String())
	}

	// A writer holding wmu at the end keeps its buffer.
	f = &frontConn{}
	f.br = frontReaders.Get().(*bufio.Reader)
	f.bw = frontWriters.Get().(*bufio.Writer)
	f.bw.Reset(&out)
	f.wmu.Lock()
	f.releaseBuffers()
	if f.bw == nil {
		t.Error("a writer held by another goroutine went back to the pool")
	}
	f.wmu.Unlock()
}

// TestConnectionsShareNoBytes: connections one after another (their
// buffers pooled), the first cut with commands unread and a response
// unflushed, in plaintext and after STARTTLS; the next sees only its own
// answers.
func TestConnectionsShareNoBytes(t *testing.T) {
	ts := newTestServer(t, withSecureAuth())
	for i := range 20 {
		rc := dialRaw(t, ts.addr)
		if i%2 == 1 {
			rc.send("s1 STARTTLS\r\n")
			if st := rc.expectTagged("s1"); !strings.HasPrefix(st, "OK") {
				t.Fatalf("STARTTLS: %q", st)
			}
			rc.handshake(ts.clientTLS)
		}
		untagged, st := rc.cmd(fmt.Sprintf("ID (\"name\" \"conn%d\")", i))
		if !strings.HasPrefix(st, "OK") {
			t.Fatalf("connection %d: ID: %q", i, st)
		}
		for _, l := range untagged {
			if strings.Contains(l, "conn") || strings.Contains(l, "left") {
				t.Fatalf("connection %d saw another's bytes: %q", i, l)
			}
		}
		// Left for the next connection to find, were buffers shared:
		// pipelined commands never read, one of them cut short.
		rc.send(fmt.Sprintf("x1 ID (\"name\" \"left%d\")\r\nx2 NOOP\r\nx3 CAPABIL", i))
		rc.conn.Close()
	}
}

// TestLogoutAnsweredByFront: LOGOUT answers BYE, then its completion,
// then the connection ends and the session is released; LOGOUT with an
// argument is refused and the session goes on.
func TestLogoutAnsweredByFront(t *testing.T) {
	ts, reg := newRegisteredServer(t)
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("SELECT INBOX")
	if _, st := rc.cmd("LOGOUT now"); !strings.HasPrefix(st, "BAD") {
		t.Fatalf("LOGOUT with an argument: %q", st)
	}
	rc.mustOK("NOOP")
	if n := reg.Count(); n != 1 {
		t.Fatalf("%d sessions before LOGOUT, want 1", n)
	}
	rc.send("z9 LOGOUT\r\n")
	if l := rc.line(); !strings.HasPrefix(l, "* BYE ") {
		t.Fatalf("first answer to LOGOUT: %q", l)
	}
	if l := rc.line(); !strings.HasPrefix(l, "z9 OK ") {
		t.Fatalf("completion of LOGOUT: %q", l)
	}
	rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(rc.r); err != nil || len(rest) > 0 {
		t.Fatalf("after LOGOUT: %q, %v; want the connection closed", rest, err)
	}
	waitFor(t, "the session to end", func() bool { return reg.Count() == 0 })
}

// BenchmarkAppendLarge appends 1 MiB messages through the front; its
// bytes allocated per operation (client, front, library and store
// together) show the copies a message takes on its way in.
func BenchmarkAppendLarge(b *testing.B) {
	ts := newTestServer(b, func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) })
	c, err := imapclient.DialInsecure(ts.addr, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(testUser, testPassword).Wait(); err != nil {
		b.Fatal(err)
	}
	msg := []byte(simpleMessage("a@example.net", testUser, "large", "Mon, 02 Jan 2006 15:04:05 +0000", strings.Repeat("line of body text, long enough to be typical of mail\r\n", 1<<20/56)))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		cmd := c.Append("INBOX", int64(len(msg)), nil)
		if _, err := cmd.Write(msg); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			b.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}
