package targets

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// Certificate is the self-signed certificate every target of a run
// serves. Clients trust exactly it, so connections are verified even
// though the certificate is made up for the run.
type Certificate struct {
	Hostname string
	CertPEM  []byte
	KeyPEM   []byte
	pool     *x509.CertPool
}

// NewCertificate makes a self-signed certificate for hostname and
// 127.0.0.1, valid for a day, the way mailnode makes its development
// certificate.
func NewCertificate(hostname string) (*Certificate, error) {
	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{hostname, "127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	c := &Certificate{Hostname: hostname, CertPEM: certPEM, KeyPEM: keyPEM, pool: x509.NewCertPool()}
	if !c.pool.AppendCertsFromPEM(c.CertPEM) {
		return nil, fmt.Errorf("certificate: generated PEM does not parse")
	}
	return c, nil
}

// ClientTLS returns a client configuration that trusts only this
// certificate and checks the hostname.
func (c *Certificate) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.pool, ServerName: c.Hostname, MinVersion: tls.VersionTLS12}
}

// Write stores the certificate and key as cert.pem and key.pem in dir
// and returns their paths.
func (c *Certificate) Write(dir string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeFile(certFile, c.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
