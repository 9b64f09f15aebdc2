package e2e

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Settings of the node TestStockClientsAfterProbes starts: a small
// message limit keeps the APPEND of exactly the limit quick, and a short
// handshake deadline keeps the wait for idle TLS sockets short.
const (
	probeMessageLimit     = 256 << 10
	probeHandshakeTimeout = 2 * time.Second
)

// stockClient returns the path of a stock mail client, skipping the test
// when it is missing unless MAILCLUSTER_REQUIRE_STOCKCLIENTS is set.
func stockClient(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("MAILCLUSTER_REQUIRE_STOCKCLIENTS") != "" {
			t.Fatalf("%s (Debian package %s) is required (MAILCLUSTER_REQUIRE_STOCKCLIENTS is set): %v", name, pkg, err)
		}
		t.Skipf("%s not installed (Debian package %s); set MAILCLUSTER_REQUIRE_STOCKCLIENTS=1 to make this a failure", name, pkg)
	}
	return p
}

// runTool runs a stock client with a deadline and returns its combined
// output, failing the test unless it exits with 0.
func runTool(t testing.TB, timeout time.Duration, cmd *exec.Cmd) string {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish within %s:\n%s", cmd.Args, timeout, out.String())
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd.Args, err, out.String())
	}
	return out.String()
}

// dialFrom is dialRaw from the loopback address ip (127.0.0.2 and so
// on: another client address for the node).
func dialFrom(t testing.TB, ip, addr string, tlsCfg *tls.Config) *rawConn {
	t.Helper()
	return dialRawFrom(t, &net.TCPAddr{IP: net.ParseIP(ip)}, addr, tlsCfg)
}

// imapStatus sends one tagged IMAP command and returns the tagged
// answer's status ("OK ...", "NO ...", "BAD ...").
func (c *rawConn) imapStatus(tag, cmd string) string {
	c.t.Helper()
	c.send(tag + " " + cmd)
	return c.imapStatusOf(tag)
}

// imapStatusOf reads up to the answer tagged tag and returns its status.
func (c *rawConn) imapStatusOf(tag string) string {
	c.t.Helper()
	lines := c.imapTagged(tag)
	return strings.TrimPrefix(lines[len(lines)-1], tag+" ")
}

// imapInSync checks that the session still answers NOOP with OK.
func (c *rawConn) imapInSync(tag, after string) {
	c.t.Helper()
	if st := c.imapStatus(tag, "NOOP"); !strings.HasPrefix(st, "OK") {
		c.t.Fatalf("NOOP after %s: %q", after, st)
	}
}

// sentMessage is a message the test delivered or uploaded, and how.
type sentMessage struct {
	name string
	data []byte
	// appended messages are stored exactly as sent; delivered ones get
	// trace header fields in front.
	appended bool
}

// TestStockClientsAfterProbes is issue 13's acceptance test: a node
// delivered a few messages (8-bit text, an attachment) is probed with
// every hostile input of the issue over raw sockets, each answered as
// the issue expects with the session or node going on; then mbsync,
// fetchmail (POP3 over TLS, IMAP with STARTTLS) and neomutt still work
// against it and get byte-exact mail, and the owner still logs in from
// their own address after strangers locked the user out.
func TestStockClientsAfterProbes(t *testing.T) {
	t.Parallel()
	const user = "owner@" + testDomain
	password := "owner-pw-" + randomHex(6)
	n := startNode(t, nodeOptions{
		maxMessageSize:      strconv.Itoa(probeMessageLimit),
		handshakeTimeout:    probeHandshakeTimeout.String(),
		postmaster:          user,
		productionAuthGuard: true,
	})
	if err := n.addDomain(testDomain); err != nil {
		t.Fatal(err)
	}
	n.addUser(t, user, password)

	// The owner logs in from 127.0.0.1 before anything else: that makes
	// it a known address of the user (the lockout policy).
	owner := imapDialTLS(t, n, user, password, nil)
	if err := owner.Logout().Wait(); err != nil {
		t.Fatalf("owner logout: %v", err)
	}

	var sent []sentMessage
	t.Run("Deliver", func(t *testing.T) { sent = append(sent, probeDeliver(t, n, user)...) })
	t.Run("IMAPLiterals", func(t *testing.T) { probeIMAPLiterals(t, n, user, password) })
	t.Run("IMAPClientErrors", func(t *testing.T) { probeIMAPClientErrors(t, n, user, password) })
	t.Run("IMAPAppendLimit", func(t *testing.T) { sent = append(sent, probeAppendLimit(t, n, user, password)...) })
	t.Run("SMTP", func(t *testing.T) { sent = append(sent, probeSMTP(t, n, user)...) })
	t.Run("HandshakeDeadline", func(t *testing.T) { probeHandshakeDeadline(t, n) })
	t.Run("Lockout", func(t *testing.T) { probeLockout(t, n, user, password) })
	if t.Failed() {
		t.FailNow()
	}

	// What the node holds now is what every client must get, byte for
	// byte: read with go-imap, checked against what was sent.
	stored := inboxBodies(t, n, user, password)
	checkStored(t, stored, sent)

	t.Run("mbsync", func(t *testing.T) { testMbsync(t, n, user, password, stored) })
	// mbsync uploaded a message.
	stored = inboxBodies(t, n, user, password)
	t.Run("fetchmail", func(t *testing.T) { testFetchmail(t, n, user, password, stored) })
	t.Run("neomutt", func(t *testing.T) { testNeomutt(t, n, user, password) })

	if log := string(n.logBytes(t)); strings.Contains(log, password) || strings.Contains(log, "wrong-"+password) {
		t.Error("a password is in the node log")
	}
}

// probeDeliver delivers three messages over the MX port: plain text,
// 8-bit UTF-8 text and one with a binary attachment.
func probeDeliver(t *testing.T, n *node, user string) []sentMessage {
	const from = "sender@example.net"
	plain := simpleMessage(from, user, "Stock plain "+randomHex(3), "A plain message.\nSecond line.\n")
	utf8 := []byte(crlf("From: Jürgen <" + from + ">\nTo: " + user + "\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\nMessage-ID: <" + uniqueID("utf8") + ">\nMIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" +
		"Grüße aus Köln, 日本語のテキスト, emoji 📬.\nZweite Zeile: äöü ß €.\n"))
	attach := mailSpec{From: from, To: user, Subject: "Stock attachment " + randomHex(3), MessageID: uniqueID("attach"),
		Text: "See the attached file.\n", Attachments: []attachment{{Name: "report.pdf", ContentType: "application/pdf", Data: pdfBytes(), Base64: true}}}.build()
	out := []sentMessage{{name: "plain", data: plain}, {name: "utf8", data: utf8}, {name: "attachment", data: attach}}
	for _, m := range out {
		smtpSend(t, n, from, []string{user}, m.data)
	}
	return out
}

// probeIMAPLiterals: synchronizing literals over 4,096 bytes outside
// APPEND, before and after login, are refused at once and the session
// stays in step (issue 13 item 1).
func probeIMAPLiterals(t *testing.T, n *node, user, password string) {
	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	if l := rc.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting: %q", l)
	}
	refused := func(st string) bool { return strings.HasPrefix(st, "NO [TOOBIG]") || strings.HasPrefix(st, "BAD") }
	rc.send("a1 LOGIN {4097}")
	if st := rc.imapStatusOf("a1"); !refused(st) {
		t.Errorf("a1 LOGIN {4097}: %q, want NO [TOOBIG] or BAD without +", st)
	}
	rc.imapInSync("n1", "LOGIN {4097}")
	rc.send("x1 LOGIN {4294967295}")
	rc.send("x2 NOOP")
	if st := rc.imapStatusOf("x1"); !refused(st) {
		t.Errorf("x1 LOGIN {4294967295}: %q, want NO [TOOBIG] or BAD without +", st)
	}
	if st := rc.imapStatusOf("x2"); !strings.HasPrefix(st, "OK") {
		t.Errorf("x2 NOOP after the refused literal: %q", st)
	}
	if st := rc.imapStatus("a2", "LOGIN "+user+" "+password); !strings.HasPrefix(st, "OK") {
		t.Fatalf("LOGIN after the refused literals: %q", st)
	}
	if st := rc.imapStatus("a3", "SELECT INBOX"); !strings.HasPrefix(st, "OK") {
		t.Fatalf("SELECT INBOX: %q", st)
	}
	rc.send("a4 SEARCH SUBJECT {8192}")
	if st := rc.imapStatusOf("a4"); !refused(st) {
		t.Errorf("a4 SEARCH SUBJECT {8192}: %q, want NO [TOOBIG] or BAD without +", st)
	}
	rc.imapInSync("n2", "SEARCH SUBJECT {8192}")
	rc.send("a5 LOGOUT")
	rc.imapTagged("a5")
	// None of it was a failed login (the literal's refusal once left the
	// next command to be read as the password).
	if strings.Contains(string(n.logBytes(t)), `"msg":"login failed"`) {
		t.Error("a refused literal counted as a failed login")
	}
}

// probeIMAPClientErrors: searches nested too deep, invalid modified
// UTF-7, dot levels and an overlong line are client errors (BAD or NO
// [CANNOT]) and the session goes on (issue 13 items 2 and 3).
func probeIMAPClientErrors(t *testing.T, n *node, user, password string) {
	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	if st := rc.imapStatus("a1", "LOGIN "+user+" "+password); !strings.HasPrefix(st, "OK") {
		t.Fatalf("LOGIN: %q", st)
	}
	if st := rc.imapStatus("a2", "SELECT INBOX"); !strings.HasPrefix(st, "OK") {
		t.Fatalf("SELECT INBOX: %q", st)
	}
	clientError := func(st string) bool { return strings.HasPrefix(st, "BAD") || strings.HasPrefix(st, "NO [CANNOT]") }
	cmds := []string{
		"SEARCH " + strings.Repeat("(", 10000) + "ALL" + strings.Repeat(")", 10000),
		"SEARCH " + strings.Repeat("OR ", 10000) + strings.Repeat("ALL ", 10000) + "ALL",
		`CREATE "&"`, `CREATE "&Jjo"`, `CREATE "&AGEAYgBj-"`, "CREATE \"bad\x01name\"", "CREATE \"\xff\xfe\"",
		`CREATE ".."`, `CREATE "../.."`, `CREATE "a/../b"`, `CREATE "INBOX/.."`,
	}
	for i, cmd := range cmds {
		tag := "c" + strconv.Itoa(i)
		if st := rc.imapStatus(tag, cmd); !clientError(st) {
			t.Errorf("%.50q: %q, want BAD or NO [CANNOT]", cmd, st)
		}
		rc.imapInSync("n"+strconv.Itoa(i), fmt.Sprintf("%.30q", cmd))
	}
	// An invalid name as a literal: answered, not a dropped connection.
	rc.send("l1 CREATE {4}")
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("CREATE literal: %q", l)
	}
	rc.send("&Jjo")
	if st := rc.imapStatusOf("l1"); !clientError(st) {
		t.Errorf("CREATE {4} &Jjo: %q, want BAD or NO [CANNOT]", st)
	}
	rc.imapInSync("l2", "CREATE {4} &Jjo")
	// An overlong command line gets BAD and is skipped.
	if st := rc.imapStatus("o1", "NOOP "+strings.Repeat("x", 200<<10)); !strings.HasPrefix(st, "BAD") {
		t.Errorf("200 KiB command line: %q, want BAD", st)
	}
	rc.imapInSync("o2", "an overlong line")
	// No dot level got in: LIST shows none.
	rc.send(`l3 LIST "" "*"`)
	for _, l := range rc.imapTagged("l3") {
		if strings.HasPrefix(l, "* LIST") && (strings.Contains(l, `"..`) || strings.Contains(l, `/.."`) || strings.Contains(l, "/../")) {
			t.Errorf("LIST shows a dot level: %q", l)
		}
	}
	rc.send("z LOGOUT")
	rc.imapTagged("z")
}

// probeAppendLimit: a message SMTP accepts can be uploaded again as the
// node stored it (trace fields and all), a message of exactly the SMTP
// limit is taken by APPEND, and one over APPENDLIMIT is refused without
// "+" (issue 13 item 4).
func probeAppendLimit(t *testing.T, n *node, user, password string) []sentMessage {
	// The largest message DATA takes (go-smtp's reader needs one byte of
	// the limit to see the end).
	big := sizedMessage(user, "Stock big "+randomHex(3), probeMessageLimit-1)
	smtpSend(t, n, "big@example.net", []string{user}, big)

	c := imapDialTLS(t, n, user, password, nil)
	wantLimit := uint32(probeMessageLimit + 8<<10)
	if lim, ok := c.Caps().AppendLimit(); !ok || lim == nil || *lim != wantLimit {
		t.Errorf("APPENDLIMIT %v (advertised %v), want %d", lim, ok, wantLimit)
	}
	selectBox(t, c, "INBOX", true)
	var storedBig []byte
	for _, m := range fetchAll(t, c, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}) {
		if b := m.FindBodySection(&imap.FetchItemBodySection{Peek: true}); bytes.HasSuffix(b, big) {
			storedBig = b
		}
	}
	if storedBig == nil {
		t.Fatal("the message of the SMTP limit is not in INBOX")
	}
	if err := c.Create("Moved", nil).Wait(); err != nil {
		t.Fatalf("CREATE Moved: %v", err)
	}
	appendMessage(t, c, "Moved", storedBig, nil)

	exact := sizedMessage(user, "Stock exact "+randomHex(3), probeMessageLimit)
	appendMessage(t, c, "INBOX", exact, nil)
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("logout: %v", err)
	}

	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	if st := rc.imapStatus("a1", "LOGIN "+user+" "+password); !strings.HasPrefix(st, "OK") {
		t.Fatalf("LOGIN: %q", st)
	}
	rc.send("a2 APPEND INBOX {" + strconv.Itoa(int(wantLimit)+1) + "}")
	if st := rc.imapStatusOf("a2"); !strings.HasPrefix(st, "NO [TOOBIG]") {
		t.Errorf("APPEND over APPENDLIMIT: %q, want NO [TOOBIG] without +", st)
	}
	rc.imapInSync("a3", "APPEND over the limit")
	rc.send("z LOGOUT")
	rc.imapTagged("z")
	return []sentMessage{{name: "big over SMTP", data: big}, {name: "APPEND of the limit", data: exact, appended: true}}
}

// sizedMessage is a text message of exactly size bytes, ending in CRLF.
func sizedMessage(to, subject string, size int) []byte {
	head := "From: big@example.net\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + uniqueID("sized") + ">\r\n\r\n"
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
	b := head + strings.Repeat(line, (size-len(head))/len(line))
	if rest := size - len(b); rest >= 2 {
		b += strings.Repeat("x", rest-2) + "\r\n"
	} else if rest == 1 {
		b = b[:len(b)-len(line)] + strings.Repeat("y", len(line)-1) + "\r\n"
	}
	return []byte(b)
}

// probeSMTP: HELO/EHLO arguments with control bytes get 501, SIZE is
// the real limit with one refusal text beyond it, and a bare
// RCPT TO:<postmaster> is accepted on the MX port and delivered to the
// postmaster (issue 13 items 6 to 8).
func probeSMTP(t *testing.T, n *node, user string) []sentMessage {
	rc := dialRaw(t, n.addr("smtp"), nil)
	if r := rc.smtpReply(); !strings.HasPrefix(r[0], "220") {
		t.Fatalf("greeting: %q", r)
	}
	for _, arg := range []string{"\x00\x00", "a\x01b", "\x1b[31m"} {
		rc.send("EHLO " + arg)
		if r := rc.smtpReply(); !strings.HasPrefix(r[0], "501") || strings.ContainsAny(strings.Join(r, ""), "\x00\x01\x1b") {
			t.Errorf("EHLO %q: %q, want 501 without the bytes", arg, r)
		}
	}
	rc.send("HELO \x00")
	if r := rc.smtpReply(); !strings.HasPrefix(r[0], "501") {
		t.Errorf("HELO with a NUL: %q, want 501", r)
	}
	rc.send("EHLO client.e2e.test")
	r := rc.smtpReply()
	size := ""
	for _, l := range r {
		if len(l) > 4 && strings.HasPrefix(strings.ToUpper(l[4:]), "SIZE") {
			size = strings.TrimSpace(l[4+len("SIZE"):])
		}
	}
	if size != strconv.Itoa(probeMessageLimit) {
		t.Errorf("EHLO advertises SIZE %q, want %d: %q", size, probeMessageLimit, r)
	}
	var texts []string
	for _, over := range []int{probeMessageLimit + 1, probeMessageLimit + 2} {
		rc.send("MAIL FROM:<a@example.net> SIZE=" + strconv.Itoa(over))
		r := rc.smtpReply()
		if !strings.HasPrefix(r[0], "552") {
			t.Errorf("MAIL SIZE=%d: %q, want 552", over, r)
		}
		texts = append(texts, r[0])
	}
	if texts[0] != texts[1] {
		t.Errorf("two refusals of SIZE: %q and %q, want one text", texts[0], texts[1])
	}
	msg := []byte(crlf("From: a@example.net\nTo: postmaster\nSubject: Stock postmaster " + randomHex(3) + "\nMessage-ID: <" + uniqueID("pm") + ">\n\nFor the postmaster.\n"))
	for _, step := range []struct{ cmd, want string }{
		{"MAIL FROM:<a@example.net> SIZE=" + strconv.Itoa(probeMessageLimit), "250"},
		{"RCPT TO:<postmaster>", "250"},
		{"DATA", "354"},
		{string(msg) + ".", "250"},
		{"QUIT", "221"},
	} {
		rc.send(step.cmd)
		if r := rc.smtpReply(); !strings.HasPrefix(r[0], step.want) {
			t.Fatalf("%.40q: %q, want %s", step.cmd, r, step.want)
		}
	}
	return []sentMessage{{name: "bare postmaster", data: msg}}
}

// probeHandshakeDeadline: TCP connections to the implicit-TLS ports that
// never send a ClientHello are closed by the handshake deadline, and the
// node serves TLS on (issue 13 item 9).
func probeHandshakeDeadline(t *testing.T, n *node) {
	listeners := []string{"imaps", "imaps", "imaps", "pop3s", "submissions"}
	errs := make(chan error, len(listeners))
	start := time.Now()
	for _, l := range listeners {
		conn, err := net.DialTimeout("tcp", n.addr(l), ioTimeout)
		if err != nil {
			t.Fatalf("dial %s: %v", l, err)
		}
		t.Cleanup(func() { conn.Close() })
		go func(l string, conn net.Conn) {
			// Far longer than the deadline, shorter than the pre-login
			// idle timeout (60 s): a close within it is the handshake
			// deadline's.
			_ = conn.SetReadDeadline(time.Now().Add(45 * time.Second))
			_, err := io.Copy(io.Discard, conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				errs <- fmt.Errorf("%s: an idle connection without a ClientHello still open after 45 s", l)
				return
			}
			errs <- nil
		}(l, conn)
	}
	for range listeners {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d idle connections closed after %s (handshake deadline %s)", len(listeners), time.Since(start).Round(time.Millisecond), probeHandshakeTimeout)
	// Counted in metrics and logged, by listener.
	metrics := nodeMetrics(t, n)
	for listener, want := range map[string]int{"imaps": 3, "pop3s": 1, "submissions": 1} {
		series := `mail_node_handshake_timeouts_total{listener="` + listener + `"} ` + strconv.Itoa(want)
		if !strings.Contains(metrics, series+"\n") {
			t.Errorf("metrics lack %s", series)
		}
	}
	if got := strings.Count(string(n.logBytes(t)), `"msg":"tls handshake timed out"`); got != len(listeners) {
		t.Errorf("%d handshake timeouts logged, want %d", got, len(listeners))
	}
	c, err := imapDialTLSErr(n)
	if err != nil {
		t.Fatalf("IMAPS after the idle connections: %v", err)
	}
	c.Close()
}

// probeLockout: 25 failed logins for the user from five other addresses
// lock the user out at addresses without a recent login of theirs (a
// stranger with the right password stays out), while the owner still
// logs in from 127.0.0.1, where they logged in before (issue 13 item 10).
func probeLockout(t *testing.T, n *node, user, password string) {
	var answers []string
	for i := 0; i < 25; i++ {
		ip := "127.0.0." + strconv.Itoa(2+i/5)
		rc := dialFrom(t, ip, n.addr("imaps"), n.clientTLS)
		rc.line()
		answers = append(answers, rc.imapStatus("f", "LOGIN "+user+" wrong-"+password))
		rc.close()
	}
	for i, a := range answers {
		if !strings.HasPrefix(a, "NO") || a != answers[0] {
			t.Errorf("failed login %d: %q, want NO like the first (%q)", i+1, a, answers[0])
		}
	}
	rc := dialFrom(t, "127.0.0.7", n.addr("imaps"), n.clientTLS)
	rc.line()
	if st := rc.imapStatus("s", "LOGIN "+user+" "+password); st != answers[0] {
		t.Errorf("right password from a new address while the user is locked out: %q, want %q", st, answers[0])
	}
	rc.close()
	// The owner, at the address of their earlier login.
	c := imapDialTLS(t, n, user, password, nil)
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("owner logout: %v", err)
	}
	// IMAP's login records carry the client address (issue 13 item 5);
	// the failures after the lockout are logged as throttled.
	log := string(n.logBytes(t))
	for _, rec := range []string{`"msg":"login failed"`, `"msg":"login throttled"`} {
		found := false
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, rec) && strings.Contains(l, `"component":"imap"`) && strings.Contains(l, `"remote":"127.0.0.`) && !strings.Contains(l, `"remote":"127.0.0.1"`) {
				found = true
			}
		}
		if !found {
			t.Errorf("no IMAP %s record with the other client address", rec)
		}
	}
	// One user lockout, logged once (at info level, the address but no
	// user name or password), and no address lockout: five failures per
	// address stay under the per-address limit.
	var userLocks, addrLocks int
	for _, l := range strings.Split(log, "\n") {
		// (At debug level the record is repeated with the user name.)
		if !strings.Contains(l, `"msg":"login lockout started"`) || !strings.Contains(l, `"level":"WARN"`) {
			continue
		}
		switch {
		case strings.Contains(l, `"scope":"user"`):
			userLocks++
			if !strings.Contains(l, `"remote":"127.0.0.`) || strings.Contains(l, "wrong-") {
				t.Errorf("lockout record: %s", l)
			}
		case strings.Contains(l, `"scope":"address"`):
			addrLocks++
		}
	}
	if userLocks != 1 || addrLocks != 0 {
		t.Errorf("%d user and %d address lockouts logged, want 1 and 0", userLocks, addrLocks)
	}
}

// nodeMetrics returns the node's Prometheus metrics page.
func nodeMetrics(t *testing.T, n *node) string {
	t.Helper()
	client := &http.Client{Timeout: ioTimeout}
	resp, err := client.Get("http://" + n.addr("http") + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// inboxBodies returns every INBOX message as the node holds it, by UID.
func inboxBodies(t *testing.T, n *node, user, password string) map[imap.UID][]byte {
	c := imapDialTLS(t, n, user, password, nil)
	defer c.Logout()
	selectBox(t, c, "INBOX", true)
	sec := &imap.FetchItemBodySection{Peek: true}
	out := map[imap.UID][]byte{}
	for _, m := range fetchAll(t, c, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}) {
		out[m.UID] = m.FindBodySection(sec)
	}
	return out
}

// checkStored checks that every message sent is in INBOX exactly: as
// uploaded, or as delivered behind trace header fields only.
func checkStored(t *testing.T, stored map[imap.UID][]byte, sent []sentMessage) {
	t.Helper()
	if len(stored) != len(sent) {
		t.Errorf("INBOX holds %d messages, %d were sent", len(stored), len(sent))
	}
	for _, s := range sent {
		found := false
		for _, b := range stored {
			if s.appended && bytes.Equal(b, s.data) {
				found = true
			}
			if !s.appended && bytes.HasSuffix(b, s.data) && !bytes.Contains(b[:len(b)-len(s.data)], []byte("\r\n\r\n")) {
				found = true
			}
		}
		if !found {
			t.Errorf("message %q not stored byte for byte", s.name)
		}
	}
}

// lf is a message with LF line ends, as Maildir files and MDAs get them.
func lf(b []byte) string { return strings.ReplaceAll(string(b), "\r\n", "\n") }

// toolTimeout bounds one run of a stock client.
const toolTimeout = 60 * time.Second

// toolEnv is the environment of a stock client: its home in dir (so it
// reads no configuration of the machine's user) and a UTF-8 locale.
func toolEnv(dir string) []string {
	return append(os.Environ(), "HOME="+dir, "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "FETCHMAILHOME="+dir)
}

// testMbsync syncs the account into a Maildir with mbsync: every INBOX
// message arrives byte for byte (with LF line ends), and flags set in
// the Maildir sync back to the node.
func testMbsync(t *testing.T, n *node, user, password string, stored map[imap.UID][]byte) {
	bin := stockClient(t, "mbsync", "isync")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", n.logTail())
		}
	})
	dir := t.TempDir()
	maildir := filepath.Join(dir, "mail")
	_, port, err := net.SplitHostPort(n.addr("imaps"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(maildir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mbsyncrc")
	conf := fmt.Sprintf(`IMAPAccount node
Host localhost
Port %s
User "%s"
Pass "%s"
SSLType IMAPS
CertificateFile %s

IMAPStore node-far
Account node

MaildirStore node-near
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel node
Far :node-far:
Near :node-near:
Patterns *
Create Near
Sync All
Expunge None
SyncState *
`, port, user, password, filepath.Join(n.data, "tls", "cert.pem"), maildir, maildir)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	sync := func() string {
		cmd := exec.Command(bin, "-c", cfg, "-V", "node")
		cmd.Env = toolEnv(dir)
		return runTool(t, toolTimeout, cmd)
	}
	out := sync()
	files := maildirFiles(t, filepath.Join(maildir, "INBOX"))
	if len(files) != len(stored) {
		t.Fatalf("mbsync: %d messages in the Maildir INBOX, %d on the node\n%s", len(files), len(stored), out)
	}
	var flagUID imap.UID
	var flagFile string
	for uid, path := range files {
		want, ok := stored[uid]
		if !ok {
			t.Errorf("mbsync: file %s for UID %d the node does not have", path, uid)
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(withoutTUID(got)) != lf(want) {
			t.Errorf("mbsync: UID %d differs: %d bytes, want %d", uid, len(got), len(lf(want)))
		}
		if flagFile == "" || uid < flagUID {
			flagUID, flagFile = uid, path
		}
	}
	if _, err := os.Stat(filepath.Join(maildir, "Moved")); err != nil {
		t.Errorf("mbsync did not sync the mailbox Moved: %v", err)
	}
	// Flag the first message seen and flagged in the Maildir, and sync.
	base := filepath.Base(flagFile)
	if i := strings.Index(base, ":2,"); i >= 0 {
		base = base[:i]
	}
	if err := os.Rename(flagFile, filepath.Join(maildir, "INBOX", "cur", base+":2,FS")); err != nil {
		t.Fatal(err)
	}
	// A message new in the Maildir is uploaded with the same sync.
	upID := uniqueID("mbsync-up")
	upload := "From: " + user + "\nTo: " + user + "\nSubject: Stock uploaded by mbsync\nMessage-ID: <" + upID + ">\n" +
		"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nHochgeladen: äöü.\n"
	if err := os.WriteFile(filepath.Join(maildir, "INBOX", "new", "1700000000.stock.e2e"), []byte(upload), 0o600); err != nil {
		t.Fatal(err)
	}
	out = sync()
	c := imapDialTLS(t, n, user, password, nil)
	defer c.Logout()
	selectBox(t, c, "INBOX", true)
	found, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: upID}}}, nil).Wait()
	if err != nil || len(found.AllUIDs()) != 1 {
		t.Fatalf("the message mbsync uploaded: %v, UIDs %v\n%s", err, found, out)
	}
	sec := &imap.FetchItemBodySection{Peek: true}
	up, err := c.Fetch(imap.UIDSetNum(found.AllUIDs()...), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
	if err != nil || len(up) != 1 {
		t.Fatalf("UID FETCH the uploaded message: %v", err)
	}
	if got, want := string(withoutTUID(up[0].FindBodySection(sec))), strings.ReplaceAll(upload, "\n", "\r\n"); got != want {
		t.Errorf("mbsync uploaded %q, want %q", got, want)
	}
	msgs, err := c.Fetch(imap.UIDSetNum(flagUID), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH %d FLAGS: %v (%d messages)", flagUID, err, len(msgs))
	}
	has := map[imap.Flag]bool{}
	for _, f := range msgs[0].Flags {
		has[f] = true
	}
	if !has[imap.FlagSeen] || !has[imap.FlagFlagged] {
		t.Errorf("flags set in the Maildir did not sync back: UID %d has %v\n%s", flagUID, msgs[0].Flags, out)
	}
}

// withoutTUID removes the one header field mbsync adds to every message
// it copies, either way, X-TUID (its transaction id, to find the message
// again if the sync is interrupted). Line ends may be LF or CRLF.
func withoutTUID(b []byte) []byte {
	for i := 0; i < len(b); {
		eol := bytes.IndexByte(b[i:], '\n')
		if eol < 0 {
			break
		}
		line := b[i : i+eol+1]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // the end of the header
		}
		if bytes.HasPrefix(line, []byte("X-TUID: ")) {
			return append(append([]byte{}, b[:i]...), b[i+eol+1:]...)
		}
		i += eol + 1
	}
	return b
}

// maildirFiles returns the messages of a Maildir folder by the UID mbsync
// put in their names (",U=").
func maildirFiles(t *testing.T, folder string) map[imap.UID]string {
	t.Helper()
	out := map[imap.UID]string{}
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(folder, sub))
		if err != nil {
			t.Fatalf("maildir: %v", err)
		}
		for _, e := range entries {
			name := e.Name()
			i := strings.Index(name, ",U=")
			if i < 0 {
				t.Errorf("maildir file %s has no UID", name)
				continue
			}
			digits := name[i+3:]
			if j := strings.IndexAny(digits, ",:"); j >= 0 {
				digits = digits[:j]
			}
			uid, err := strconv.ParseUint(digits, 10, 32)
			if err != nil {
				t.Errorf("maildir file %s: %v", name, err)
				continue
			}
			out[imap.UID(uid)] = filepath.Join(folder, sub, name)
		}
	}
	return out
}

// testFetchmail fetches the INBOX with fetchmail over POP3 with implicit
// TLS and over IMAP with STARTTLS, both checking the node's certificate,
// delivering each message to an MDA that writes a file: every message
// arrives byte for byte (LF line ends, as an MDA gets them).
func testFetchmail(t *testing.T, n *node, user, password string, stored map[imap.UID][]byte) {
	bin := stockClient(t, "fetchmail", "fetchmail")
	for _, mode := range []struct{ name, listener, proto, tls string }{
		{"POP3S", "pop3s", "POP3", "ssl"},
		{"IMAP-STARTTLS", "imap", "IMAP", "sslproto 'tls1.2+'"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			outDir := filepath.Join(dir, "out")
			if err := os.Mkdir(outDir, 0o700); err != nil {
				t.Fatal(err)
			}
			mda := filepath.Join(dir, "mda.sh")
			if err := os.WriteFile(mda, []byte("#!/bin/sh\nexec cat > \"$(mktemp \""+outDir+"/m.XXXXXX\")\"\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			_, port, err := net.SplitHostPort(n.addr(mode.listener))
			if err != nil {
				t.Fatal(err)
			}
			rc := filepath.Join(dir, "fetchmailrc")
			conf := fmt.Sprintf(`set no syslog
set no bouncemail
set invisible
poll localhost service %s protocol %s auth password
  user "%s" there with password "%s" is "e2e" here
  %s sslcertck sslcertfile "%s"
  keep fetchall no rewrite
  mda "%s"
`, port, mode.proto, user, password, mode.tls, filepath.Join(n.data, "tls", "cert.pem"), mda)
			if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "-f", rc, "-v", "--nodetach", "--pidfile", filepath.Join(dir, "pid"))
			cmd.Env = toolEnv(dir)
			out := runTool(t, toolTimeout, cmd)
			if mode.proto == "IMAP" && !strings.Contains(out, "STARTTLS") {
				t.Errorf("fetchmail IMAP did not use STARTTLS:\n%s", out)
			}
			entries, err := os.ReadDir(outDir)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int{}
			for _, b := range stored {
				want[lf(b)]++
			}
			if len(entries) != len(stored) {
				t.Errorf("fetchmail delivered %d messages, INBOX holds %d\n%s", len(entries), len(stored), out)
			}
			for _, e := range entries {
				got, err := os.ReadFile(filepath.Join(outDir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				g := lf(got)
				if want[g] == 0 {
					t.Errorf("fetchmail delivered a message (%d bytes) that is not one of INBOX byte for byte:\n%.600s", len(got), got)
					continue
				}
				want[g]--
			}
		})
	}
}

// testNeomutt drives neomutt headless in a tmux session of its own: it
// opens the IMAP INBOX over implicit TLS (trusting the node's
// certificate), lists the subjects, 8-bit ones decoded, and shows a
// message's text. Then neomutt's batch mode sends a message through
// the submissions port, which arrives.
func testNeomutt(t *testing.T, n *node, user, password string) {
	bin := stockClient(t, "neomutt", "neomutt")
	tmux := stockClient(t, "tmux", "tmux")
	dir := t.TempDir()
	_, port, err := net.SplitHostPort(n.addr("imaps"))
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(n.data, "tls", "cert.pem")
	muttrc := filepath.Join(dir, "muttrc")
	conf := fmt.Sprintf(`set folder = "imaps://localhost:%s/"
set spoolfile = "+INBOX"
set imap_user = "%s"
set imap_pass = "%s"
set imap_check_subscribed = no
set certificate_file = "%s"
set ssl_ca_certificates_file = "%s"
set ssl_force_tls = yes
set ssl_verify_host = yes
set header_cache = ""
set message_cachedir = ""
set charset = "utf-8"
set sort = date-received
set index_format = "IDX[%%s]"
set help = no
set wait_key = no
set mail_check_stats = no
set timeout = 5
set record = ""
`, port, user, password, cert, cert)
	if err := os.WriteFile(muttrc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tmux.sock")
	tm := func(args ...string) string {
		cmd := exec.Command(tmux, append([]string{"-u", "-S", sock, "-f", "/dev/null"}, args...)...)
		cmd.Env = toolEnv(dir)
		return runTool(t, 20*time.Second, cmd)
	}
	tm("new-session", "-d", "-s", "nm", "-x", "200", "-y", "50", "env", "TERM=screen", bin, "-n", "-F", muttrc)
	t.Cleanup(func() {
		cmd := exec.Command(tmux, "-S", sock, "kill-server")
		_ = cmd.Run()
	})
	pane := ""
	waitScreen := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			pane = tm("capture-pane", "-p", "-J", "-t", "nm")
			if ok(pane) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("neomutt: %s not on the screen after 30 s:\n%s", what, pane)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitScreen("the INBOX index", func(s string) bool { return strings.Contains(s, "IDX[Stock plain") })
	for _, subject := range []string{"Grüße aus Köln", "Stock attachment", "Stock postmaster", "Stock exact"} {
		if !strings.Contains(pane, "IDX["+subject) {
			t.Errorf("neomutt's index has no subject %q:\n%s", subject, pane)
		}
	}
	// Limit the index to the 8-bit message and open it.
	tm("send-keys", "-t", "nm", "l", "~s Köln", "Enter")
	waitScreen("the limited index", func(s string) bool {
		return !strings.Contains(s, "IDX[Stock plain") && strings.Contains(s, "IDX[Grüße")
	})
	tm("send-keys", "-t", "nm", "Enter")
	waitScreen("the 8-bit message", func(s string) bool { return strings.Contains(s, "Zweite Zeile: äöü ß €.") })
	tm("send-keys", "-t", "nm", "q", "q")

	// Batch mode: neomutt sends over submissions (implicit TLS, the
	// node's certificate, AUTH as the owner) and the message arrives.
	_, subPort, err := net.SplitHostPort(n.addr("submissions"))
	if err != nil {
		t.Fatal(err)
	}
	sendrc := filepath.Join(dir, "sendrc")
	sendConf := conf + fmt.Sprintf(`set from = "%s"
set smtp_url = "smtps://%s@localhost:%s/"
set smtp_pass = "%s"
`, user, strings.ReplaceAll(user, "@", "%40"), subPort, password)
	if err := os.WriteFile(sendrc, []byte(sendConf), 0o600); err != nil {
		t.Fatal(err)
	}
	subject := "Stock neomutt sent " + randomHex(3)
	cmd := exec.Command(bin, "-n", "-F", sendrc, "-s", subject, user)
	cmd.Env = toolEnv(dir)
	cmd.Stdin = strings.NewReader("Sent by neomutt in batch mode: Grüße.\n")
	runTool(t, toolTimeout, cmd)
	c := imapDialTLS(t, n, user, password, nil)
	defer c.Logout()
	waitFor(t, 30*time.Second, "neomutt's message in INBOX", func() error {
		selectBox(t, c, "INBOX", true)
		for _, s := range subjects(t, c) {
			if s == subject {
				return nil
			}
		}
		return fmt.Errorf("no subject %q", subject)
	})
}
