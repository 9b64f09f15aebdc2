//go:build compose

package composetest

import (
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// --- mail ---

// message is one test message, known by its Message-ID.
type message struct {
	id   string
	body []byte
}

func newMessage(seq int, kind string) message {
	id := fmt.Sprintf("%s-%d.%s@composetest.mailcluster.test", kind, seq, randomHex(6))
	body := fmt.Sprintf("From: <load@remote.test>\r\nTo: <%s>\r\nSubject: %s %d\r\nMessage-ID: <%s>\r\nDate: %s\r\n\r\nMessage %d of the compose test.\r\n",
		user, kind, seq, id, time.Now().UTC().Format(time.RFC1123Z), seq)
	return message{id: id, body: []byte(body)}
}

func (c *cluster) deliver(node string, m message) error {
	addr, err := c.hostAddr(node, portSMTP)
	if err != nil {
		return err
	}
	return sendMail(addr, c.tlsConfig(node), m)
}

// sendMail delivers m to the test user over an MX port with STARTTLS
// and returns nil only when the server acknowledged it (250 after DATA).
func sendMail(addr string, tlsCfg *tls.Config, m message) error {
	raw, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return err
	}
	conn := &boundedConn{Conn: raw, deadline: time.Now().Add(ioTimeout)}
	if err := conn.SetDeadline(conn.deadline); err != nil {
		raw.Close()
		return err
	}
	c, err := smtp.NewClientStartTLS(conn, tlsCfg)
	if err != nil {
		raw.Close()
		return fmt.Errorf("greeting or STARTTLS: %w", err)
	}
	defer c.Close()
	if err := c.Mail("load@remote.test", nil); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(user, nil); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(m.body); err != nil {
		return fmt.Errorf("DATA write: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	_ = c.Quit()
	return nil
}

// boundedConn keeps every deadline a client library sets within the
// session's own.
type boundedConn struct {
	net.Conn
	deadline time.Time
}

func (c *boundedConn) bound(t time.Time) time.Time {
	if t.IsZero() || t.After(c.deadline) {
		return c.deadline
	}
	return t
}

func (c *boundedConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.bound(t)) }
func (c *boundedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.bound(t))
}
func (c *boundedConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.bound(t))
}

// readMessageIDs logs in over a node's IMAPS port and counts the
// Message-IDs in INBOX.
func (c *cluster) readMessageIDs(node, password string) (map[string]int, error) {
	addr, err := c.hostAddr(node, portIMAPS)
	if err != nil {
		return nil, err
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, c.tlsConfig(node))
	if err != nil {
		return nil, fmt.Errorf("imaps %s: %w", node, err)
	}
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		conn.Close()
		return nil, err
	}
	ic := imapclient.New(conn, nil)
	defer ic.Close()
	if err := ic.Login(user, password).Wait(); err != nil {
		return nil, fmt.Errorf("imaps %s: LOGIN: %w", node, err)
	}
	sel, err := ic.Select("INBOX", nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("imaps %s: SELECT: %w", node, err)
	}
	ids := map[string]int{}
	if sel.NumMessages > 0 {
		var all imap.SeqSet
		all.AddRange(1, 0)
		msgs, err := ic.Fetch(all, &imap.FetchOptions{Envelope: true}).Collect()
		if err != nil {
			return nil, fmt.Errorf("imaps %s: FETCH: %w", node, err)
		}
		if len(msgs) != int(sel.NumMessages) {
			return nil, fmt.Errorf("imaps %s: FETCH 1:* returned %d of %d messages", node, len(msgs), sel.NumMessages)
		}
		for _, m := range msgs {
			if m.Envelope != nil {
				ids[m.Envelope.MessageID]++
			}
		}
	}
	_ = ic.Logout().Wait()
	return ids, nil
}

// checkMailbox reads INBOX through node (retrying while the cluster
// settles) and fails the test unless every acknowledged message is there
// exactly once and no message is there twice.
func (c *cluster) checkMailbox(node, password string, acked map[string]bool) {
	c.t.Helper()
	var got map[string]int
	waitFor(c.t, readTimeout, "read INBOX through "+node, func() (err error) {
		got, err = c.readMessageIDs(node, password)
		return err
	})
	var lost, dup []string
	extra := 0
	for id := range acked {
		switch got[id] {
		case 1:
		case 0:
			lost = append(lost, id)
		default:
			dup = append(dup, fmt.Sprintf("%s (%d times)", id, got[id]))
		}
	}
	for id, n := range got {
		if !acked[id] {
			extra++ // refused or cut off, but committed: allowed once
			if n > 1 {
				dup = append(dup, fmt.Sprintf("%s (%d times, not acknowledged)", id, n))
			}
		}
	}
	c.t.Logf("%s: %d acknowledged, %d found (%d of them not acknowledged: committed before the client saw the answer)",
		node, len(acked), len(got), extra)
	if len(lost) > 0 {
		slices.Sort(lost)
		c.t.Errorf("%d acknowledged message(s) missing through %s: %v", len(lost), node, lost)
	}
	if len(dup) > 0 {
		slices.Sort(dup)
		c.t.Errorf("duplicate message(s) through %s: %v", node, dup)
	}
	if c.t.Failed() {
		c.t.FailNow()
	}
}

// --- load ---

// target is an SMTP port a load worker delivers to.
type target struct {
	node, addr string
	tls        *tls.Config
}

// load delivers messages from several workers until stopped and records
// which ones were acknowledged.
type load struct {
	targets  []target
	next     atomic.Int64
	failures atomic.Int64
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup

	mu      sync.Mutex
	acked   map[string]bool
	lastErr error
}

func startLoad(targets []target, workers int) *load {
	l := &load{targets: targets, done: make(chan struct{}), acked: make(map[string]bool)}
	for range workers {
		l.wg.Add(1)
		go l.work()
	}
	return l
}

func (l *load) work() {
	defer l.wg.Done()
	for {
		select {
		case <-l.done:
			return
		default:
		}
		seq := l.next.Add(1)
		tg := l.targets[int(seq)%len(l.targets)]
		m := newMessage(int(seq), "load")
		if err := sendMail(tg.addr, tg.tls, m); err != nil {
			l.failures.Add(1)
			l.mu.Lock()
			l.lastErr = fmt.Errorf("%s: %w", tg.node, err)
			l.mu.Unlock()
			// A refused delivery is answered at once; do not spin on it.
			select {
			case <-l.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		l.mu.Lock()
		l.acked[m.id] = true
		l.mu.Unlock()
	}
}

// stop ends the load and waits for the workers (each session is bounded
// by ioTimeout).
func (l *load) stop() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}

func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *load) atLeast(n int) error {
	if got := l.ackedCount(); got < n {
		return fmt.Errorf("%d acknowledged, %d refused (last: %v)", got, l.failures.Load(), l.lastError())
	}
	return nil
}

func (l *load) ackedIDs() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.acked)
}

func (l *load) lastError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}
