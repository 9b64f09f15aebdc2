package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
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

// nodeTLS is the frontends' certificate while the node runs: the files
// reloaded on SIGHUP and on change, or the ACME manager with its
// challenge listeners, and the goroutines that keep them current.
type nodeTLS struct {
	config *tls.Config
	files  *certFiles
	acme   *acmeCerts
	// challenge servers and listeners (ACME), closed by stop.
	servers   []*http.Server
	listeners []net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startTLS returns the frontends' TLS settings, which pick the current
// certificate at each handshake, and starts what keeps it current:
// SIGHUP reloads tls.cert_file and tls.key_file (the handler stays
// installed while the node runs, so SIGHUP never ends it), a check of
// the files every tls.reload_interval, or with tls.acme the ACME manager
// and its challenge listeners. TLS 1.3 session tickets are sealed under
// the cluster's ticket key (protocols.SessionTickets), so a client resumes
// its session on any node.
func (n *Node) startTLS(ctx context.Context) (*tls.Config, error) {
	metrics := newTLSMetrics()
	if err := metrics.register(n.metrics.reg); err != nil {
		return nil, err
	}
	log := n.log.With("component", "tls")
	runCtx, cancel := context.WithCancel(context.Background())
	t := &nodeTLS{cancel: cancel}
	n.tls = t
	t.files = newCertFiles(n.dir.tls, n.cfg.Hostname, log, metrics, n.now)
	var kick func()
	if n.cfg.TLS.ACME {
		a, err := newACMECerts(runCtx, n.cfg, n.version, t.files.holder, log, metrics, n.now)
		if err != nil {
			return nil, err
		}
		if n.directory != nil {
			a.served = n.directory.HostsDomain
		}
		t.acme = a
		if err := n.startACMEListeners(ctx, t, a); err != nil {
			return nil, err
		}
		t.config = protocols.DynamicTLSConfig(a.GetCertificate)
		t.spawn(func() { a.run(runCtx) })
		kick = a.retryNow
	} else {
		t.config = protocols.DynamicTLSConfig(t.files.holder.GetCertificate)
		if iv := n.cfg.TLS.ReloadInterval; iv > 0 && !n.dir.tls.generated {
			t.spawn(func() { t.files.watch(runCtx, iv) })
		}
	}
	if n.tickets != nil {
		n.tickets.Install(t.config)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	t.spawn(func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-runCtx.Done():
				return
			case <-hup:
				log.Info("SIGHUP received: reloading the certificate files")
				// Errors are logged and counted by reload.
				_ = t.files.reload("sighup")
				if kick != nil {
					kick()
				}
			}
		}
	})
	return t.config, nil
}

func (t *nodeTLS) spawn(fn func()) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		fn()
	}()
}

// stopTLS stops what startTLS started: the challenge listeners, the file
// checks, the ACME requests in flight and the SIGHUP handler. It is a
// no-op when TLS was not started.
func (n *Node) stopTLS() {
	t := n.tls
	if t == nil {
		return
	}
	for _, srv := range t.servers {
		srv.Close()
	}
	for _, ln := range t.listeners {
		ln.Close()
	}
	t.cancel()
	t.wg.Wait()
}

// reloadTLS reloads tls.cert_file and tls.key_file as SIGHUP does.
func (n *Node) reloadTLS() error {
	n.mu.Lock()
	t := n.tls
	n.mu.Unlock()
	if t == nil {
		return errors.New("reload TLS certificate: node not started")
	}
	return t.files.reload("sighup")
}
