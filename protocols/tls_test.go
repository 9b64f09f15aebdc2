package protocols

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// TestTLSOffersOnlyAEAD: a TLS 1.2 client that offers only CBC suites is
// refused; one that offers an AEAD suite gets it; TLS 1.1 is refused.
func TestTLSOffersOnlyAEAD(t *testing.T) {
	certPEM, keyPEM, err := SelfSignedCertificate([]string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", TLSConfig(cert))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	dial := func(cfg *tls.Config) (tls.ConnectionState, error) {
		cfg.InsecureSkipVerify = true
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cfg)
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
