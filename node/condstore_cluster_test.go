package node

import (
	"bufio"
	"compress/flate"
	"crypto/tls"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// imapLines is a hand-driven IMAP connection, for what go-imap's client
// cannot send (QRESYNC).
type imapLines struct {
	t    *testing.T
	conn *tls.Conn
	r    *bufio.Reader
	tag  int
	// zw, once COMPRESS=DEFLATE is on, compresses what is sent.
	zw *flate.Writer
}

// write sends raw bytes, compressed once COMPRESS is on.
func (c *imapLines) write(b []byte) error {
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if c.zw == nil {
		_, err := c.conn.Write(b)
		return err
	}
	if _, err := c.zw.Write(b); err != nil {
		return err
	}
	return c.zw.Flush()
}

// compress runs COMPRESS DEFLATE (RFC 4978) and compresses both
// directions from then on.
func (c *imapLines) compress() {
	c.t.Helper()
	c.ok("COMPRESS DEFLATE")
	if c.r.Buffered() > 0 {
		c.t.Fatal("data after COMPRESS's OK came uncompressed")
	}
	c.r = bufio.NewReader(flate.NewReader(c.conn))
	zw, err := flate.NewWriter(c.conn, flate.DefaultCompression)
	if err != nil {
		c.t.Fatal(err)
	}
	c.zw = zw
}

// cmd sends a command and returns its untagged lines and tagged status.
func (c *imapLines) cmd(command string) ([]string, string) {
	c.t.Helper()
	c.tag++
	tag := "Q" + strconv.Itoa(c.tag)
	if err := c.write([]byte(tag + " " + command + "\r\n")); err != nil {
		c.t.Fatalf("%s: %v", command, err)
	}
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	var untagged []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("%s: %v", command, err)
		}
		l = strings.TrimRight(l, "\r\n")
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return untagged, rest
		}
		untagged = append(untagged, l)
	}
}

func (c *imapLines) ok(command string) []string {
	c.t.Helper()
	untagged, status := c.cmd(command)
	if !strings.HasPrefix(status, "OK") {
		c.t.Fatalf("%s: %s", command, status)
	}
	return untagged
}

// line reads one response line, without its CRLF.
func (c *imapLines) line() string {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

// send writes a raw line (CRLF added).
func (c *imapLines) send(s string) {
	c.t.Helper()
	if err := c.write([]byte(s + "\r\n")); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
}

// codeNumber returns the number of the first "[CODE n]" in lines.
func codeNumber(t *testing.T, lines []string, code string) uint64 {
	t.Helper()
	re := regexp.MustCompile(`\[` + code + ` (\d+)\]`)
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in %q", code, lines)
	return 0
}

// imapCluster is two nodes sharing one user, for clients that sync on
// one node while another changes the mailbox on the other.
type imapCluster struct {
	n1, n2         *Node
	cfg1, cfg2     Config
	user, password string
}

// startIMAPCluster starts two joined nodes and adds a user.
func startIMAPCluster(t *testing.T, user, password string) *imapCluster {
	t.Helper()
	const token = "imap-cluster-bootstrap-token-0123456789"
	cfg1 := testConfig(t)
	cfg1.NodeID = "n1"
	cfg1.Cluster.Listen = freeClusterAddr(t)
	cfg1.Cluster.BootstrapToken = token
	n1 := startNode(t, cfg1)
	cfg2 := testConfig(t)
	cfg2.NodeID = "n2"
	cfg2.Cluster.Listen = freeClusterAddr(t)
	cfg2.Cluster.Join = cfg1.Cluster.Listen
	cfg2.Cluster.Token = token
	n2 := startNode(t, cfg2)
	mustCLI(t, "", "domain", "add", "--data", cfg1.DataDir, "example.test")
	mustCLI(t, password+"\n", "user", "add", "--data", cfg1.DataDir, user)
	return &imapCluster{n1: n1, n2: n2, cfg1: cfg1, cfg2: cfg2, user: user, password: password}
}

// dialLines opens a hand-driven IMAPS connection to n (greeting read).
func dialLines(t *testing.T, n *Node, cfg Config) *imapLines {
	t.Helper()
	conn, err := tls.Dial("tcp", n.Addr(ListenIMAPS).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &imapLines{t: t, conn: conn, r: bufio.NewReader(conn)}
	if g := c.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	return c
}

// loginLines logs the user in on n by hand, retrying while the user has
// not reached that node yet.
func (ic *imapCluster) loginLines(t *testing.T, n *Node, cfg Config) *imapLines {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := dialLines(t, n, cfg)
		if _, status := c.cmd(fmt.Sprintf("LOGIN %s %s", ic.user, ic.password)); strings.HasPrefix(status, "OK") {
			return c
		}
		c.conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("login kept failing")
		}
		time.Sleep(100 * time.Millisecond) // the user may not have reached n yet
	}
}

// TestQresyncAcrossNodes is a phone's sync against a two-node cluster:
// it syncs on the second node and goes away, a desktop client on the
// first node changes flags and expunges, and the phone, back on the
// second node, gets exactly the vanished UIDs and the changed flags with
// their MODSEQs through SELECT (QRESYNC ...).
func TestQresyncAcrossNodes(t *testing.T) {
	ic := startIMAPCluster(t, "erin@example.test", "erin-phone-pw")
	n1, cfg1, user, password := ic.n1, ic.cfg1, ic.user, ic.password

	desk, err := imapclient.DialTLS(n1.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: clientTLS(t, cfg1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { desk.Close() })
	if err := desk.Login(user, password).Wait(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		msg := fmt.Sprintf("From: a@example.test\r\nTo: %s\r\nSubject: m%d\r\n\r\nbody %d\r\n", user, i, i)
		app := desk.Append("INBOX", int64(len(msg)), nil)
		if _, err := app.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if err := app.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := app.Wait(); err != nil {
			t.Fatal(err)
		}
	}

	phoneLogin := func() *imapLines { return ic.loginLines(t, ic.n2, ic.cfg2) }
	number := func(lines []string, code string) uint64 {
		t.Helper()
		return codeNumber(t, lines, code)
	}

	phone := phoneLogin()
	phone.ok("ENABLE QRESYNC")
	sel := phone.ok("SELECT INBOX")
	uv, hms := number(sel, "UIDVALIDITY"), number(sel, "HIGHESTMODSEQ")
	phone.ok("LOGOUT")

	if _, err := desk.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := desk.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := desk.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := desk.Expunge().Close(); err != nil {
		t.Fatal(err)
	}

	phone = phoneLogin()
	phone.ok("ENABLE QRESYNC")
	lines := phone.ok(fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d 1:4))", uv, hms))
	var got []string
	for _, l := range lines {
		if strings.HasPrefix(l, "* VANISHED") || strings.Contains(l, " FETCH ") {
			got = append(got, l)
		}
	}
	if len(got) != 2 || got[0] != "* VANISHED (EARLIER) 2" ||
		!regexp.MustCompile(`^\* 1 FETCH \(UID 1 FLAGS \(\\Flagged( \\Recent)?\) MODSEQ \(\d+\)\)$`).MatchString(got[1]) {
		t.Fatalf("QRESYNC on n2 after changes on n1: %q (all %q)", got, lines)
	}
	if now := number(lines, "HIGHESTMODSEQ"); now <= hms {
		t.Fatalf("HIGHESTMODSEQ %d, was %d", now, hms)
	}
	// A conditional STORE on n2 against the MODSEQ the phone knew fails
	// for the message n1 changed.
	if _, status := phone.cmd(fmt.Sprintf("UID STORE 1,3 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Seen)", hms)); !strings.HasPrefix(status, "OK [MODIFIED 1]") {
		t.Fatalf("UNCHANGEDSINCE across nodes: %q", status)
	}
}
