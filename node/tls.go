package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

const (
	// selfSignedValidity is how long a generated certificate is valid.
	selfSignedValidity = 365 * 24 * time.Hour
	// renewBefore is how long before expiry a generated certificate is
	// replaced at start-up.
	renewBefore = 30 * 24 * time.Hour
	maxPEMSize  = 1 << 20
)

// tlsMaterial is the node's server certificate.
type tlsMaterial struct {
	cert tls.Certificate
	// certFile and keyFile are where it was loaded from.
	certFile, keyFile string
	generated         bool
}

// loadTLS loads the configured certificate, or the self-signed one in
// DataDir/tls, generating it when it is missing, expiring, unreadable or
// not valid for the hostname.
func loadTLS(cfg Config, log *slog.Logger, now time.Time) (tlsMaterial, error) {
	if cfg.TLS.CertFile != "" {
		m := tlsMaterial{certFile: cfg.TLS.CertFile, keyFile: cfg.TLS.KeyFile}
		cert, err := loadKeyPair(m.certFile, m.keyFile)
		if err != nil {
			return m, fmt.Errorf("load TLS certificate: %w", err)
		}
		if _, perm, err := readSmallFile(m.keyFile, maxPEMSize); err == nil {
			warnIfExposed(log, m.keyFile, perm)
		}
		m.cert = cert
		if leaf := cert.Leaf; leaf != nil {
			if now.After(leaf.NotAfter) {
				log.Warn("TLS certificate has expired", "file", m.certFile, "not_after", leaf.NotAfter)
			}
			if err := leaf.VerifyHostname(cfg.Hostname); err != nil {
				log.Warn("TLS certificate does not name the hostname", "file", m.certFile, "hostname", cfg.Hostname)
			}
		}
		return m, nil
	}

	dir := filepath.Join(cfg.DataDir, tlsDirName)
	m := tlsMaterial{certFile: filepath.Join(dir, certFileName), keyFile: filepath.Join(dir, keyFileName), generated: true}
	cert, err := loadKeyPair(m.certFile, m.keyFile)
	switch {
	case err == nil && usableSelfSigned(cert.Leaf, cfg.Hostname, now):
		m.cert = cert
		return m, nil
	case err == nil:
		log.Info("replacing the generated TLS certificate (expiring or for another hostname)", "file", m.certFile)
	case !errors.Is(err, fs.ErrNotExist):
		log.Warn("replacing an unreadable generated TLS certificate", "file", m.certFile, "err", err)
	}
	if err := os.MkdirAll(dir, dataDirPerm); err != nil {
		return m, fmt.Errorf("create TLS directory: %w", err)
	}
	certPEM, keyPEM, err := protocols.SelfSignedCertificate(certHosts(cfg.Hostname), selfSignedValidity)
	if err != nil {
		return m, fmt.Errorf("generate TLS certificate: %w", err)
	}
	// Key first: a crash between the two writes leaves a pair that fails
	// to load and is generated again.
	if err := writeFileAtomic(m.keyFile, keyPEM, secretFilePerm); err != nil {
		return m, fmt.Errorf("write TLS key: %w", err)
	}
	if err := writeFileAtomic(m.certFile, certPEM, 0o644); err != nil {
		return m, fmt.Errorf("write TLS certificate: %w", err)
	}
	if m.cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return m, fmt.Errorf("load generated TLS certificate: %w", err)
	}
	log.Info("self-signed TLS certificate generated (development only)", "file", m.certFile, "hostname", cfg.Hostname)
	return m, nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, _, err := readSmallFile(certFile, maxPEMSize)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, _, err := readSmallFile(keyFile, maxPEMSize)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return cert, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

func usableSelfSigned(leaf *x509.Certificate, hostname string, now time.Time) bool {
	return leaf != nil && now.Add(renewBefore).Before(leaf.NotAfter) && leaf.VerifyHostname(hostname) == nil
}

// certHosts names the hostname and the loopback names a development
// client uses.
func certHosts(hostname string) []string {
	hosts := []string{hostname}
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		if h != hostname {
			hosts = append(hosts, h)
		}
	}
	return hosts
}
