package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/mailcluster/mailcluster/protocols"
)

const (
	// acmeDirName is the ACME cache (account key, certificates and
	// their keys, files of mode 0600) under DataDir/tls.
	acmeDirName = "acme"
	// acmeCheckInterval is how often the node looks for a renewed
	// certificate (autocert renews on its own timer) and retries a host
	// whose first certificate could not be had yet, at most.
	acmeCheckInterval = time.Minute
	// acmeFirstRetry and acmeMaxRetry bound the backoff between failed
	// requests of a host's first certificate.
	acmeFirstRetry = time.Minute
	acmeMaxRetry   = time.Hour
	// acmeChallengeTimeout bounds a tls-alpn-01 handshake on
	// listen.acme_tls; acmeChallengeConns the handshakes at once.
	acmeChallengeTimeout = 10 * time.Second
	acmeChallengeConns   = 32
)

// acmeCerts obtains and renews the frontends' certificates from an ACME
// CA (RFC 8555) through autocert, for every name of tls.acme_hosts, and
// for mta-sts.DOMAIN of every served domain when a handshake first names
// it (the MTA-STS policy host, RFC 8461 section 3.3). It
// obtains them in the background from the start; until a host has its
// certificate, handshakes get the generated self-signed one, so no client
// waits for the CA. autocert renews each certificate before it expires
// (a third of its lifetime before, at most 30 days) and the next
// handshakes get the new one.
type acmeCerts struct {
	m        *autocert.Manager
	hosts    []string
	known    map[string]bool
	fallback *protocols.CertHolder
	log      *slog.Logger
	metrics  *tlsMetrics
	now      func() time.Time
	kick     chan struct{}

	mu sync.RWMutex
	// have is the leaf last served for each host that has a certificate.
	have map[string]*x509.Certificate

	// served says whether the cluster serves a domain: mta-sts.DOMAIN
	// of every served DOMAIN gets a certificate too, on the first
	// handshake that names it (nil: none).
	served func(ctx context.Context, domain string) (bool, error)
	// mtaSTSFailed holds, per mta-sts host, when its last request to the
	// CA failed, so a name whose DNS does not point here costs one order
	// per acmeFirstRetry, not one per handshake.
	mtaSTSFailed map[string]time.Time
}

// mtaSTSDomain returns the domain of an mta-sts.DOMAIN host the cluster
// serves, or "".
func (a *acmeCerts) mtaSTSDomain(ctx context.Context, host string) string {
	domain, ok := strings.CutPrefix(host, "mta-sts.")
	if !ok || a.served == nil || !strings.Contains(domain, ".") {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ok, err := a.served(ctx, domain); err != nil || !ok {
		return ""
	}
	return domain
}

// mtaSTSCertificate serves mta-sts.DOMAIN of a served domain: its ACME
// certificate, obtained on this first handshake if need be, or the
// generated one while the CA cannot be had.
func (a *acmeCerts) mtaSTSCertificate(hello *tls.ClientHelloInfo, name string) (*tls.Certificate, error) {
	a.mu.RLock()
	failed, recently := a.mtaSTSFailed[name]
	a.mu.RUnlock()
	if recently && a.now().Sub(failed) < acmeFirstRetry {
		return a.fallback.GetCertificate(hello)
	}
	h := *hello
	h.ServerName = name
	cert, err := a.m.GetCertificate(&h)
	if err != nil {
		a.mu.Lock()
		if len(a.mtaSTSFailed) > 10000 {
			clear(a.mtaSTSFailed)
		}
		a.mtaSTSFailed[name] = a.now()
		a.mu.Unlock()
		a.metrics.acmeRequests.WithLabelValues("error").Inc()
		a.log.Warn("ACME certificate for an MTA-STS host unavailable; serving the generated one", "host", name, "err", err)
		return a.fallback.GetCertificate(hello)
	}
	a.mu.Lock()
	delete(a.mtaSTSFailed, name)
	a.mu.Unlock()
	return cert, nil
}

// newACMECerts sets up the ACME manager. Its requests to the CA fail as
// soon as stop ends, so that closing a node never waits for the CA.
func newACMECerts(stop context.Context, cfg Config, version string, fallback *protocols.CertHolder, log *slog.Logger, metrics *tlsMetrics, now func() time.Time) (*acmeCerts, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = 30 * time.Second
	if f := cfg.TLS.ACMECAFile; f != "" {
		pemData, _, err := readSmallFile(f, maxPEMSize)
		if err != nil {
			return nil, fmt.Errorf("tls.acme_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("tls.acme_ca_file %s: no PEM certificate", f)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	directory := cfg.TLS.ACMEDirectory
	if directory == "" {
		directory = autocert.DefaultACMEDirectory
	}
	hosts := cfg.acmeHosts()
	cacheDir := filepath.Join(cfg.DataDir, tlsDirName, acmeDirName)
	if err := os.MkdirAll(cacheDir, dataDirPerm); err != nil {
		return nil, fmt.Errorf("create ACME cache directory: %w", err)
	}
	a := &acmeCerts{
		m: &autocert.Manager{
			// Setting tls.acme is the operator's acceptance.
			Prompt: autocert.AcceptTOS,
			Cache:  autocert.DirCache(cacheDir),
			Email:  cfg.TLS.ACMEEmail,
			Client: &acme.Client{
				DirectoryURL: directory,
				UserAgent:    "mailnode/" + version,
				HTTPClient:   &http.Client{Transport: &stopTransport{base: transport, stop: stop}},
			},
		},
		hosts:    hosts,
		known:    make(map[string]bool, len(hosts)),
		fallback: fallback,
		log:      log.With("acme_directory", directory),
		metrics:  metrics,
		now:      now,
		kick:     make(chan struct{}, 1),
		have:     make(map[string]*x509.Certificate),

		mtaSTSFailed: make(map[string]time.Time),
	}
	// tls.acme_hosts, and mta-sts.DOMAIN of the served domains.
	static := acmeHostPolicy(hosts)
	a.m.HostPolicy = func(ctx context.Context, host string) error {
		err := static(ctx, host)
		if err == nil {
			return nil
		}
		if h, _, serr := net.SplitHostPort(host); serr == nil {
			host = h
		}
		if a.mtaSTSDomain(ctx, strings.ToLower(strings.TrimSuffix(host, "."))) != "" {
			return nil
		}
		return err
	}
	for _, h := range hosts {
		a.known[h] = true
	}
	return a, nil
}

// acmeHostPolicy allows the names of hosts only. Unlike
// autocert.HostWhitelist it ignores a port, which an http-01 request's
// Host header carries when the CA validates on another port than 80 (a
// test CA).
func acmeHostPolicy(hosts []string) autocert.HostPolicy {
	allowed := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		allowed[h] = true
	}
	return func(_ context.Context, host string) error {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !allowed[strings.ToLower(strings.TrimSuffix(host, "."))] {
			return fmt.Errorf("acme: host %q not in tls.acme_hosts", host)
		}
		return nil
	}
}

// wantsChallenge reports whether a handshake is the CA's tls-alpn-01
// validation (RFC 8737 section 3: the only protocol offered is acme-tls/1).
func wantsChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

// GetCertificate picks the certificate for a handshake: the one of the
// host the client names, or of the first host when it names none or
// another (an SMTP client often sends no server name), or the generated
// one while that host has none yet.
func (a *acmeCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if wantsChallenge(hello) {
		return a.m.GetCertificate(hello)
	}
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if !a.known[name] {
		if a.mtaSTSDomain(hello.Context(), name) != "" {
			return a.mtaSTSCertificate(hello, name)
		}
		name = a.hosts[0]
	}
	a.mu.RLock()
	ready := a.have[name] != nil
	a.mu.RUnlock()
	if !ready {
		return a.fallback.GetCertificate(hello)
	}
	h := *hello
	h.ServerName = name
	cert, err := a.m.GetCertificate(&h)
	if err != nil {
		a.log.Warn("ACME certificate unavailable; serving the generated one", "host", name, "err", err)
		return a.fallback.GetCertificate(hello)
	}
	if cert.Leaf != nil {
		a.observe(name, cert.Leaf)
	}
	return cert, nil
}

// challengeCertificate serves only tls-alpn-01 validations, for
// listen.acme_tls.
func (a *acmeCerts) challengeCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !wantsChallenge(hello) {
		return nil, errors.New("listen.acme_tls answers only ACME tls-alpn-01 validations")
	}
	return a.m.GetCertificate(hello)
}

// hello is a handshake of a client that supports ECDSA, for asking the
// manager for a host's certificate outside a handshake.
func acmeHello(host string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        host,
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
}

// retryNow makes run request the missing certificates at once (SIGHUP).
func (a *acmeCerts) retryNow() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// run requests each host's first certificate (retrying with backoff)
// and notices renewals, until ctx ends.
func (a *acmeCerts) run(ctx context.Context) {
	next := make(map[string]time.Time, len(a.hosts))
	backoff := make(map[string]time.Duration, len(a.hosts))
	t := time.NewTicker(acmeCheckInterval)
	defer t.Stop()
	for {
		for _, h := range a.hosts {
			if ctx.Err() != nil {
				return
			}
			a.mu.RLock()
			ready := a.have[h] != nil
			a.mu.RUnlock()
			if ready {
				a.check(h)
				continue
			}
			if a.now().Before(next[h]) {
				continue
			}
			if err := a.obtain(h); err != nil {
				if ctx.Err() != nil {
					return
				}
				b := max(acmeFirstRetry, min(2*backoff[h], acmeMaxRetry))
				backoff[h] = b
				next[h] = a.now().Add(b)
				a.log.Warn("ACME certificate not obtained; serving the generated one meanwhile", "host", h, "retry_in", b, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
			clear(next)
		}
	}
}

// obtain gets a host's certificate from the cache or the CA.
func (a *acmeCerts) obtain(host string) error {
	cert, err := a.m.GetCertificate(acmeHello(host))
	if err != nil {
		a.metrics.acmeRequests.WithLabelValues("error").Inc()
		return fmt.Errorf("acme certificate for %s: %w", host, err)
	}
	leaf := leafOf(*cert)
	if leaf == nil {
		a.metrics.acmeRequests.WithLabelValues("error").Inc()
		return fmt.Errorf("acme certificate for %s: no certificate in the chain", host)
	}
	a.metrics.acmeRequests.WithLabelValues("ok").Inc()
	a.serve(host, leaf)
	a.log.Info("ACME certificate in use", "host", host, "serial", leaf.SerialNumber.Text(16),
		"issuer", leaf.Issuer.String(), "not_after", leaf.NotAfter)
	return nil
}

// check looks for a renewed certificate of a host that has one, so that
// the metrics of an idle node follow autocert's renewals too.
func (a *acmeCerts) check(host string) {
	cert, err := a.m.GetCertificate(acmeHello(host))
	if err != nil {
		a.log.Warn("ACME certificate unavailable", "host", host, "err", err)
		return
	}
	if leaf := leafOf(*cert); leaf != nil {
		a.observe(host, leaf)
	}
}

// observe notes the leaf served for a host that had a certificate, and
// reports a renewal when it is a new one.
func (a *acmeCerts) observe(host string, leaf *x509.Certificate) {
	a.mu.RLock()
	prev := a.have[host]
	a.mu.RUnlock()
	if prev == nil || prev == leaf || prev.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		return
	}
	a.mu.Lock()
	prev = a.have[host]
	renewed := prev != nil && prev.SerialNumber.Cmp(leaf.SerialNumber) != 0 && leaf.NotAfter.After(prev.NotAfter)
	if renewed {
		a.have[host] = leaf
	}
	a.mu.Unlock()
	if !renewed {
		return
	}
	a.metrics.acmeRenewals.Inc()
	a.metrics.expiry.WithLabelValues(certSourceACME, host).Set(float64(leaf.NotAfter.Unix()))
	a.log.Info("ACME certificate renewed", "host", host, "serial", leaf.SerialNumber.Text(16),
		"previous_serial", prev.SerialNumber.Text(16), "not_after", leaf.NotAfter)
}

func (a *acmeCerts) serve(host string, leaf *x509.Certificate) {
	a.mu.Lock()
	a.have[host] = leaf
	a.mu.Unlock()
	a.metrics.expiry.WithLabelValues(certSourceACME, host).Set(float64(leaf.NotAfter.Unix()))
}

// startACMEListeners opens listen.acme_http (http-01 answers; anything
// else gets 404) and listen.acme_tls (tls-alpn-01 handshakes only).
func (n *Node) startACMEListeners(ctx context.Context, t *nodeTLS, a *acmeCerts) error {
	log := n.log.With("component", "acme")
	if addr := n.cfg.Listen.ACMEHTTP; addr != "" {
		ln, err := listenTCP(ctx, ListenACMEHTTP, addr)
		if err != nil {
			return err
		}
		srv := &http.Server{
			// HTTPHandler also makes autocert try http-01 after
			// tls-alpn-01.
			Handler:           a.m.HTTPHandler(http.NotFoundHandler()),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		t.servers = append(t.servers, srv)
		n.addrs[ListenACMEHTTP] = ln.Addr()
		n.serve(ListenACMEHTTP, func() error { return srv.Serve(ln) })
		log.Info("answering ACME http-01 challenges", "listen", ln.Addr().String())
	}
	if addr := n.cfg.Listen.ACMETLS; addr != "" {
		ln, err := listenTCP(ctx, ListenACMETLS, addr)
		if err != nil {
			return err
		}
		t.listeners = append(t.listeners, ln)
		n.addrs[ListenACMETLS] = ln.Addr()
		cfg := &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{acme.ALPNProto},
			GetCertificate: a.challengeCertificate,
		}
		n.serve(ListenACMETLS, func() error { return serveChallenges(ln, cfg) })
		log.Info("answering ACME tls-alpn-01 challenges", "listen", ln.Addr().String())
	}
	return nil
}

// serveChallenges completes the TLS handshake of each connection (the
// validation is the handshake) and closes it, until ln is closed.
func serveChallenges(ln net.Listener, cfg *tls.Config) error {
	sem := make(chan struct{}, acmeChallengeConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close() // busy: the CA retries
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(acmeChallengeTimeout)); err != nil {
				return
			}
			tc := tls.Server(c, cfg)
			// A failed handshake is the client's problem; the CA
			// reports a failed validation itself.
			_ = tc.Handshake()
			_ = tc.Close()
		}()
	}
}

// stopTransport fails every request, and stops reading every answer, as
// soon as stop ends, so that autocert's requests (which take no context of
// ours) cannot hold up a node's Close.
type stopTransport struct {
	base http.RoundTripper
	stop context.Context
}

// RoundTrip sends r with a context that also ends with stop.
func (t *stopTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.stop.Err(); err != nil {
		return nil, fmt.Errorf("acme request: node stopping: %w", err)
	}
	ctx, cancel := context.WithCancel(r.Context())
	release := context.AfterFunc(t.stop, cancel)
	resp, err := t.base.RoundTrip(r.WithContext(ctx))
	if err != nil {
		release()
		cancel()
		return nil, err
	}
	resp.Body = &releaseBody{ReadCloser: resp.Body, release: func() { release(); cancel() }}
	return resp, nil
}

// releaseBody releases its request's context when closed.
type releaseBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

// Close closes the body and releases the request's context.
func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
