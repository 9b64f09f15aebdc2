package protocols

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// testCertificate returns a new self-signed certificate for localhost,
// and its PEM form.
func testCertificate(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	certPEM, keyPEM, err := SelfSignedCertificate([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certPEM
}

// serveTLS serves config on a loopback listener until the test ends,
// handing each connection (with a 5 s deadline) to handle and closing it
// after; it returns the listener's address.
func serveTLS(t *testing.T, config *tls.Config, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestTLSOffersOnlyAEAD: a TLS 1.2 client that offers only CBC suites is
// refused; one that offers an AEAD suite gets it; TLS 1.1 is refused —
// with the fixed certificate of TLSConfig and with DynamicTLSConfig,
// which the node's listeners use.
func TestTLSOffersOnlyAEAD(t *testing.T) {
	cert, _ := testCertificate(t)
	t.Run("fixed", func(t *testing.T) { testOnlyAEAD(t, TLSConfig(cert)) })
	t.Run("dynamic", func(t *testing.T) { testOnlyAEAD(t, DynamicTLSConfig(NewCertHolder(cert).GetCertificate)) })
}

func testOnlyAEAD(t *testing.T, config *tls.Config) {
	addr := serveTLS(t, config, func(c net.Conn) { c.(*tls.Conn).Handshake() })
	dial := func(cfg *tls.Config) (tls.ConnectionState, error) {
		cfg.InsecureSkipVerify = true
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.ConnectionState(), nil
	}
	cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
	if _, err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: cbc}); err == nil {
		t.Error("a TLS 1.2 client offering only CBC suites was served")
	}
	st, err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: append(cbc, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)})
	if err != nil || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {
		t.Errorf("TLS 1.2 with an AEAD suite: %s, %v", tls.CipherSuiteName(st.CipherSuite), err)
	}
	if _, err := dial(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 was served")
	}
	if st, err := dial(&tls.Config{}); err != nil || st.Version != tls.VersionTLS13 {
		t.Errorf("default client: version %x, %v", st.Version, err)
	}
}

// TestTLSCertHolderServesReplacement: a certificate set while a listener
// serves is presented to the next handshake, and the connection opened
// before keeps the certificate it got.
func TestTLSCertHolderServesReplacement(t *testing.T) {
	newCert := func() tls.Certificate {
		cert, _ := testCertificate(t)
		return cert
	}
	var empty CertHolder
	if _, err := empty.GetCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("empty holder: %v, want ErrNoCertificate", err)
	}
	first, second := newCert(), newCert()
	h := NewCertHolder(first)
	addr := serveTLS(t, DynamicTLSConfig(h.GetCertificate), func(c net.Conn) {
		c.(*tls.Conn).Handshake()
		io.Copy(io.Discard, c)
	})
	dial := func() *tls.Conn {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	serial := func(c *tls.Conn) string { return c.ConnectionState().PeerCertificates[0].SerialNumber.String() }

	old := dial()
	defer old.Close()
	if got, want := serial(old), first.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("served serial %s, want the first certificate's %s", got, want)
	}
	h.Set(&second)
	c := dial()
	defer c.Close()
	if got, want := serial(c), second.Leaf.SerialNumber.String(); got != want {
		t.Errorf("after Set: served serial %s, want the second certificate's %s", got, want)
	}
	if got, want := serial(old), first.Leaf.SerialNumber.String(); got != want {
		t.Errorf("the earlier connection now reports %s, want %s", got, want)
	}
	if v := c.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("version %x below TLS 1.2", v)
	}
}
