package outbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// testZones: remote.test has an MX on loopback, aonly.test only an
// address, noplace.test a null MX.
func testZones() map[string]string {
	return map[string]string{
		"remote.test":  dnstest.ZoneFile("remote.test", "@ IN MX 10 mx.remote.test.", "@ IN MX 20 mx2.remote.test.", "mx IN A 127.0.0.1", "mx2 IN A 127.0.0.1"),
		"aonly.test":   dnstest.ZoneFile("aonly.test", "@ IN A 127.0.0.1"),
		"noplace.test": dnstest.ZoneFile("noplace.test", "@ IN MX 0 .", "@ IN A 127.0.0.1"),
	}
}

// testDeliverer is a Deliverer with no queue, for its per-destination
// parts, resolving through a real NSD and sending to port.
func testDeliverer(t *testing.T, port int, policy func(ctx context.Context, domain, mx string) TLSPolicy) *Deliverer {
	t.Helper()
	dns := dnstest.StartNSD(t, testZones())
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dns)
	}}
	cfg := Config{Hostname: "out.example.test", Resolver: r, Port: port, TLSPolicy: policy}
	cfg.defaults()
	return &Deliverer{cfg: cfg, log: slog.New(slog.DiscardHandler)}
}

func TestRoute(t *testing.T) {
	d := testDeliverer(t, 25, nil)
	ctx := context.Background()
	hosts, f := d.route(ctx, "remote.test")
	if f != nil || strings.Join(hosts, ",") != "mx.remote.test,mx2.remote.test" {
		t.Fatalf("remote.test: %v %+v, want both MX hosts by preference", hosts, f)
	}
	hosts, f = d.route(ctx, "aonly.test")
	if f != nil || len(hosts) != 1 || hosts[0] != "aonly.test" {
		t.Fatalf("aonly.test: %v %+v, want the implicit MX", hosts, f)
	}
	_, f = d.route(ctx, "noplace.test")
	if f == nil || !f.permanent || f.enhanced != "5.1.10" || f.code != 556 {
		t.Fatalf("null MX: %+v, want permanent 556 5.1.10", f)
	}
	_, f = d.route(ctx, "nowhere.remote.test")
	if f == nil || !f.permanent || f.enhanced != "5.1.2" {
		t.Fatalf("missing domain: %+v, want permanent 5.1.2", f)
	}
}

// tlsBackend is a go-smtp server backend that records what it received
// and whether over TLS.
type tlsBackend struct {
	mu    sync.Mutex
	msgs  []string
	tls   []bool
	rcpts []string
	// requireTLS is MAIL FROM's REQUIRETLS of each message received.
	requireTLS []bool
}

func (b *tlsBackend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &tlsSession{b: b, tls: isTLS}, nil
}

type tlsSession struct {
	b          *tlsBackend
	tls        bool
	requireTLS bool
}

func (s *tlsSession) Reset()        {}
func (s *tlsSession) Logout() error { return nil }
func (s *tlsSession) Mail(_ string, opts *gosmtp.MailOptions) error {
	s.requireTLS = opts != nil && opts.RequireTLS
	return nil
}
func (s *tlsSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if strings.HasPrefix(to, "unknown@") {
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.b.mu.Lock()
	s.b.rcpts = append(s.b.rcpts, to)
	s.b.mu.Unlock()
	return nil
}
func (s *tlsSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, string(b))
	s.b.tls = append(s.b.tls, s.tls)
	s.b.requireTLS = append(s.b.requireTLS, s.requireTLS)
	s.b.mu.Unlock()
	return nil
}

// startTLSServer runs go-smtp's server with STARTTLS on a loopback
// port; its certificate is for mx.remote.test.
func startTLSServer(t *testing.T) (*tlsBackend, int) {
	be, port, _ := startTLSServerCert(t)
	return be, port
}

func startTLSServerCert(t *testing.T) (*tlsBackend, int, []byte) {
	t.Helper()
	return startTLSServerOpts(t, false)
}

// startTLSServerOpts is startTLSServerCert with the server's REQUIRETLS
// (RFC 8689) support chosen.
func startTLSServerOpts(t *testing.T, requireTLS bool) (*tlsBackend, int, []byte) {
	t.Helper()
	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"mx.remote.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	be := &tlsBackend{}
	srv := gosmtp.NewServer(be)
	srv.Domain = "mx.remote.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.EnableREQUIRETLS = requireTLS
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return be, ln.Addr().(*net.TCPAddr).Port, certPEM
}

// TestTLSPolicyVerifyAndRefuse: a policy that verifies delivers only to
// an MX whose certificate checks out (never falling back to cleartext),
// and a refused MX is not contacted.
func TestTLSPolicyVerifyAndRefuse(t *testing.T) {
	be, port, certPEM := startTLSServerCert(t)
	verify := func(context.Context, string, string) TLSPolicy { return TLSPolicy{Require: true, Verify: true} }
	d := testDeliverer(t, port, verify)
	ctx := context.Background()
	st := schema.OutboundState{From: "a@example.test"}
	msg := unsigned([]byte("Subject: verified\r\n\r\nbody\r\n"))
	// Not signed by a root we trust: deferred.
	res := d.sendDomain(ctx, d.log, "remote.test", st, []string{"bob@remote.test"}, msg)
	if res[0].status != schema.RecipientQueued || !strings.HasPrefix(res[0].enhanced, "4.7.") {
		t.Fatalf("unverified certificate: %+v, want deferred 4.7.x", res[0])
	}
	be.mu.Lock()
	n := len(be.msgs)
	be.mu.Unlock()
	if n != 0 {
		t.Fatal("message sent although the certificate did not verify")
	}
	// Trusted: delivered over TLS.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	d.cfg.RootCAs = roots
	res = d.sendDomain(ctx, d.log, "remote.test", st, []string{"bob@remote.test"}, msg)
	if res[0].status != schema.RecipientDelivered {
		t.Fatalf("verified certificate: %+v, want delivered", res[0])
	}
	// A refused MX is skipped; with none left the recipient waits.
	d.cfg.TLSPolicy = func(_ context.Context, _, mx string) TLSPolicy { return TLSPolicy{Refuse: "not in the MTA-STS policy"} }
	res = d.sendDomain(ctx, d.log, "remote.test", st, []string{"bob@remote.test"}, msg)
	if res[0].status != schema.RecipientQueued || res[0].enhanced != "4.7.5" || !strings.Contains(res[0].reply, "MTA-STS") {
		t.Fatalf("refused MX: %+v, want deferred 4.7.5", res[0])
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.msgs) != 1 || !be.tls[0] {
		t.Fatalf("server got %d messages (tls %v), want the verified one", len(be.msgs), be.tls)
	}
}

func TestSendDomainUsesSTARTTLSWhenOffered(t *testing.T) {
	be, port := startTLSServer(t)
	d := testDeliverer(t, port, nil)
	st := schema.OutboundState{From: "alice@example.test"}
	msg := []byte("From: <alice@example.test>\r\nSubject: tls\r\n\r\nbody\r\n")
	res := d.sendDomain(context.Background(), d.log, "remote.test", st, []string{"bob@remote.test", "unknown@remote.test"}, unsigned(msg))
	if len(res) != 2 {
		t.Fatalf("results %+v", res)
	}
	byAddr := map[string]rcptResult{}
	for _, r := range res {
		byAddr[r.addr] = r
	}
	if r := byAddr["bob@remote.test"]; r.status != schema.RecipientDelivered || r.remote != "mx.remote.test" {
		t.Errorf("bob: %+v, want delivered", r)
	}
	if r := byAddr["unknown@remote.test"]; r.status != schema.RecipientFailed || r.code != 550 || r.enhanced != "5.1.1" {
		t.Errorf("unknown: %+v, want failed 550 5.1.1", r)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.msgs) != 1 || !be.tls[0] || !strings.Contains(be.msgs[0], "Subject: tls") {
		t.Fatalf("server got %d messages, tls %v", len(be.msgs), be.tls)
	}
}

func TestSendDomainPolicyAndExtensions(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port, "-8") // no STARTTLS (smtp-sink has none), no 8BITMIME
	ctx := context.Background()
	rcpts := []string{"bob@remote.test"}
	msg := []byte("Subject: x\r\n\r\nbody\r\n")

	// A policy that requires TLS refuses the cleartext MX: a temporary
	// failure, retried later.
	d := testDeliverer(t, port, func(context.Context, string, string) TLSPolicy { return TLSPolicy{Require: true} })
	res := d.sendDomain(ctx, d.log, "remote.test", schema.OutboundState{From: "a@example.test"}, rcpts, unsigned(msg))
	if res[0].status != schema.RecipientQueued || res[0].enhanced != "4.7.10" {
		t.Fatalf("required TLS: %+v, want deferred 4.7.10", res[0])
	}
	d.cfg.TLSPolicy = Opportunistic
	// RFC 6531: a message that needs SMTPUTF8 is not downgraded.
	res = d.sendDomain(ctx, d.log, "remote.test", schema.OutboundState{From: "a@example.test", UTF8: true}, rcpts, unsigned(msg))
	if res[0].status != schema.RecipientFailed || res[0].enhanced != "5.6.7" {
		t.Fatalf("SMTPUTF8: %+v, want failed 5.6.7", res[0])
	}
	// 8-bit data to a server without 8BITMIME is converted to 7-bit
	// (and signed as converted)...
	eight := []byte("Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n")
	out := unsigned(eight)
	out.sign = func(b []byte) []byte { return append([]byte("X-Signed: converted\r\n"), b...) }
	res = d.sendDomain(ctx, d.log, "remote.test", schema.OutboundState{From: "a@example.test", EightBit: true}, rcpts, out)
	if res[0].status != schema.RecipientDelivered {
		t.Fatalf("8-bit: %+v, want delivered after conversion", res[0])
	}
	got := sink.Messages(t)
	if len(got) != 1 || !strings.Contains(got[0], "X-Signed: converted") || !strings.Contains(got[0], "Content-Transfer-Encoding: quoted-printable") ||
		!strings.Contains(got[0], "Gr=C3=BC=C3=9Fe") || strings.Contains(got[0], "8bit") {
		t.Fatalf("converted message at the remote: %q", got)
	}
	// ... or returned when it cannot be (RFC 2046: message/* parts have
	// no other encoding).
	inner := []byte("Subject: x\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n")
	res = d.sendDomain(ctx, d.log, "remote.test", schema.OutboundState{From: "a@example.test", EightBit: true}, rcpts, unsigned(inner))
	if res[0].status != schema.RecipientFailed || res[0].enhanced != "5.6.3" {
		t.Fatalf("8-bit message/rfc822: %+v, want failed 5.6.3", res[0])
	}
	// Plain ASCII goes through in cleartext.
	res = d.sendDomain(ctx, d.log, "remote.test", schema.OutboundState{From: "a@example.test"}, rcpts, unsigned(msg))
	if res[0].status != schema.RecipientDelivered {
		t.Fatalf("ASCII: %+v, want delivered", res[0])
	}
}

func TestSendDomainNoAnswer(t *testing.T) {
	port := mtatest.FreePort(t) // nobody listens
	d := testDeliverer(t, port, nil)
	res := d.sendDomain(context.Background(), d.log, "remote.test", schema.OutboundState{From: "a@example.test"}, []string{"bob@remote.test"}, unsigned([]byte("x\r\n")))
	if res[0].status != schema.RecipientQueued || !strings.HasPrefix(res[0].enhanced, "4.") {
		t.Fatalf("no server: %+v, want deferred", res[0])
	}
}

func TestBuildReportIsAMultipartReport(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	msg := buildReport(reportInput{
		hostname: "mail.example.test", sender: "alice@example.test", entry: schema.NewID(), created: created, now: created.Add(time.Hour),
		rcpts: []schema.OutboundRecipient{
			{Address: "bob@remote.test", Status: schema.RecipientFailed, Code: 550, Enhanced: "5.1.1", Reply: "550 5.1.1 no such user", Remote: "mx.remote.test"},
			{Address: "ëve@remote.test", Status: schema.RecipientExpired, Enhanced: "4.4.7", Reply: "Message expired"},
		},
		header: []byte("From: <alice@example.test>\r\nSubject: hello\r\n\r\n"),
	})
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := e.Header.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content type %s %v", mt, params)
	}
	mr := e.MultipartReader()
	var types []string
	var status string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := p.Header.ContentType()
		types = append(types, ct)
		b, _ := io.ReadAll(p.Body)
		if ct == "message/delivery-status" {
			status = string(b)
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("parts %v", types)
	}
	for _, want := range []string{"Reporting-MTA: dns; mail.example.test", "Final-Recipient: rfc822; bob@remote.test", "Status: 5.1.1",
		"Diagnostic-Code: smtp; 550 5.1.1 no such user", "Final-Recipient: utf-8; ëve@remote.test", "Status: 5.4.7", "Action: failed"} {
		if !strings.Contains(status, want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, status)
		}
	}
}

func TestBackoffGrowsToHours(t *testing.T) {
	d := &Deliverer{cfg: Config{RetryBase: time.Minute}}
	want := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 4 * time.Hour}
	for i, w := range want {
		if got := d.backoff(i + 1); got != w {
			t.Errorf("after attempt %d: %s, want %s", i+1, got, w)
		}
	}
}

func FuzzRemoteReplies(f *testing.F) {
	f.Add(550, "5.1.1 no such user", "From: Alice <alice@example.test>\r\nSubject: x\r\n\r\n")
	f.Add(421, "", "From: =?utf-8?q?=C3=A9?= <a@b>\r\n\r\n")
	f.Fuzz(func(t *testing.T, code int, reply string, header string) {
		e := enhancedOf(code, reply)
		if strings.Count(e, ".") != 2 {
			t.Fatalf("enhanced %q", e)
		}
		s := sanitizeReply(reply)
		if len(s) > maxReply+4 || strings.ContainsAny(s, "\r\n") {
			t.Fatalf("sanitized %q", s)
		}
		_ = headerFromDomain([]byte(header))
		if se := replyError(code, reply); se.Code != code || len(se.Message) > len(reply) {
			t.Fatalf("replyError(%d, %q) = %+v", code, reply, se)
		}
	})
}

func TestDomainConnectionLimit(t *testing.T) {
	d := &Deliverer{cfg: Config{DomainConnections: 2}, domains: map[string]chan struct{}{}}
	ctx := context.Background()
	if !d.acquire(ctx, "remote.test") || !d.acquire(ctx, "remote.test") {
		t.Fatal("the first two connections must be allowed")
	}
	if !d.acquire(ctx, "other.test") {
		t.Fatal("another domain has its own limit")
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if d.acquire(short, "remote.test") {
		t.Fatal("a third connection to one domain was allowed")
	}
	d.releaseDomain("remote.test")
	if !d.acquire(ctx, "remote.test") {
		t.Fatal("a released slot was not given out again")
	}
	d.releaseDomain("remote.test")
	d.releaseDomain("remote.test")
	d.releaseDomain("other.test")
	if len(d.domains) != 0 {
		t.Fatalf("idle domains kept: %v", d.domains)
	}
}

// headerSigner signs by naming the domain it was asked for, so a test
// sees which domain delivery signs for and where the field goes.
type headerSigner struct{}

func (headerSigner) Sign(_ context.Context, domain string, msg []byte) ([]byte, error) {
	return []byte("X-Signed-For: " + domain + "\r\n"), nil
}

func TestSignPrependsFieldsForTheFromDomain(t *testing.T) {
	d := &Deliverer{cfg: Config{Signer: headerSigner{}}}
	e := schema.OutboundEntry{State: schema.OutboundState{From: "bounce@envelope.test"}}
	msg := []byte("Subject: x\r\nFrom: Alice <alice@Example.TEST>\r\n\r\nbody\r\n")
	got := d.sign(context.Background(), slog.New(slog.DiscardHandler), e, msg)
	if want := "X-Signed-For: example.test\r\n" + string(msg); string(got) != want {
		t.Fatalf("signed message %q, want %q", got, want)
	}
	// Without a From: field, the envelope sender's domain.
	got = d.sign(context.Background(), slog.New(slog.DiscardHandler), e, []byte("Subject: x\r\n\r\nbody\r\n"))
	if !strings.HasPrefix(string(got), "X-Signed-For: envelope.test\r\n") {
		t.Fatalf("signed message %q", got)
	}
	// No signer: unchanged.
	d.cfg.Signer = nil
	if got := d.sign(context.Background(), slog.New(slog.DiscardHandler), e, msg); !bytes.Equal(got, msg) {
		t.Fatalf("unsigned message changed: %q", got)
	}
}

// TestREQUIRETLS: a message submitted with REQUIRETLS (RFC 8689) is
// returned with 5.7.10, never sent, when the MX's certificate does not
// verify or the MX does not support REQUIRETLS, even under an
// opportunistic policy; a verified MX with REQUIRETLS gets it with the
// parameter. "TLS-Required: No" makes a refusing policy be ignored.
func TestREQUIRETLS(t *testing.T) {
	ctx := context.Background()
	rcpts := []string{"bob@remote.test"}
	msg := unsigned([]byte("Subject: requiretls\r\n\r\nbody\r\n"))
	st := schema.OutboundState{From: "a@example.test", RequireTLS: true}
	var reported []TLSResult

	// A server with REQUIRETLS whose certificate is not trusted.
	be, port, certPEM := startTLSServerOpts(t, true)
	d := testDeliverer(t, port, nil)
	d.cfg.OnTLS = func(_, _ string, p TLSPolicy, r TLSResult) {
		if p.Reason == ReasonREQUIRETLS {
			reported = append(reported, r)
		}
	}
	res := d.sendDomain(ctx, d.log, "remote.test", st, rcpts, msg)
	if res[0].status != schema.RecipientFailed || res[0].code != 550 || res[0].enhanced != "5.7.10" {
		t.Fatalf("untrusted certificate: %+v, want failed 550 5.7.10", res[0])
	}
	if len(reported) == 0 || reported[0].Failure != ResultNotTrusted {
		t.Errorf("TLS results %+v, want certificate-not-trusted", reported)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	d.cfg.RootCAs = roots
	res = d.sendDomain(ctx, d.log, "remote.test", st, rcpts, msg)
	if res[0].status != schema.RecipientDelivered {
		t.Fatalf("verified REQUIRETLS server: %+v, want delivered", res[0])
	}
	be.mu.Lock()
	if len(be.msgs) != 1 || !be.tls[0] || !be.requireTLS[0] {
		t.Errorf("server got %d messages (tls %v, REQUIRETLS %v), want one over TLS with REQUIRETLS", len(be.msgs), be.tls, be.requireTLS)
	}
	be.mu.Unlock()

	// A trusted server without REQUIRETLS.
	be2, port2, certPEM2 := startTLSServerOpts(t, false)
	d2 := testDeliverer(t, port2, nil)
	roots2 := x509.NewCertPool()
	roots2.AppendCertsFromPEM(certPEM2)
	d2.cfg.RootCAs = roots2
	res = d2.sendDomain(ctx, d2.log, "remote.test", st, rcpts, msg)
	if res[0].status != schema.RecipientFailed || res[0].enhanced != "5.7.10" || !strings.Contains(res[0].reply, "REQUIRETLS") {
		t.Fatalf("server without REQUIRETLS: %+v, want failed 5.7.10", res[0])
	}
	be2.mu.Lock()
	if len(be2.msgs) != 0 {
		t.Errorf("server without REQUIRETLS got %d messages", len(be2.msgs))
	}
	be2.mu.Unlock()

	// TLS-Required: No: the recipient domain's refusing policy is not
	// consulted; the operator's RequireTLS still is.
	d2.cfg.TLSPolicy = func(context.Context, string, string) TLSPolicy { return TLSPolicy{Refuse: "not in the MTA-STS policy"} }
	optional := schema.OutboundState{From: "a@example.test", TLSOptional: true}
	if res = d2.sendDomain(ctx, d2.log, "remote.test", optional, rcpts, msg); res[0].status != schema.RecipientDelivered {
		t.Fatalf("TLS-Required: No: %+v, want delivered", res[0])
	}
	if res = d2.sendDomain(ctx, d2.log, "remote.test", schema.OutboundState{From: "a@example.test"}, rcpts, msg); res[0].enhanced != "4.7.5" {
		t.Fatalf("without TLS-Required: No: %+v, want the policy's 4.7.5", res[0])
	}
}

// TestCertFailure: certificate verification errors map to RFC 8460
// result types.
func TestCertFailure(t *testing.T) {
	parse := func(validity time.Duration) *x509.Certificate {
		certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"mx.remote.test"}, validity)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	good, expired := parse(time.Hour), parse(-time.Minute)
	verify := func(c *x509.Certificate, trusted bool, name string) error {
		roots := x509.NewCertPool()
		if trusted {
			roots.AddCert(c)
		}
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: name})
		return err
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{verify(good, true, "other.remote.test"), ResultHostMismatch},
		{verify(good, false, "mx.remote.test"), ResultNotTrusted},
		{verify(expired, true, "mx.remote.test"), ResultCertificateExpired},
	} {
		if c.err == nil {
			t.Fatalf("verification passed, want %s", c.want)
		}
		if got := certFailure(c.err); got != c.want {
			t.Errorf("certFailure(%v) = %s, want %s", c.err, got, c.want)
		}
	}
	if err := verify(good, true, "mx.remote.test"); err != nil {
		t.Fatalf("good certificate: %v", err)
	}
}
