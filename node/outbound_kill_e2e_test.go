package node

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
)

// Modes of countingMTA.
const (
	mtaStall    = iota // DATA: the text is read, the reply waits for the test
	mtaTempFail        // RCPT: 451
	mtaAccept          // DATA: 250, counted
)

// countingMTA is a remote MTA on loopback (go-smtp's server) that counts
// the messages it accepted, per Subject.
type countingMTA struct {
	mu        sync.Mutex
	mode      int
	delivered map[string]int
	tempfails int
	stalled   chan struct{} // gets a value when a DATA stalls
	release   chan struct{} // closed to end stalled DATAs (with a 451)
}

func startCountingMTA(t *testing.T, mode int) (*countingMTA, int) {
	t.Helper()
	m := &countingMTA{mode: mode, delivered: map[string]int{}, stalled: make(chan struct{}, 8), release: make(chan struct{})}
	srv := gosmtp.NewServer(m)
	srv.Domain = "mx.remote.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		m.setMode(mtaAccept) // ends any stall
		srv.Close()
	})
	return m, ln.Addr().(*net.TCPAddr).Port
}

func (m *countingMTA) setMode(mode int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mode == mtaStall && mode != mtaStall {
		close(m.release)
	}
	m.mode = mode
}

func (m *countingMTA) count(subject string) (delivered, tempfails int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.delivered[subject], m.tempfails
}

func (m *countingMTA) NewSession(*gosmtp.Conn) (gosmtp.Session, error) {
	return &countingSession{m: m}, nil
}

type countingSession struct{ m *countingMTA }

func (s *countingSession) Reset()                                 {}
func (s *countingSession) Logout() error                          { return nil }
func (s *countingSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *countingSession) Rcpt(string, *gosmtp.RcptOptions) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.m.mode == mtaTempFail {
		s.m.tempfails++
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	return nil
}
func (s *countingSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	subject := ""
	for _, l := range strings.Split(string(b), "\r\n") {
		if v, ok := strings.CutPrefix(l, "Subject: "); ok {
			subject = v
			break
		}
	}
	s.m.mu.Lock()
	mode, release := s.m.mode, s.m.release
	s.m.mu.Unlock()
	if mode == mtaStall {
		select {
		case s.m.stalled <- struct{}{}:
		default: // the test has been told already
		}
		<-release
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "too late"}
	}
	s.m.mu.Lock()
	s.m.delivered[subject]++
	s.m.mu.Unlock()
	return nil
}

// kill ends the node with SIGKILL: no shutdown, no flushing.
func (n *e2eNode) kill(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		t.Fatal("mailnode did not die on SIGKILL")
	}
}

// TestOutboundQueueSurvivesKill: the real mailnode, its MX found
// through a real NSD, is killed with SIGKILL (a) while the remote MTA
// holds its reply to the message text and (b) while a recipient waits
// for a retry after a 451; after a restart each message reaches the
// remote, counted there exactly once (the stalled transaction of (a)
// was never acknowledged, so RFC 5321's duplicate window does not
// apply).
func TestOutboundQueueSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the mailnode binary")
	}
	bin := buildMailnode(t)
	dns := dnstest.StartNSD(t, outboundZones())
	mta, port := startCountingMTA(t, mtaStall)
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	cfgFile := filepath.Join(base, "mailnode.toml")
	conf := fmt.Sprintf(`hostname = "localhost"
node_id = "node1"
mail_shards = 2
[listen]
smtp = ""
submission = "127.0.0.1:0"
submissions = ""
imap = ""
imaps = ""
pop3 = ""
pop3s = ""
http = ""
https = ""
[cluster]
listen = "127.0.0.1:0"
[log]
format = "text"
[dns]
servers = [%q]
timeout = "2s"
[outbound]
port = %d
retry_base = "1s"
attempt_timeout = "3s"
`, dns, port)
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startMailnode(t, bin, cfgFile, dir)
	runMailnode(t, bin, "", "domain", "add", "--data", dir, "example.test")
	runMailnode(t, bin, "alice-password-1\n", "user", "add", "--data", dir, "alice@example.test")
	send := func(n *e2eNode, subject string) {
		t.Helper()
		c, err := gosmtp.DialStartTLS(n.status.Listeners[ListenSubmission], clientTLS(t, Config{DataDir: dir}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "alice-password-1")); err != nil {
			t.Fatal(err)
		}
		msg := "From: <alice@example.test>\r\nTo: <bob@remote.test>\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject + "@example.test>\r\n\r\nhello\r\n"
		if err := c.SendMail("alice@example.test", []string{"bob@remote.test"}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	waitDelivered := func(subject string) int {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if got, _ := mta.count(subject); got > 0 || time.Now().After(deadline) {
				return got
			}
			time.Sleep(50 * time.Millisecond) // polling the remote's count
		}
	}

	// (a) Killed mid-delivery: the remote has the text, the node waits
	// for the reply to the final dot.
	send(n, "killed-mid-data")
	select {
	case <-mta.stalled:
	case <-time.After(30 * time.Second):
		t.Fatalf("the node never reached DATA\n%s", n.logs.String())
	}
	n.kill(t)
	mta.setMode(mtaAccept) // the stalled transaction ends with a 451, unacknowledged
	n = startMailnode(t, bin, cfgFile, dir)
	if got := waitDelivered("killed-mid-data"); got != 1 {
		t.Fatalf("after a kill mid-DATA the remote counted %d copies, want 1\n%s", got, n.logs.String())
	}

	// (b) Killed in the retry wait: the remote answered 451 and the
	// node recorded it.
	mta.setMode(mtaTempFail)
	send(n, "killed-in-retry-wait")
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := runMailnode(t, bin, "", "queue", "list", "--json", "--data", dir)
		if strings.Contains(out, "try again later") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 451 recorded in the queue:\n%s\n%s", out, n.logs.String())
		}
		time.Sleep(100 * time.Millisecond) // polling the queue
	}
	n.kill(t)
	if got, tempfails := mta.count("killed-in-retry-wait"); got != 0 || tempfails == 0 {
		t.Fatalf("before the restart: %d delivered, %d 451s; want 0 and some", got, tempfails)
	}
	mta.setMode(mtaAccept)
	n = startMailnode(t, bin, cfgFile, dir)
	if got := waitDelivered("killed-in-retry-wait"); got != 1 {
		t.Fatalf("after a kill in the retry wait the remote counted %d copies, want 1\n%s", got, n.logs.String())
	}
	// Both entries are finished: nothing is sent again.
	deadline = time.Now().Add(30 * time.Second)
	for {
		out := runMailnode(t, bin, "", "queue", "list", "--json", "--data", dir)
		if strings.Count(out, `"finished"`) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue entries not finished:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond) // polling the queue
	}
	for _, s := range []string{"killed-mid-data", "killed-in-retry-wait"} {
		if got, _ := mta.count(s); got != 1 {
			t.Fatalf("%s: remote counted %d copies at the end, want 1", s, got)
		}
	}
}
