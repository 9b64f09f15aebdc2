package protocols

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// ticketServer serves TLS with config and writes one byte after each
// handshake, which brings a TLS 1.3 client the session ticket sent
// before it.
func ticketServer(t *testing.T, config *tls.Config) string {
	t.Helper()
	return serveTLS(t, config, func(c net.Conn) {
		if _, err := c.Write([]byte{'x'}); err == nil {
			c.Read(make([]byte, 1)) // until the client hangs up
		}
	})
}

// newTicketNode returns the TLS settings of a node of the cluster whose
// master key is master, with a certificate of its own.
func newTicketNode(t *testing.T, master byte, roots *x509.CertPool) *tls.Config {
	t.Helper()
	cert, certPEM := testCertificate(t)
	roots.AppendCertsFromPEM(certPEM)
	key := make([]byte, 32)
	key[0] = master
	st, err := NewSessionTickets(key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DynamicTLSConfig(NewCertHolder(cert).GetCertificate)
	st.Install(cfg)
	return cfg
}

// TestSessionResumedOnAnotherNode: a TLS 1.3 session begun on one node
// resumes on another node of the same cluster (another process, another
// certificate, the same master key), and falls back to a full handshake
// on a node of another cluster; TLS 1.2 sessions resume only on the node
// that began them.
func TestSessionResumedOnAnotherNode(t *testing.T) {
	roots := x509.NewCertPool()
	n1 := ticketServer(t, newTicketNode(t, 1, roots))
	n2 := ticketServer(t, newTicketNode(t, 1, roots))
	other := ticketServer(t, newTicketNode(t, 2, roots))

	connect := func(addr string, client *tls.Config) bool {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, client)
		if err != nil {
			t.Fatalf("connect to %s: %v", addr, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("read from %s: %v", addr, err)
		}
		return c.ConnectionState().DidResume
	}
	client := func(maxVersion uint16) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: maxVersion,
			ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	}

	c := client(tls.VersionTLS13)
	if connect(n1, c) {
		t.Fatal("the first connection resumed a session")
	}
	if !connect(n2, c) {
		t.Error("TLS 1.3: a session begun on n1 did not resume on n2")
	}
	if !connect(n1, c) {
		t.Error("TLS 1.3: a session from n2 did not resume on n1")
	}
	if connect(other, c) {
		t.Error("TLS 1.3: a node of another cluster resumed the session")
	}

	c = client(tls.VersionTLS12)
	if connect(n1, c) {
		t.Fatal("TLS 1.2: the first connection resumed a session")
	}
	if !connect(n1, c) {
		t.Error("TLS 1.2: the session did not resume on the node that began it")
	}
	if connect(n2, c) {
		t.Error("TLS 1.2: a session resumed on another node; TLS 1.2 tickets must stay with their process")
	}
}

// TestSessionTicketRejectsForgeries: a ticket that is damaged, cut short,
// of another format version or another cluster opens to no session.
func TestSessionTicketRejectsForgeries(t *testing.T) {
	key := make([]byte, 32)
	st, err := NewSessionTickets(key)
	if err != nil {
		t.Fatal(err)
	}
	key[0] = 1
	other, err := NewSessionTickets(key)
	if err != nil {
		t.Fatal(err)
	}
	// A real session state, from a handshake with a node of st's.
	var got []byte
	roots := x509.NewCertPool()
	cfg := newTicketNode(t, 0, roots)
	wrap := cfg.WrapSession
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		b, err := wrap(cs, ss)
		got = append([]byte(nil), b...)
		return b, err
	}
	addr := ticketServer(t, cfg)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "localhost", ClientSessionCache: tls.NewLRUClientSessionCache(1)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got == nil {
		t.Fatal("no ticket was wrapped")
	}
	if st.unwrap(got) == nil {
		t.Fatal("the ticket itself did not open")
	}
	flipped := append([]byte(nil), got...)
	flipped[len(flipped)/2] ^= 1
	version := append([]byte(nil), got...)
	version[0] = ticketVersion + 1
	for name, ticket := range map[string][]byte{
		"damaged": flipped, "cut short": got[:len(got)-1], "version byte only": got[:1],
		"empty": nil, "another format version": version,
	} {
		if st.unwrap(ticket) != nil {
			t.Errorf("%s: opened to a session", name)
		}
	}
	if other.unwrap(got) != nil {
		t.Error("another cluster's key opened the ticket")
	}
}
