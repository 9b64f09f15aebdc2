package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
)

// pebble is Let's Encrypt's ACME test server (Debian package pebble), run
// on loopback with pebble-challtestsrv as its DNS server, which answers
// every name with 127.0.0.1.
type pebble struct {
	directory string // ACME directory URL
	caFile    string // PEM certificate of pebble's own HTTPS listener
	mgmt      string // management API base URL
	client    *http.Client
}

// pebbleConfig says which ports pebble validates challenges on and how
// long the certificates it issues are valid.
type pebbleConfig struct {
	httpPort, tlsPort int
	validity          time.Duration
}

// requirePebble finds pebble and pebble-challtestsrv, or skips the test
// (fails it when MAILCLUSTER_REQUIRE_PEBBLE is set, as in CI).
func requirePebble(t *testing.T) (pebbleBin, challBin string) {
	t.Helper()
	var missing []string
	for _, bin := range []string{"pebble", "pebble-challtestsrv"} {
		p, err := exec.LookPath(bin)
		if err != nil {
			missing = append(missing, bin)
			continue
		}
		if bin == "pebble" {
			pebbleBin = p
		} else {
			challBin = p
		}
	}
	if len(missing) > 0 {
		if os.Getenv("MAILCLUSTER_REQUIRE_PEBBLE") != "" {
			t.Fatalf("%s required (MAILCLUSTER_REQUIRE_PEBBLE is set): apt-get install pebble", strings.Join(missing, ", "))
		}
		t.Skipf("%s not installed (Debian package pebble); set MAILCLUSTER_REQUIRE_PEBBLE=1 to make this a failure", strings.Join(missing, ", "))
	}
	return pebbleBin, challBin
}

// startProcess runs a test helper process until the test ends, its
// output going to the test log when the test fails.
func startProcess(t *testing.T, name string, env []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out.String())
		}
	})
}

// startPebble runs pebble and its DNS server on loopback.
func startPebble(t *testing.T, pc pebbleConfig) *pebble {
	t.Helper()
	pebbleBin, challBin := requirePebble(t)
	dir := t.TempDir()
	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &pebble{caFile: filepath.Join(dir, "pebble-https.pem")}
	keyFile := filepath.Join(dir, "pebble-https.key")
	if err := os.WriteFile(p.caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	acmePort, mgmtPort, dnsPort, challMgmt := mtatest.FreePort(t), mtatest.FreePort(t), mtatest.FreePort(t), mtatest.FreePort(t)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":             fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":   fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":               p.caFile,
		"privateKey":                keyFile,
		"httpPort":                  pc.httpPort,
		"tlsPort":                   pc.tlsPort,
		"ocspResponderURL":          "",
		"certificateValidityPeriod": int(pc.validity / time.Second),
	}}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, challBin, nil,
		"-dns01", fmt.Sprintf("127.0.0.1:%d", dnsPort), "-http01", "", "-https01", "", "-tlsalpn01", "",
		"-management", fmt.Sprintf("127.0.0.1:%d", challMgmt), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	startProcess(t, pebbleBin, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		"-config", confFile, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort))

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	p.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	p.directory = fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort)
	p.mgmt = fmt.Sprintf("https://127.0.0.1:%d", mgmtPort)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := p.client.Get(p.directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble not answering at %s: %v", p.directory, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// roots returns pebble's root CA, which it creates at each start.
func (p *pebble) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: %d %v", resp.StatusCode, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("pebble root: no PEM certificate")
	}
	return pool
}

// acmeTestHost is the name the test nodes get certificates for; pebble's
// DNS server resolves it to 127.0.0.1.
const acmeTestHost = "mail.example.test"

// acmeConfig is a test node that gets its certificate from p.
func acmeConfig(t *testing.T, p *pebble) Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Hostname = acmeTestHost
	cfg.TLS.ACME = true
	cfg.TLS.ACMEDirectory = p.directory
	cfg.TLS.ACMECAFile = p.caFile
	cfg.TLS.ACMEEmail = "postmaster@example.test"
	return cfg
}

// waitACMESerial connects to addr (as a client of serverName, trusting
// only roots) until the handshake verifies, and returns the serial number
// served.
func waitACMESerial(t *testing.T, addr net.Addr, serverName string, roots *x509.CertPool, within time.Duration) *big.Int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr.String(),
			&tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12})
		if err == nil {
			serial := c.ConnectionState().PeerCertificates[0].SerialNumber
			c.Close()
			return serial
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s presents no certificate issued by pebble for %s after %s: %v", addr, serverName, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestACMEHTTP01 gets the node's certificate from pebble over a real
// http-01 validation on listen.acme_http (pebble first tries tls-alpn-01
// on a port nothing answers, as a CA does on port 443 of a node that opens
// only port 80), checks that IMAPS presents it (to a client that names
// the host, and to one that names none), and that autocert renews it
// before it expires with no restart.
func TestACMEHTTP01(t *testing.T) {
	httpPort := mtatest.FreePort(t)
	p := startPebble(t, pebbleConfig{httpPort: httpPort, tlsPort: mtatest.FreePort(t), validity: 30 * time.Second})
	cfg := acmeConfig(t, p)
	cfg.Listen.ACMEHTTP = fmt.Sprintf("127.0.0.1:%d", httpPort)
	n := startNode(t, cfg)
	roots := p.roots(t)
	imaps := n.Addr(ListenIMAPS)

	first := waitACMESerial(t, imaps, acmeTestHost, roots, 60*time.Second)
	waitTLSMetric(t, n, `mail_tls_acme_requests_total{result="ok"}`, 1, 5*time.Second)
	expiry := fmt.Sprintf(`mail_tls_certificate_expiry_timestamp_seconds{host=%q,source="acme"}`, acmeTestHost)
	if v, ok := tlsMetric(t, n, expiry); !ok || time.Unix(int64(v), 0).Before(time.Now()) {
		t.Errorf("%s = %v (present %v), want a time to come", expiry, v, ok)
	}

	// A client that sends no server name (as many SMTP clients) gets the
	// hostname's certificate.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", imaps.String(),
		&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	chain := c.ConnectionState().PeerCertificates
	c.Close()
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: acmeTestHost, Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("certificate served without SNI: %v", err)
	}

	// The cache holds the account and the certificate, readable by the
	// node's user only.
	cache := filepath.Join(cfg.DataDir, tlsDirName, acmeDirName)
	entries, err := os.ReadDir(cache)
	if err != nil || len(entries) == 0 {
		t.Fatalf("ACME cache %s: %v entries, %v", cache, len(entries), err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", e.Name(), fi.Mode().Perm())
		}
	}

	// Renewal: autocert renews a third of the lifetime before expiry.
	deadline := time.Now().Add(60 * time.Second)
	for {
		serial := waitACMESerial(t, imaps, acmeTestHost, roots, 10*time.Second)
		if serial.Cmp(first) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate %x not renewed within 60s", first)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitTLSMetric(t, n, "mail_tls_acme_renewals_total", 1, 5*time.Second)
}

// TestACMETLSALPN01 gets the certificate over tls-alpn-01 on
// listen.acme_tls, with no http-01 listener, and a restarted node serves
// it from the cache without asking the CA again.
func TestACMETLSALPN01(t *testing.T) {
	tlsPort := mtatest.FreePort(t)
	p := startPebble(t, pebbleConfig{httpPort: mtatest.FreePort(t), tlsPort: tlsPort, validity: time.Hour})
	cfg := acmeConfig(t, p)
	cfg.Listen.ACMETLS = fmt.Sprintf("127.0.0.1:%d", tlsPort)
	n := startNode(t, cfg)
	roots := p.roots(t)
	first := waitACMESerial(t, n.Addr(ListenIMAPS), acmeTestHost, roots, 60*time.Second)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := startNode(t, cfg)
	if got := waitACMESerial(t, n2.Addr(ListenIMAPS), acmeTestHost, roots, 20*time.Second); got.Cmp(first) != 0 {
		t.Errorf("after a restart: serial %x, want the cached %x", got, first)
	}
}

// TestACMEServesGeneratedUntilIssued: while the CA does not answer (here
// it accepts connections and never replies), every listener serves the
// generated certificate, the tls-alpn-01 listener refuses handshakes that
// are not validations, and closing the node does not wait for the CA.
func TestACMEServesGeneratedUntilIssued(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	held := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held <- c // never answered
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	})
	cfg := testConfig(t)
	cfg.Hostname = acmeTestHost
	cfg.TLS.ACME = true
	cfg.TLS.ACMEDirectory = "https://" + silent.Addr().String() + "/dir"
	cfg.Listen.ACMETLS = "127.0.0.1:0"
	n, err := New(cfg, Options{Logger: discardLogger(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	generated := newClientPool(t, filepath.Join(cfg.DataDir, tlsDirName, certFileName))
	for _, name := range []string{ListenIMAPS, ListenPOP3S, ListenSubmissions} {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.Addr(name).String(),
			&tls.Config{RootCAs: generated, ServerName: acmeTestHost, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Errorf("%s before issuance: %v", name, err)
			continue
		}
		c.Close()
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.Addr(ListenACMETLS).String(),
		&tls.Config{InsecureSkipVerify: true, ServerName: acmeTestHost, MinVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Error("listen.acme_tls completed a handshake that is not a tls-alpn-01 validation")
	}

	// The node's first request to the CA is waiting for an answer.
	select {
	case c := <-held:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not contact the CA")
	}
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close took %s with a CA request in flight", d)
	}
}

func newClientPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mustRead(t, file)) {
		t.Fatalf("no certificate in %s", file)
	}
	return pool
}

// TestACMEHostPolicy: the names of tls.acme_hosts, in any case, with or
// without a port or a final dot; nothing else.
func TestACMEHostPolicy(t *testing.T) {
	policy := acmeHostPolicy([]string{"mail.example.com", "autoconfig.example.com"})
	for host, ok := range map[string]bool{
		"mail.example.com":       true,
		"MAIL.Example.com":       true,
		"mail.example.com.":      true,
		"mail.example.com:80":    true,
		"autoconfig.example.com": true,
		"example.com":            false,
		"mail.example.com.evil":  false,
		"":                       false,
	} {
		if err := policy(context.Background(), host); (err == nil) != ok {
			t.Errorf("%q: %v, want allowed=%v", host, err, ok)
		}
	}
}

// TestACMEMTASTSHost: mta-sts.DOMAIN of a served domain gets a
// certificate from the CA on the first handshake that names it (the
// MTA-STS policy host); the same name of a domain not served gets none.
func TestACMEMTASTSHost(t *testing.T) {
	tlsPort := mtatest.FreePort(t)
	p := startPebble(t, pebbleConfig{httpPort: mtatest.FreePort(t), tlsPort: tlsPort, validity: time.Hour})
	cfg := acmeConfig(t, p)
	cfg.Listen.ACMETLS = fmt.Sprintf("127.0.0.1:%d", tlsPort)
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Directory().AddDomain(ctx, "served.test", "", ""); err != nil {
		t.Fatal(err)
	}
	roots := p.roots(t)
	if err := n.acmeHostAllowed(ctx, "mta-sts.other.test"); err == nil {
		t.Error("the host policy allows mta-sts of a domain not served")
	}
	if err := n.acmeHostAllowed(ctx, "mta-sts.served.test"); err != nil {
		t.Errorf("the host policy refuses mta-sts of a served domain: %v", err)
	}
	waitACMESerial(t, n.Addr(ListenIMAPS), "mta-sts.served.test", roots, 60*time.Second)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.Addr(ListenIMAPS).String(),
		&tls.Config{RootCAs: roots, ServerName: "mta-sts.other.test", MinVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("mta-sts of a domain not served has a certificate from the CA")
	}
}

// acmeHostAllowed applies the ACME host policy of a node.
func (n *Node) acmeHostAllowed(ctx context.Context, host string) error {
	if n.tls == nil || n.tls.acme == nil {
		return fmt.Errorf("no ACME")
	}
	return n.tls.acme.m.HostPolicy(ctx, host)
}
