package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// ioTimeout bounds every network exchange of a test client.
const ioTimeout = 30 * time.Second

// --- SMTP ---

// smtpSend delivers msg over the MX listener with STARTTLS, using the
// standard library's client, and fails the test unless every step
// succeeds.
func smtpSend(t testing.TB, n *node, from string, to []string, msg []byte) {
	t.Helper()
	if err := smtpSendErr(n, from, to, msg); err != nil {
		t.Fatalf("deliver over MX: %v", err)
	}
}

// smtpSendErr is smtpSend returning the first failure.
func smtpSendErr(n *node, from string, to []string, msg []byte) error {
	c, err := netSMTPDial(n, "smtp")
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.StartTLS(n.clientTLS); err != nil {
		return fmt.Errorf("starttls: %w", err)
	}
	if err := netSMTPTransaction(c, from, to, msg); err != nil {
		return err
	}
	return c.Quit()
}

// netSMTPDial connects net/smtp's client to a listener, naming the node's
// hostname (used by STARTTLS and PlainAuth's host check), and says EHLO.
func netSMTPDial(n *node, listener string) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", n.addr(listener), ioTimeout)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		conn.Close()
		return nil, err
	}
	c, err := smtp.NewClient(conn, n.hostname)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := c.Hello("client.e2e.test"); err != nil {
		c.Close()
		return nil, fmt.Errorf("ehlo: %w", err)
	}
	return c, nil
}

// netSMTPTransaction runs MAIL, RCPT..., DATA on a net/smtp client.
func netSMTPTransaction(c *smtp.Client, from string, to []string, msg []byte) error {
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("mail from: %w", err)
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return fmt.Errorf("rcpt to %s: %w", rcpt, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("data write: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	return nil
}

// rawConn is a line-oriented connection for checks a client library
// cannot express.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// dialRaw connects to a listener; with tlsCfg the connection is TLS from
// the start (implicit-TLS ports).
func dialRaw(t testing.TB, addr string, tlsCfg *tls.Config) *rawConn {
	t.Helper()
	return dialRawFrom(t, nil, addr, tlsCfg)
}

// dialRawFrom is dialRaw from a given local address (nil: any).
func dialRawFrom(t testing.TB, local *net.TCPAddr, addr string, tlsCfg *tls.Config) *rawConn {
	t.Helper()
	var conn net.Conn
	var err error
	d := &net.Dialer{Timeout: ioTimeout}
	if local != nil {
		d.LocalAddr = local
	}
	if tlsCfg != nil {
		conn, err = tls.DialWithDialer(d, "tcp", addr, tlsCfg)
	} else {
		conn, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// line reads one line without its CRLF.
func (c *rawConn) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// send writes one line followed by CRLF.
func (c *rawConn) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// smtpReply reads a (possibly multi-line) SMTP reply and returns its
// lines.
func (c *rawConn) smtpReply() []string {
	c.t.Helper()
	var lines []string
	for {
		l := c.line()
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// imapTagged reads IMAP lines until the one tagged tag and returns every
// line read, the tagged one last.
func (c *rawConn) imapTagged(tag string) []string {
	c.t.Helper()
	var lines []string
	for {
		l := c.line()
		lines = append(lines, l)
		if strings.HasPrefix(l, tag+" ") {
			return lines
		}
	}
}

// --- IMAP ---

// imapDialTLS connects to the IMAPS listener and logs in with
// AUTHENTICATE PLAIN. Handler may be nil.
func imapDialTLS(t testing.TB, n *node, user, password string, handler *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialTLS(n.addr("imaps"), &imapclient.Options{TLSConfig: n.clientTLS, UnilateralDataHandler: handler})
	if err != nil {
		t.Fatalf("imaps dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Authenticate(sasl.NewPlainClient("", user, password)); err != nil {
		t.Fatalf("imaps AUTHENTICATE PLAIN %s: %v", user, err)
	}
	return c
}

// imapDialStartTLS connects to the IMAP listener, upgrades with STARTTLS
// and logs in with LOGIN.
func imapDialStartTLS(t testing.TB, n *node, user, password string, handler *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialStartTLS(n.addr("imap"), &imapclient.Options{TLSConfig: n.clientTLS, UnilateralDataHandler: handler})
	if err != nil {
		t.Fatalf("imap dial with STARTTLS: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, password).Wait(); err != nil {
		t.Fatalf("imap LOGIN %s: %v", user, err)
	}
	return c
}

// selectBox selects (or examines) a mailbox.
func selectBox(t testing.TB, c *imapclient.Client, name string, readOnly bool) *imap.SelectData {
	t.Helper()
	d, err := c.Select(name, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", name, err)
	}
	return d
}

// fetchAll fetches items for every message of the selected mailbox.
func fetchAll(t testing.TB, c *imapclient.Client, opts *imap.FetchOptions) []*imapclient.FetchMessageBuffer {
	t.Helper()
	var all imap.SeqSet
	all.AddRange(1, 0)
	msgs, err := c.Fetch(all, opts).Collect()
	if err != nil {
		t.Fatalf("fetch 1:*: %v", err)
	}
	return msgs
}

// subjects fetches the envelope subject of every message of the
// selected mailbox, in sequence order.
func subjects(t testing.TB, c *imapclient.Client) []string {
	t.Helper()
	// Not c.Mailbox(): go-imap's client ends a SELECT's Wait before it
	// records the selected mailbox, so right after selectBox it may still
	// be nil (an empty answer that is the test's, not the server's).
	res, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		t.Fatalf("UID SEARCH ALL: %v", err)
	}
	uids := res.AllUIDs()
	if len(uids) == 0 {
		return nil
	}
	msgs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, Envelope: true}).Collect()
	if err != nil {
		t.Fatalf("UID FETCH ENVELOPE: %v", err)
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].UID < msgs[j].UID })
	var out []string
	for _, m := range msgs {
		out = append(out, m.Envelope.Subject)
	}
	return out
}

// --- POP3 (Python poplib) ---

// pop3Result is the outcome of one step of testdata/pop3client.py.
type pop3Result struct {
	OK     bool                `json:"ok"`
	Error  string              `json:"error"`
	Resp   string              `json:"resp"`
	Lines  []string            `json:"lines"`
	Octets int                 `json:"octets"`
	Count  int                 `json:"count"`
	Size   int                 `json:"size"`
	Capa   map[string][]string `json:"capa"`
}

// pop3Session is what one run of the script returns.
type pop3Session struct {
	Greeting string       `json:"greeting"`
	Results  []pop3Result `json:"results"`
	// Steps are the steps that were run, for failure messages.
	Steps [][]any `json:"-"`
}

// python3 returns the interpreter, skipping the test when it is missing
// unless MAILCLUSTER_REQUIRE_PYTHON is set.
func python3(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("MAILCLUSTER_REQUIRE_PYTHON") != "" {
			t.Fatalf("python3 is required (MAILCLUSTER_REQUIRE_PYTHON is set): %v", err)
		}
		t.Skip("python3 not installed; set MAILCLUSTER_REQUIRE_PYTHON=1 to make this a failure")
	}
	return p
}

// pop3Run runs the steps in one POP3 session with poplib. mode is
// "stls" (the pop3 listener, upgraded with STLS as the first step the
// caller gives), "implicit" (pop3s) or "none" (pop3 without TLS).
func pop3Run(t testing.TB, n *node, mode string, steps ...[]any) pop3Session {
	t.Helper()
	py := python3(t)
	listener := "pop3"
	if mode == "implicit" {
		listener = "pop3s"
	}
	host, port, err := net.SplitHostPort(n.addr(listener))
	if err != nil {
		t.Fatal(err)
	}
	prog, err := json.Marshal(map[string]any{
		"ip": host, "port": port, "servername": n.hostname, "tls": mode,
		"cafile": n.data + "/tls/cert.pem", "steps": steps,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/pop3client.py")
	cmd.Stdin = bytes.NewReader(prog)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pop3client.py: %v\n%s", err, stderr.String())
	}
	var s pop3Session
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("pop3client.py output: %v: %s", err, stdout.String())
	}
	if len(s.Results) != len(steps) {
		t.Fatalf("pop3client.py: %d results for %d steps", len(s.Results), len(steps))
	}
	s.Steps = steps
	return s
}

// step builds one POP3 step.
func step(op string, args ...any) []any { return append([]any{op}, args...) }

// mustOK fails the test unless every result of the session is +OK.
func (s pop3Session) mustOK(t testing.TB) pop3Session {
	t.Helper()
	for i, r := range s.Results {
		if !r.OK {
			t.Fatalf("POP3 step %v: %s", s.Steps[i], r.Error)
		}
	}
	return s
}
