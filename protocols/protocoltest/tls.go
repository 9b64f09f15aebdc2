package protocoltest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// TLS returns a server configuration with a fresh self-signed certificate
// for localhost and 127.0.0.1, and a client configuration that trusts only
// that certificate.
func TLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatalf("self-signed certificate: %v", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("key pair: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("could not add test certificate to pool")
	}
	return protocols.TLSConfig(cert), &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}
