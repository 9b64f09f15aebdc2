package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocols"
)

// ErrCertificateExpired is returned for a certificate file whose
// certificate has expired; a reload keeps the certificate in use then.
var ErrCertificateExpired = errors.New("certificate has expired")

// Certificate sources, as in the source label of
// mail_tls_certificate_expiry_timestamp_seconds.
const (
	certSourceFile      = "file"
	certSourceGenerated = "generated"
	certSourceACME      = "acme"
)

// tlsMetrics are the certificate metrics of a node.
type tlsMetrics struct {
	// expiry is the Unix time the served certificate expires, by source
	// and host name.
	expiry *prometheus.GaugeVec
	// reloads counts reloads of the certificate files, by result.
	reloads *prometheus.CounterVec
	// acmeRequests counts first requests of a host's certificate from
	// the ACME CA, by result; acmeRenewals the renewed certificates seen.
	acmeRequests *prometheus.CounterVec
	acmeRenewals prometheus.Counter
}

func newTLSMetrics() *tlsMetrics {
	m := &tlsMetrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mail_tls_certificate_expiry_timestamp_seconds",
			Help: "Unix time at which the certificate the frontends serve expires, by source (file, generated or acme) and host name.",
		}, []string{"source", "host"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_tls_certificate_reloads_total",
			Help: "Reloads of tls.cert_file and tls.key_file (on SIGHUP or a change of the files), by result: ok (served from then on) or error (refused; the previous certificate stays in use).",
		}, []string{"result"}),
		acmeRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_tls_acme_requests_total",
			Help: "Requests for a host's first certificate (from the ACME cache or the CA), by result: ok or error (retried with backoff).",
		}, []string{"result"}),
		acmeRenewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mail_tls_acme_renewals_total",
			Help: "Renewed ACME certificates the node started serving.",
		}),
	}
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
		m.acmeRequests.WithLabelValues(r)
	}
	return m
}

func (m *tlsMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.expiry, m.reloads, m.acmeRequests, m.acmeRenewals} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register TLS metrics: %w", err)
		}
	}
	return nil
}

// certFiles serves the certificate of a pair of PEM files and reloads it
// when asked (SIGHUP) or when the files change. A pair that does not
// load, whose key does not match or whose certificate has expired is
// logged and counted, and the certificate in use stays.
type certFiles struct {
	certFile, keyFile string
	source, host      string
	holder            *protocols.CertHolder
	log               *slog.Logger
	metrics           *tlsMetrics
	now               func() time.Time

	// mu serializes reloads; stamp is what the files looked like when
	// last loaded or refused.
	mu    sync.Mutex
	stamp pairStamp
}

func newCertFiles(m tlsMaterial, host string, log *slog.Logger, metrics *tlsMetrics, now func() time.Time) *certFiles {
	c := &certFiles{
		certFile: m.certFile,
		keyFile:  m.keyFile,
		source:   certSourceFile,
		host:     host,
		holder:   protocols.NewCertHolder(m.cert),
		log:      log,
		metrics:  metrics,
		now:      now,
	}
	if m.generated {
		c.source = certSourceGenerated
	}
	c.stamp = c.statPair()
	if leaf := leafOf(m.cert); leaf != nil {
		metrics.expiry.WithLabelValues(c.source, host).Set(float64(leaf.NotAfter.Unix()))
	}
	return c
}

// fileStamp identifies one version of a file: its identity (device and
// inode), modification time and size, or the error that stat gave.
type fileStamp struct {
	info os.FileInfo
	err  string
}

func statFile(path string) fileStamp {
	fi, err := os.Stat(path) // follows symbolic links, as certbot's live/ uses
	if err != nil {
		return fileStamp{err: err.Error()}
	}
	return fileStamp{info: fi}
}

func (a fileStamp) same(b fileStamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil && a.err == b.err
	}
	return os.SameFile(a.info, b.info) && a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

type pairStamp struct{ cert, key fileStamp }

func (a pairStamp) same(b pairStamp) bool { return a.cert.same(b.cert) && a.key.same(b.key) }

func (c *certFiles) statPair() pairStamp {
	return pairStamp{cert: statFile(c.certFile), key: statFile(c.keyFile)}
}

// reload loads the files again, whether they changed or not (SIGHUP).
func (c *certFiles) reload(trigger string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.load(trigger, c.statPair())
}

// reloadIfChanged loads the files when they differ from the version last
// loaded or refused, so a broken pair is reported once, not at every
// check. It reports whether it tried.
func (c *certFiles) reloadIfChanged() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.statPair()
	if st.same(c.stamp) {
		return false, nil
	}
	return true, c.load("file change", st)
}

func (c *certFiles) load(trigger string, st pairStamp) error {
	c.stamp = st
	now := c.now()
	cert, err := loadCheckedPair(c.certFile, c.keyFile, now)
	if err != nil {
		c.metrics.reloads.WithLabelValues("error").Inc()
		c.log.Error("TLS certificate not reloaded; the one in use stays", "trigger", trigger,
			"cert_file", c.certFile, "key_file", c.keyFile, "err", err)
		return fmt.Errorf("reload TLS certificate: %w", err)
	}
	if st.key.info != nil {
		warnIfExposed(c.log, c.keyFile, st.key.info.Mode().Perm())
	}
	var prev *x509.Certificate
	if cur := c.holder.Get(); cur != nil {
		prev = leafOf(*cur)
	}
	c.holder.Set(&cert)
	leaf := cert.Leaf
	c.metrics.reloads.WithLabelValues("ok").Inc()
	c.metrics.expiry.WithLabelValues(c.source, c.host).Set(float64(leaf.NotAfter.Unix()))
	attrs := []any{"trigger", trigger, "cert_file", c.certFile, "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter}
	if prev != nil {
		attrs = append(attrs, "previous_serial", prev.SerialNumber.Text(16))
	}
	c.log.Info("TLS certificate reloaded", attrs...)
	if err := leaf.VerifyHostname(c.host); err != nil {
		c.log.Warn("TLS certificate does not name the hostname", "file", c.certFile, "hostname", c.host)
	}
	if now.Before(leaf.NotBefore) {
		c.log.Warn("TLS certificate is not valid yet", "file", c.certFile, "not_before", leaf.NotBefore)
	}
	return nil
}

// watch checks the files every interval until ctx ends.
func (c *certFiles) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Errors are logged and counted by load.
			_, _ = c.reloadIfChanged()
		}
	}
}

// loadCheckedPair loads a certificate chain and key, checking that they
// parse, that the key is the certificate's, and that the certificate has
// not expired at now.
func loadCheckedPair(certFile, keyFile string, now time.Time) (tls.Certificate, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return cert, err
	}
	leaf := leafOf(cert)
	if leaf == nil {
		return cert, fmt.Errorf("%s: no certificate", certFile)
	}
	cert.Leaf = leaf
	if now.After(leaf.NotAfter) {
		return cert, fmt.Errorf("%s: %w (not after %s)", certFile, ErrCertificateExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

// leafOf returns the parsed first certificate of a chain, or nil.
func leafOf(cert tls.Certificate) *x509.Certificate {
	if cert.Leaf != nil {
		return cert.Leaf
	}
	if len(cert.Certificate) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}
