package protocols

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync/atomic"
	"time"
)

// TLSConfig returns the server TLS settings every frontend uses: TLS 1.2 or
// newer, the given certificate, and for TLS 1.2 only forward-secret AEAD
// cipher suites (AES-GCM, ChaCha20-Poly1305): Go's defaults still offer
// CBC suites, which scanners rate weak (the LUCKY13 class). TLS 1.3's
// suites are all AEAD and not configurable.
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		CipherSuites: AEADCipherSuites(),
	}
}

// AEADCipherSuites lists the TLS 1.2 cipher suites the frontends offer.
func AEADCipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// DynamicTLSConfig returns the settings of TLSConfig with the
// certificate chosen for each handshake by get (a CertHolder's
// GetCertificate, or an ACME manager's), so that a renewed or reloaded
// certificate is served to new connections without a restart.
// Connections already established keep the certificate they were given.
func DynamicTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   AEADCipherSuites(),
		GetCertificate: get,
	}
}

// ErrNoCertificate is returned by CertHolder.GetCertificate while the
// holder is empty; the handshake then fails.
var ErrNoCertificate = errors.New("no server certificate loaded")

// CertHolder holds the server certificate handed to new TLS handshakes.
// Set replaces it atomically: handshakes that start afterwards get the new
// one, those in progress and the connections established keep theirs. The
// zero value is empty and ready to use.
type CertHolder struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewCertHolder returns a holder that serves cert.
func NewCertHolder(cert tls.Certificate) *CertHolder {
	h := &CertHolder{}
	h.Set(&cert)
	return h
}

// Set replaces the certificate served to new handshakes. The caller must
// not change cert afterwards.
func (h *CertHolder) Set(cert *tls.Certificate) { h.cur.Store(cert) }

// Get returns the certificate served now, or nil while the holder is
// empty.
func (h *CertHolder) Get() *tls.Certificate { return h.cur.Load() }

// GetCertificate serves the current certificate whatever the client
// asked for; it is meant for tls.Config.GetCertificate.
func (h *CertHolder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := h.cur.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// DescribeTLS returns the protocol version and cipher suite of a
// connection in the form used in Received headers, for example
// "version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256".
func DescribeTLS(cs *tls.ConnectionState) string {
	if cs == nil || !cs.HandshakeComplete {
		return ""
	}
	return fmt.Sprintf("version=%s cipher=%s", tlsVersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS13:
		return "TLS1.3"
	default:
		return fmt.Sprintf("0x%04x", v)
	}
}

// SelfSignedCertificate creates a certificate for hosts (DNS names or IP
// addresses) valid for validity, with an ECDSA P-256 key. It returns the
// certificate and key in PEM form so that a development node can keep them
// in its data directory.
func SelfSignedCertificate(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"mailcluster development node"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}
