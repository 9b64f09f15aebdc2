package mtasts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
)

// testCA makes a CA and a server certificate from it for names.
func testCA(t *testing.T, names ...string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mta-sts test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// servedDomains is a Domains of a fixed set.
type servedDomains map[string]bool

func (s servedDomains) HostsDomain(_ context.Context, d string) (bool, error) { return s[d], nil }

// policyServer serves policies by host name over HTTPS with a test CA:
// good.test through Handler, the others by hand, and counts requests.
type policyServer struct {
	srv  *httptest.Server
	pool *x509.CertPool
	port int

	mu       sync.Mutex
	requests map[string]int
	policy   Policy
	fail     atomic.Bool
}

func startPolicyServer(t *testing.T) *policyServer {
	t.Helper()
	ps := &policyServer{requests: map[string]int{},
		policy: Policy{Mode: ModeEnforce, MX: []string{"mx1.good.test", "*.pool.good.test"}, MaxAge: time.Hour}}
	var cert tls.Certificate
	ps.pool, cert = testCA(t, "mta-sts.good.test", "mta-sts.badtype.test", "mta-sts.redirect.test", "mta-sts.big.test",
		"mta-sts.garbage.test", "mta-sts.two.test")
	handler := Handler(func() Policy {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		return ps.policy
	}, servedDomains{"good.test": true}, nil)
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ps.mu.Lock()
		ps.requests[host]++
		ps.mu.Unlock()
		if r.URL.Path != PolicyPath {
			http.NotFound(w, r)
			return
		}
		switch host {
		case "mta-sts.good.test":
			if ps.fail.Load() {
				http.Error(w, "down", http.StatusInternalServerError)
				return
			}
			handler.ServeHTTP(w, r)
		case "mta-sts.badtype.test":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(ps.policy.Text()))
		case "mta-sts.redirect.test":
			http.Redirect(w, r, "https://mta-sts.good.test"+PolicyPath, http.StatusFound)
		case "mta-sts.big.test":
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(ps.policy.Text() + strings.Repeat("x: y\r\n", MaxPolicySize/6+10)))
		case "mta-sts.garbage.test":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("<html>not a policy</html>"))
		default:
			http.NotFound(w, r)
		}
	}))
	ps.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the wrong-certificate case fails handshakes
	ps.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	ps.port = ps.srv.Listener.Addr().(*net.TCPAddr).Port
	return ps
}

func (ps *policyServer) count(host string) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.requests[host]
}

// resolverFor returns a resolver asking the DNS server at addr.
func resolverFor(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestClientAgainstNSDAndHTTPS(t *testing.T) {
	ps := startPolicyServer(t)
	zone := dnstest.ZoneFile("test",
		`_mta-sts.good IN TXT "v=STSv1; id=one"`, "mta-sts.good IN A 127.0.0.1",
		`_mta-sts.badtype IN TXT "v=STSv1; id=1"`, "mta-sts.badtype IN A 127.0.0.1",
		`_mta-sts.redirect IN TXT "v=STSv1; id=1"`, "mta-sts.redirect IN A 127.0.0.1",
		`_mta-sts.big IN TXT "v=STSv1; id=1"`, "mta-sts.big IN A 127.0.0.1",
		`_mta-sts.garbage IN TXT "v=STSv1; id=1"`, "mta-sts.garbage IN A 127.0.0.1",
		`_mta-sts.wrongcert IN TXT "v=STSv1; id=1"`, "mta-sts.wrongcert IN A 127.0.0.1",
		`_mta-sts.two IN TXT "v=STSv1; id=1"`, `_mta-sts.two IN TXT "v=STSv1; id=2"`, "mta-sts.two IN A 127.0.0.1",
		`_mta-sts.other IN TXT "v=spf1 -all"`, `_mta-sts.other IN TXT "v=STSv10; id=1"`, "mta-sts.other IN A 127.0.0.1",
		`_mta-sts.badrecord IN TXT "v=STSv1; id=not-valid!"`,
		`_mta-sts.nohost IN TXT "v=STSv1; id=1"`,
	)
	dns := dnstest.StartNSD(t, map[string]string{"test": zone})
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := New(Config{Resolver: resolverFor(dns), RootCAs: ps.pool, Port: ps.port, FetchTimeout: 10 * time.Second,
		Recheck: time.Minute, Now: clock.Now})
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	p, err := c.Lookup(ctx, "Good.Test.")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeEnforce || p.ID != "one" || p.MaxAge != time.Hour || !p.Enforced() {
		t.Fatalf("policy %+v", p)
	}
	if !p.Allowed("mx1.good.test") || !p.Allowed("a.pool.good.test") || p.Allowed("mx2.good.test") || p.Allowed("evil.test") {
		t.Fatalf("mx matching of %v", p.MX)
	}
	if n := ps.count("mta-sts.good.test"); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}

	// Cached: within Recheck not even DNS; after it, the TXT id is the
	// same, so no fetch either, even when the served policy changed.
	ps.mu.Lock()
	ps.policy.Mode = ModeTesting
	ps.mu.Unlock()
	for _, step := range []time.Duration{0, 2 * time.Minute} {
		clock.Add(step)
		if p, err := c.Lookup(ctx, "good.test"); err != nil || p.Mode != ModeEnforce {
			t.Fatalf("cached lookup: %+v, %v", p, err)
		}
	}
	if n := ps.count("mta-sts.good.test"); n != 1 {
		t.Fatalf("%d fetches of a cached policy, want 1", n)
	}

	// A new id in DNS (here: the cached one was fetched under another)
	// fetches again.
	c.mu.Lock()
	c.cache["good.test"].policy.ID = "zero"
	c.mu.Unlock()
	clock.Add(2 * time.Minute)
	if p, err := c.Lookup(ctx, "good.test"); err != nil || p.Mode != ModeTesting || p.ID != "one" {
		t.Fatalf("after an id change: %+v, %v", p, err)
	}
	if n := ps.count("mta-sts.good.test"); n != 2 {
		t.Fatalf("%d fetches after an id change, want 2", n)
	}

	// A refresh that fails keeps the cached policy; once max_age has
	// passed and the fetch fails, there is no policy.
	ps.fail.Store(true)
	c.mu.Lock()
	c.cache["good.test"].policy.ID = "zero"
	c.mu.Unlock()
	clock.Add(2 * time.Minute)
	if p, err := c.Lookup(ctx, "good.test"); err != nil || p == nil || p.Mode != ModeTesting {
		t.Fatalf("failed refresh: %+v, %v", p, err)
	}
	clock.Add(2 * time.Hour)
	if p, err := c.Lookup(ctx, "good.test"); err == nil || p != nil {
		t.Fatalf("expired policy and a failing server: %+v, %v", p, err)
	}
	ps.fail.Store(false)
	if p, err := c.Lookup(ctx, "good.test"); err != nil || p == nil {
		t.Fatalf("server back: %+v, %v", p, err)
	}

	// No record, or no v=STSv1 record: no policy, no error.
	for _, d := range []string{"absent.test", "other.test"} {
		none, err := c.Lookup(ctx, d)
		if err != nil || none != nil {
			t.Errorf("%s: %+v, %v; want no policy", d, none, err)
		}
		if !none.Allowed("anything.test") || none.Enforced() {
			t.Errorf("%s: no policy refuses", d)
		}
	}
	goodFetches := ps.count("mta-sts.good.test")
	// Failures: no policy, and an error that says why.
	for d, want := range map[string]string{
		"badtype.test":   "media type",
		"redirect.test":  "status 302",
		"big.test":       "more than 65536 bytes",
		"garbage.test":   "no colon",
		"wrongcert.test": "certificate",
		"two.test":       "2 _mta-sts records",
		"badrecord.test": "id",
		"nohost.test":    "mta-sts.nohost.test",
	} {
		p, err := c.Lookup(ctx, d)
		if p != nil || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %+v, %v; want an error with %q", d, p, err, want)
		}
	}
	if n := ps.count("mta-sts.good.test"); n != goodFetches {
		t.Errorf("the redirect was followed (%d fetches of good.test)", n)
	}
}

func TestHandler(t *testing.T) {
	pol := Policy{Mode: ModeTesting, MX: []string{"a.example.org"}, MaxAge: time.Hour}
	h := Handler(func() Policy { return pol }, servedDomains{"example.org": true}, nil)
	for host, want := range map[string]int{
		"mta-sts.example.org":      200,
		"MTA-STS.Example.org.:443": 200,
		"mta-sts.other.test":       404,
		"example.org":              404,
		"mta-sts.":                 404,
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, PolicyPath, nil)
		req.Host = host
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: status %d, want %d", host, rec.Code, want)
			continue
		}
		if want == 200 {
			if ct := rec.Header().Get("Content-Type"); ct != "text/plain" {
				t.Errorf("content type %q", ct)
			}
			if p, err := Parse(rec.Body.Bytes()); err != nil || p.Mode != ModeTesting || p.MX[0] != "a.example.org" {
				t.Errorf("served %q: %v", rec.Body.String(), err)
			}
		}
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, PolicyPath, nil)
	req.Host = "mta-sts.example.org"
	Handler(func() Policy { return pol }, failingDomains{}, nil).ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("directory down: status %d", rec.Code)
	}
}

type failingDomains struct{}

func (failingDomains) HostsDomain(context.Context, string) (bool, error) {
	return false, errors.New("leader unreachable")
}
