package node

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// policyServer serves MTA-STS policies over HTTPS on a loopback port,
// as mta-sts.DOMAIN for each domain of policies, with a self-signed
// certificate for those names. It returns the port and the certificate.
func policyServer(t *testing.T, policies map[string]string) (int, []byte) {
	t.Helper()
	var hosts []string
	for d := range policies {
		hosts = append(hosts, "mta-sts."+d)
	}
	certPEM, keyPEM, err := protocols.SelfSignedCertificate(hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := strings.Cut(r.Host, ":")
		p, ok := policies[strings.TrimPrefix(host, "mta-sts.")]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(p))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, certPEM
}

// stsZone is a zone whose MX mx.DOMAIN and policy host are loopback
// and which publishes an _mta-sts record (when sts).
func stsZone(domain string, sts bool) string {
	recs := []string{"@ IN MX 10 mx." + domain + ".", "mx IN A 127.0.0.1", "mta-sts IN A 127.0.0.1"}
	if sts {
		recs = append(recs, `_mta-sts IN TXT "v=STSv1; id=20250101T000000"`)
	}
	return dnstest.ZoneFile(domain, recs...)
}

// stsNode starts a node resolving through NSD with zones, delivering
// with outbound configuration o, with alice@example.test.
func stsNode(t *testing.T, zones map[string]string, o OutboundConfig) (*Node, Config) {
	t.Helper()
	dns := dnstest.StartNSD(t, zones)
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}
	o.RetryBase, o.Poll = 300*time.Millisecond, 200*time.Millisecond
	cfg.Outbound = o
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "alice@example.test", "alice-password"); err != nil {
		t.Fatal(err)
	}
	return n, cfg
}

// writeCAFile writes PEM certificates to a file for outbound.ca_file.
func writeCAFile(t *testing.T, pems ...[]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	var all []byte
	for _, p := range pems {
		all = append(all, p...)
	}
	if err := os.WriteFile(path, all, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// recipient returns the state of one recipient of the only queue entry.
func recipient(t *testing.T, n *Node, addr string) schema.OutboundRecipient {
	t.Helper()
	es := queueEntries(t, n)
	if len(es) != 1 {
		t.Fatalf("queue has %d entries, want 1", len(es))
	}
	for _, r := range es[0].State.Recipients {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("no recipient %s in %+v", addr, es[0].State)
	return schema.OutboundRecipient{}
}

// TestOutboundMTASTSEnforce: remote.test publishes an enforce-mode
// MTA-STS policy listing mx.remote.test, whose Postfix has a
// certificate the node trusts (outbound.ca_file): alice's message
// arrives there over verified TLS. strict.test's enforce-mode policy
// lists only mx.elsewhere.test, so its MX (which resolves, to the same
// Postfix) is never used and its recipient stays queued with 4.7.5.
func TestOutboundMTASTSEnforce(t *testing.T) {
	port := mtatest.FreePort(t)
	pf := mtatest.StartPostfix(t, port)
	stsPort, stsCert := policyServer(t, map[string]string{
		"remote.test": "version: STSv1\nmode: enforce\nmx: mx.remote.test\nmax_age: 86400\n",
		"strict.test": "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
	})
	n, cfg := stsNode(t, map[string]string{"remote.test": stsZone("remote.test", true), "strict.test": stsZone("strict.test", true)},
		OutboundConfig{Port: port, MTASTSPort: stsPort, CAFile: writeCAFile(t, pf.CertPEM, stsCert)})
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test", "eve@strict.test"}, "sts1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery to remote.test and a refusal of strict.test's MX", func() bool {
		es := queueEntries(t, n)
		if len(es) != 1 {
			return false
		}
		var delivered, refused bool
		for _, r := range es[0].State.Recipients {
			delivered = delivered || (r.Address == "bob@remote.test" && r.Status == schema.RecipientDelivered)
			refused = refused || (r.Address == "eve@strict.test" && r.Enhanced == "4.7.5")
		}
		return delivered && refused
	})
	waitFor(t, "the message in Postfix's Maildir", func() bool { return len(pf.Messages(t)) >= 1 })
	got := pf.Messages(t)
	if len(got) != 1 {
		t.Fatalf("Postfix got %d messages, want 1", len(got))
	}
	if !strings.Contains(got[0], "using TLS") || !strings.Contains(got[0], "Subject: sts1") {
		t.Errorf("Postfix's copy was not received over TLS:\n%s", got[0])
	}
	if strings.Contains(got[0], "eve@strict.test>") && strings.Contains(got[0], "for <eve@strict.test>") {
		t.Errorf("strict.test's recipient was sent to an MX its policy does not list:\n%s", got[0])
	}
	r := recipient(t, n, "eve@strict.test")
	if r.Status != schema.RecipientQueued || !strings.Contains(r.Reply, "not listed in the MTA-STS policy of strict.test") {
		t.Errorf("strict.test recipient %+v, want queued, refused by the policy", r)
	}
	if v := tlsCount(t, n, tlsPolicyEnforce, "success"); v < 1 {
		t.Errorf("mail_outbound_tls_total{policy=mta-sts-enforce,result=success} = %v, want >= 1", v)
	}
}

// TestOutboundMTASTSEnforceUntrusted: the same enforce-mode policy, but
// the node does not trust Postfix's certificate: nothing is sent, the
// recipient waits with a TLS failure, and the failure is counted as
// certificate-not-trusted (TLS-RPT's result type).
func TestOutboundMTASTSEnforceUntrusted(t *testing.T) {
	port := mtatest.FreePort(t)
	pf := mtatest.StartPostfix(t, port)
	stsPort, stsCert := policyServer(t, map[string]string{
		"remote.test": "version: STSv1\nmode: enforce\nmx: mx.remote.test\nmax_age: 86400\n",
	})
	n, cfg := stsNode(t, map[string]string{"remote.test": stsZone("remote.test", true)},
		OutboundConfig{Port: port, MTASTSPort: stsPort, CAFile: writeCAFile(t, stsCert)})
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "sts2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a TLS failure", func() bool {
		es := queueEntries(t, n)
		return len(es) == 1 && es[0].State.Recipients[0].Enhanced == "4.7.0"
	})
	if r := recipient(t, n, "bob@remote.test"); r.Status != schema.RecipientQueued {
		t.Errorf("recipient %+v, want queued", r)
	}
	if got := pf.Messages(t); len(got) != 0 {
		t.Fatalf("Postfix got %d messages over unverified TLS", len(got))
	}
	if v := tlsCount(t, n, tlsPolicyEnforce, "certificate-not-trusted"); v < 1 {
		t.Errorf("certificate-not-trusted counted %v, want >= 1", v)
	}
}

// TestOutboundRequireTLS: with outbound.require_tls, a destination
// whose MX (smtp-sink) offers no STARTTLS gets nothing; the recipient
// waits with 4.7.10. Without MTA-STS, the same setup delivers in
// cleartext (TestOutboundDeliversToRemoteMTA).
func TestOutboundRequireTLS(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := stsNode(t, map[string]string{"remote.test": stsZone("remote.test", false)}, OutboundConfig{Port: port, RequireTLS: true})
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "reqtls1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a deferral for missing STARTTLS", func() bool {
		es := queueEntries(t, n)
		return len(es) == 1 && es[0].State.Recipients[0].Enhanced == "4.7.10"
	})
	if r := recipient(t, n, "bob@remote.test"); r.Status != schema.RecipientQueued {
		t.Errorf("recipient %+v, want queued", r)
	}
	if got := sink.Messages(t); len(got) != 0 {
		t.Fatalf("sink got %d messages in cleartext", len(got))
	}
	if v := tlsCount(t, n, tlsPolicyRequireTLS, "starttls-not-supported"); v < 1 {
		t.Errorf("starttls-not-supported counted %v, want >= 1", v)
	}
}

// tlsCount reads mail_outbound_tls_total{policy, result}.
func tlsCount(t *testing.T, n *Node, policy, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := n.outboundTLS().WithLabelValues(policy, result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestOutboundMTASTSTesting: a testing-mode policy that does not list
// the MX, whose certificate the node does not trust, changes nothing
// for delivery (RFC 8461 section 5: report only) but both failures are
// counted for TLS-RPT.
func TestOutboundMTASTSTesting(t *testing.T) {
	port := mtatest.FreePort(t)
	pf := mtatest.StartPostfix(t, port)
	stsPort, stsCert := policyServer(t, map[string]string{
		"remote.test": "version: STSv1\nmode: testing\nmx: mx.elsewhere.test\nmax_age: 86400\n",
	})
	n, cfg := stsNode(t, map[string]string{"remote.test": stsZone("remote.test", true)},
		OutboundConfig{Port: port, MTASTSPort: stsPort, CAFile: writeCAFile(t, stsCert)})
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "sts3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	if r := recipient(t, n, "bob@remote.test"); r.Status != schema.RecipientDelivered {
		t.Fatalf("recipient %+v, want delivered", r)
	}
	waitFor(t, "the message in Postfix's Maildir", func() bool { return len(pf.Messages(t)) == 1 })
	if v := tlsCount(t, n, tlsPolicyTesting, "validation-failure"); v < 1 {
		t.Errorf("testing-mode MX mismatches counted %v, want >= 1", v)
	}
	if v := tlsCount(t, n, tlsPolicyTesting, "certificate-not-trusted"); v < 1 {
		t.Errorf("testing-mode untrusted certificates counted %v, want >= 1", v)
	}
}

// TestOutboundREQUIRETLS: submission advertises REQUIRETLS (RFC 8689);
// a message sent with it is queued with the flag and, as the remote MX
// (smtp-sink) has no TLS, returned to the sender with 5.7.10 without
// being sent.
func TestOutboundREQUIRETLS(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := stsNode(t, map[string]string{"remote.test": stsZone("remote.test", false)}, OutboundConfig{Port: port})
	c, err := gosmtp.DialStartTLS(n.Addr(ListenSubmission).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		t.Fatal("submission does not advertise REQUIRETLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "alice-password")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.test", &gosmtp.MailOptions{RequireTLS: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@remote.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: <alice@example.test>\r\nTo: <bob@remote.test>\r\nSubject: reqtls2\r\nMessage-ID: <reqtls2@example.test>\r\n\r\nsecret\r\n"
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if es := queueEntries(t, n); len(es) != 1 || !es[0].State.RequireTLS {
		t.Fatalf("queue %+v, want one entry with REQUIRETLS", es)
	}
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	if r := recipient(t, n, "bob@remote.test"); r.Status != schema.RecipientFailed || r.Enhanced != "5.7.10" {
		t.Fatalf("recipient %+v, want failed 5.7.10", r)
	}
	msgs := inbox(t, n)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "Status: 5.7.10") {
		t.Fatalf("sender's INBOX %q, want one DSN with 5.7.10", msgs)
	}
	if got := sink.Messages(t); len(got) != 0 {
		t.Fatalf("sink got %d messages without TLS", len(got))
	}
}

// TestREQUIRETLSNeedsTLS: the MX port refuses REQUIRETLS on a cleartext
// connection (RFC 8689 section 4.1) with 530 5.7.10; a submitted
// message with "TLS-Required: No" is queued marked so.
func TestREQUIRETLSNeedsTLS(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := stsNode(t, map[string]string{"remote.test": stsZone("remote.test", false)}, OutboundConfig{Port: port})
	conn, err := net.DialTimeout("tcp", n.Addr(ListenSMTP).String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	if err := tp.PrintfLine("EHLO client.test"); err != nil {
		t.Fatal(err)
	}
	_, ehlo, err := tp.ReadResponse(250)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ehlo, "REQUIRETLS") {
		t.Errorf("REQUIRETLS advertised without TLS:\n%s", ehlo)
	}
	if err := tp.PrintfLine("MAIL FROM:<x@remote.test> REQUIRETLS"); err != nil {
		t.Fatal(err)
	}
	if code, msg, err := tp.ReadResponse(250); code != 530 || !strings.HasPrefix(msg, "5.7.10") {
		t.Fatalf("MAIL REQUIRETLS without TLS: %d %s (%v), want 530 5.7.10", code, msg, err)
	}

	c, err := gosmtp.DialStartTLS(n.Addr(ListenSubmission).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "alice-password")); err != nil {
		t.Fatal(err)
	}
	msg := "From: <alice@example.test>\r\nTo: <bob@remote.test>\r\nTLS-Required: No\r\nSubject: optional1\r\nMessage-ID: <optional1@example.test>\r\n\r\nplease deliver anyway\r\n"
	if err := c.SendMail("alice@example.test", []string{"bob@remote.test"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	if es := queueEntries(t, n); len(es) != 1 || !es[0].State.TLSOptional || es[0].State.RequireTLS {
		t.Fatalf("queue %+v, want one entry marked TLS-Required: No", es)
	}
	waitFor(t, "the message at the sink", func() bool { return len(sink.Messages(t)) == 1 })
}
