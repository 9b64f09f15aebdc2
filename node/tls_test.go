package node

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// testPair is a certificate and key in PEM form, and the certificate's
// serial number.
type testPair struct {
	cert, key []byte
	serial    *big.Int
	notAfter  time.Time
}

// newTestPair makes a self-signed pair for localhost valid for validity
// (negative: expired that long ago, give or take the hour it is
// backdated by).
func newTestPair(t *testing.T, validity time.Duration) testPair {
	t.Helper()
	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"localhost", "127.0.0.1"}, validity)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return testPair{cert: certPEM, key: keyPEM, serial: c.Leaf.SerialNumber, notAfter: c.Leaf.NotAfter}
}

// install writes the pair as an operator's tool does: each file replaced
// by a rename, the key first.
func (p testPair) install(t *testing.T, certFile, keyFile string) {
	t.Helper()
	if err := writeFileAtomic(keyFile, p.key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(certFile, p.cert, 0o644); err != nil {
		t.Fatal(err)
	}
}

// servedSerial opens a new TLS connection to a listener and returns the
// serial number of the certificate it presents.
func servedSerial(t *testing.T, addr net.Addr) *big.Int {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr.String(),
		&tls.Config{InsecureSkipVerify: true, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// startTLSSerial starts TLS on an SMTP listener and returns the serial
// number of the certificate it presents.
func startTLSSerial(t *testing.T, addr net.Addr) *big.Int {
	t.Helper()
	c, err := smtp.Dial(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true, ServerName: "localhost", MinVersion: tls.VersionTLS12}); err != nil {
		t.Fatalf("STARTTLS on %s: %v", addr, err)
	}
	st, ok := c.TLSConnectionState()
	if !ok {
		t.Fatal("no TLS after STARTTLS")
	}
	return st.PeerCertificates[0].SerialNumber
}

// waitServed polls new connections until the listener presents the
// certificate with serial want.
func waitServed(t *testing.T, addr net.Addr, want *big.Int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := servedSerial(t, addr)
		if got.Cmp(want) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still serves serial %x after %s, want %x", addr, got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsMetric returns the value of one series of the node's registry
// ("name" or "name{label=value,...}" with labels in the registry's
// order), and whether it exists.
func tlsMetric(t *testing.T, n *Node, series string) (float64, bool) {
	t.Helper()
	families, err := n.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := f.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			if name != series {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// waitTLSMetric polls until a series reaches at least want.
func waitTLSMetric(t *testing.T, n *Node, series string, want float64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, _ := tlsMetric(t, n, series)
		if v >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %s, want at least %v", series, v, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsFileConfig is a test node serving the pair in dir/cert.pem and
// dir/key.pem.
func tlsFileConfig(t *testing.T, p testPair, interval time.Duration) (Config, string, string) {
	t.Helper()
	cfg := testConfig(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	p.install(t, certFile, keyFile)
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	cfg.TLS.ReloadInterval = interval
	return cfg, certFile, keyFile
}

// TestTLSCertFilesReloadedOnChange replaces the certificate files under a
// running node: every implicit-TLS listener (and STARTTLS, which shares
// the settings) serves the new certificate to new connections; a broken
// certificate, a key of another certificate and an expired certificate
// are each refused and counted, and the last good one stays in use.
func TestTLSCertFilesReloadedOnChange(t *testing.T) {
	first := newTestPair(t, 24*time.Hour)
	cfg, certFile, keyFile := tlsFileConfig(t, first, 100*time.Millisecond)
	n := startNode(t, cfg)
	implicit := []string{ListenIMAPS, ListenSubmissions, ListenPOP3S}
	for _, name := range implicit {
		if got := servedSerial(t, n.Addr(name)); got.Cmp(first.serial) != 0 {
			t.Fatalf("%s serves %x at start, want %x", name, got, first.serial)
		}
	}
	expiry := `mail_tls_certificate_expiry_timestamp_seconds{host="localhost",source="file"}`
	if v, ok := tlsMetric(t, n, expiry); !ok || int64(v) != first.notAfter.Unix() {
		t.Errorf("%s = %v (present %v), want %d", expiry, v, ok, first.notAfter.Unix())
	}

	second := newTestPair(t, 48*time.Hour)
	second.install(t, certFile, keyFile)
	waitServed(t, n.Addr(ListenIMAPS), second.serial, 10*time.Second)
	for _, name := range implicit {
		if got := servedSerial(t, n.Addr(name)); got.Cmp(second.serial) != 0 {
			t.Errorf("%s serves %x after the change, want %x", name, got, second.serial)
		}
	}
	if got := startTLSSerial(t, n.Addr(ListenSubmission)); got.Cmp(second.serial) != 0 {
		t.Errorf("submission STARTTLS serves %x after the change, want %x", got, second.serial)
	}
	if v, _ := tlsMetric(t, n, `mail_tls_certificate_reloads_total{result="ok"}`); v < 1 {
		t.Errorf("reloads ok = %v, want at least 1", v)
	}
	if v, _ := tlsMetric(t, n, expiry); int64(v) != second.notAfter.Unix() {
		t.Errorf("%s = %v after the reload, want %d", expiry, v, second.notAfter.Unix())
	}

	third := newTestPair(t, 72*time.Hour)
	expired := newTestPair(t, -30*time.Minute)
	bad := []struct {
		name      string
		cert, key []byte
	}{
		{"not PEM", []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), second.key},
		{"key of another certificate", third.cert, second.key},
		{"expired", expired.cert, expired.key},
	}
	errorsSeen := 0.0
	for _, b := range bad {
		testPair{cert: b.cert, key: b.key}.install(t, certFile, keyFile)
		errorsSeen++
		waitTLSMetric(t, n, `mail_tls_certificate_reloads_total{result="error"}`, errorsSeen, 10*time.Second)
		if got := servedSerial(t, n.Addr(ListenIMAPS)); got.Cmp(second.serial) != 0 {
			t.Errorf("%s: serves %x, want the previous certificate %x", b.name, got, second.serial)
		}
	}
	// A refused pair is reported once, not at every check.
	time.Sleep(350 * time.Millisecond)
	if v, _ := tlsMetric(t, n, `mail_tls_certificate_reloads_total{result="error"}`); v != errorsSeen {
		t.Errorf("reload errors = %v, want %v (one per change)", v, errorsSeen)
	}
	if v, _ := tlsMetric(t, n, expiry); int64(v) != second.notAfter.Unix() {
		t.Errorf("%s = %v after refused reloads, want %d", expiry, v, second.notAfter.Unix())
	}

	// A good pair again is picked up.
	third.install(t, certFile, keyFile)
	waitServed(t, n.Addr(ListenIMAPS), third.serial, 10*time.Second)
}

// TestTLSReloadFunction drives the reload SIGHUP triggers directly: with
// no file checks, a change is not served until the reload, a reload of
// an expired pair fails with ErrCertificateExpired and keeps the served
// certificate, and a reload of a good pair serves it.
func TestTLSReloadFunction(t *testing.T) {
	first := newTestPair(t, 24*time.Hour)
	cfg, certFile, keyFile := tlsFileConfig(t, first, 0)
	n := startNode(t, cfg)
	addr := n.Addr(ListenIMAPS)

	expired := newTestPair(t, -30*time.Minute)
	expired.install(t, certFile, keyFile)
	if err := n.reloadTLS(); !errors.Is(err, ErrCertificateExpired) {
		t.Fatalf("reload of an expired pair: %v, want ErrCertificateExpired", err)
	}
	if got := servedSerial(t, addr); got.Cmp(first.serial) != 0 {
		t.Fatalf("after a refused reload: serves %x, want %x", got, first.serial)
	}

	second := newTestPair(t, 24*time.Hour)
	second.install(t, certFile, keyFile)
	time.Sleep(200 * time.Millisecond) // no file checks: nothing happens
	if got := servedSerial(t, addr); got.Cmp(first.serial) != 0 {
		t.Fatalf("reloaded without SIGHUP (reload_interval 0): serves %x", got)
	}
	if err := n.reloadTLS(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := servedSerial(t, addr); got.Cmp(second.serial) != 0 {
		t.Fatalf("after reload: serves %x, want %x", got, second.serial)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := n.reloadTLS(); err == nil {
		t.Fatal("reload without a key file succeeded")
	}
	if got := servedSerial(t, addr); got.Cmp(second.serial) != 0 {
		t.Fatalf("after a failed reload: serves %x, want %x", got, second.serial)
	}
}

// TestTLSConfigValidate checks the [tls] and ACME listener settings.
func TestTLSConfigValidate(t *testing.T) {
	acme := func(c *Config) {
		c.Hostname = "mail.example.com"
		c.TLS.ACME = true
		c.Listen.ACMEHTTP = "0.0.0.0:80"
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"files", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "/c", "/k" }, ""},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "/c" }, "must be set together"},
		{"reload only on SIGHUP", func(c *Config) { c.TLS.ReloadInterval = 0 }, ""},
		{"reload interval too short", func(c *Config) { c.TLS.ReloadInterval = time.Millisecond }, "tls.reload_interval"},
		{"negative reload interval", func(c *Config) { c.TLS.ReloadInterval = -time.Second }, "tls.reload_interval"},
		{"acme", acme, ""},
		{"acme over tls-alpn-01", func(c *Config) { acme(c); c.Listen.ACMEHTTP, c.Listen.ACMETLS = "", "0.0.0.0:443" }, ""},
		{"acme with all settings", func(c *Config) {
			acme(c)
			c.TLS.ACMEDirectory = "https://acme.example.net/directory"
			c.TLS.ACMEEmail = "postmaster@example.com"
			c.TLS.ACMEHosts = []string{"mail.example.com", "autoconfig.example.com"}
			c.TLS.ACMECAFile = "/etc/ca.pem"
		}, ""},
		{"acme without a challenge listener", func(c *Config) { acme(c); c.Listen.ACMEHTTP = "" }, "listen.acme_http"},
		{"acme and files", func(c *Config) { acme(c); c.TLS.CertFile, c.TLS.KeyFile = "/c", "/k" }, "not both"},
		{"acme for localhost", func(c *Config) { acme(c); c.Hostname = "localhost" }, "fully qualified"},
		{"acme for an address", func(c *Config) { acme(c); c.TLS.ACMEHosts = []string{"192.0.2.1"} }, "fully qualified"},
		{"acme directory over http", func(c *Config) { acme(c); c.TLS.ACMEDirectory = "http://acme.example.net/dir" }, "https://"},
		{"acme email with a name", func(c *Config) { acme(c); c.TLS.ACMEEmail = "Postmaster <pm@example.com>" }, "tls.acme_email"},
		{"challenge listener without acme", func(c *Config) { c.Listen.ACMEHTTP = "0.0.0.0:80" }, "only with tls.acme"},
		{"acme keys without acme", func(c *Config) { c.TLS.ACMEEmail = "pm@example.com" }, "tls.acme_email: only with tls.acme"},
		{"challenge listener on a mail port", func(c *Config) { acme(c); c.Listen.ACMETLS = c.Listen.IMAPS }, "same address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			cfg.DataDir = "/tmp/x"
			tt.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestTLSACMEHosts checks the default list of names an ACME node gets
// certificates for.
func TestTLSACMEHosts(t *testing.T) {
	cfg := Default()
	cfg.Hostname = "Mail.Example.com."
	cfg.Autoconfig.Host = "mail.example.com"
	if got := strings.Join(cfg.acmeHosts(), " "); got != "mail.example.com" {
		t.Errorf("hostname and the same autoconfig.host: %q", got)
	}
	cfg.Autoconfig.Host = "imap.example.com"
	if got := strings.Join(cfg.acmeHosts(), " "); got != "mail.example.com imap.example.com" {
		t.Errorf("hostname and autoconfig.host: %q", got)
	}
	cfg.TLS.ACMEHosts = []string{"a.example.com", "b.example.com", "A.example.com"}
	if got := strings.Join(cfg.acmeHosts(), " "); got != "a.example.com b.example.com" {
		t.Errorf("acme_hosts: %q", got)
	}
}

// TestTLSConfigParse reads the ACME and reload settings from TOML.
func TestTLSConfigParse(t *testing.T) {
	cfg, err := Parse("acme.toml", []byte(`
hostname = "mail.example.com"
data_dir = "/var/lib/mailnode"
[listen]
acme_http = "0.0.0.0:80"
acme_tls  = "0.0.0.0:443"
[tls]
reload_interval = "30s"
acme            = true
acme_email      = "postmaster@example.com"
acme_hosts      = ["mail.example.com", "autoconfig.example.com"]
acme_directory  = "https://acme-staging-v02.api.letsencrypt.org/directory"
acme_ca_file    = "/etc/mailnode/acme-ca.pem"
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tc := cfg.TLS
	if !tc.ACME || tc.ReloadInterval != 30*time.Second || tc.ACMEEmail != "postmaster@example.com" ||
		strings.Join(tc.ACMEHosts, ",") != "mail.example.com,autoconfig.example.com" ||
		tc.ACMEDirectory != "https://acme-staging-v02.api.letsencrypt.org/directory" || tc.ACMECAFile != "/etc/mailnode/acme-ca.pem" {
		t.Errorf("tls: %+v", tc)
	}
	if cfg.Listen.ACMEHTTP != "0.0.0.0:80" || cfg.Listen.ACMETLS != "0.0.0.0:443" {
		t.Errorf("listen: %+v", cfg.Listen)
	}
	if err := cfg.Listen.BindHost("127.0.0.1"); err != nil || cfg.Listen.ACMEHTTP != "127.0.0.1:80" {
		t.Errorf("BindHost: %v, acme_http %q", err, cfg.Listen.ACMEHTTP)
	}
	if d := Default().TLS.ReloadInterval; d != DefaultTLSReloadInterval {
		t.Errorf("default reload_interval %s", d)
	}
}

// TestListenersOfferOnlyAEAD: every implicit-TLS listener of a node
// refuses a TLS 1.2 client that offers only CBC suites and serves one
// that offers an AEAD suite (the node builds its TLS settings through
// the certificate holder, not protocols.TLSConfig).
func TestListenersOfferOnlyAEAD(t *testing.T) {
	n := startNode(t, testConfig(t))
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256}
	aead := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	for _, name := range []string{ListenSubmissions, ListenIMAPS, ListenPOP3S, ListenHTTPS} {
		dial := func(suites []uint16) (tls.ConnectionState, error) {
			cfg := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: suites}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", n.Addr(name).String(), cfg)
			if err != nil {
				return tls.ConnectionState{}, err
			}
			defer c.Close()
			return c.ConnectionState(), nil
		}
		if st, err := dial(cbc); err == nil {
			t.Errorf("%s served a CBC-only TLS 1.2 client with %s", name, tls.CipherSuiteName(st.CipherSuite))
		}
		if st, err := dial(append(cbc, aead...)); err != nil || !slices.Contains(aead, st.CipherSuite) {
			t.Errorf("%s with an AEAD suite offered: %s, %v", name, tls.CipherSuiteName(st.CipherSuite), err)
		}
	}
}

// TestTLSSessionResumesOnAnotherNode: a mail client that connected to one
// node of a cluster resumes its TLS 1.3 session on the other node, over
// implicit TLS (IMAPS) and STARTTLS (IMAP), as it would behind
// round-robin DNS: the nodes seal session tickets under a key derived
// from the cluster's master key.
func TestTLSSessionResumesOnAnotherNode(t *testing.T) {
	ic := startIMAPCluster(t, "tess@example.test", "tess-imap-pw")
	client := clientTLS(t, ic.cfg1)
	if !client.RootCAs.AppendCertsFromPEM(mustRead(t, filepath.Join(ic.cfg2.DataDir, tlsDirName, certFileName))) {
		t.Fatal("no certificate in the second node's cert.pem")
	}
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	// Each returns whether the session resumed, once the client has read
	// a line after the handshake (the ticket comes before it).
	imaps := func(n *Node) bool {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.Addr(ListenIMAPS).String(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if g, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
			t.Fatalf("greeting %q, %v", g, err)
		}
		return c.ConnectionState().DidResume
	}
	startTLS := func(n *Node) bool {
		t.Helper()
		raw, err := net.DialTimeout("tcp", n.Addr(ListenIMAP).String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(raw)
		expect := func(r *bufio.Reader, prefix string) {
			t.Helper()
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("waiting for %q: %v", prefix, err)
				}
				if strings.HasPrefix(l, prefix) {
					return
				}
			}
		}
		expect(br, "* OK")
		fmt.Fprintf(raw, "a STARTTLS\r\n")
		expect(br, "a OK")
		c := tls.Client(raw, client)
		fmt.Fprintf(c, "b NOOP\r\n")
		expect(bufio.NewReader(c), "b OK")
		return c.ConnectionState().DidResume
	}
	if imaps(ic.n1) {
		t.Fatal("the first connection resumed a session")
	}
	if !imaps(ic.n2) {
		t.Error("IMAPS: a session begun on n1 did not resume on n2")
	}
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	if startTLS(ic.n2) {
		t.Fatal("STARTTLS: the first connection resumed a session")
	}
	if !startTLS(ic.n1) {
		t.Error("STARTTLS: a session begun on n2 did not resume on n1")
	}
}
