package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/node/adminweb"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The HTTPS listener serves the HTTP listener's mux (n.httpMux) over TLS
// with the node's certificate, plus:
//
//	/api/    the admin API: the admin socket's own handler (n.adminAPI),
//	         its paths under /api, behind an admin token
//	         (Authorization: Bearer), audited as "token NAME" with the
//	         client address;
//	/admin/  the web status and admin page (package adminweb), a client of
//	         the same handler in-process.
//
// The plain HTTP listener refuses both (redirecting browsers to HTTPS
// when it is on), so a token never crosses the network in the clear.

// Bounds of the HTTPS listener and the rate samples of the web page.
const (
	// apiAuthProtocol is the protocol label of admin token checks in the
	// auth metrics and the brute-force guard.
	apiAuthProtocol = "admin"
	// rateSampleEvery and rateSamples: the charts cover 15 minutes.
	rateSampleEvery = 10 * time.Second
	rateSamples     = 91
	// maxAPIAnswer bounds an in-process API answer the page reads.
	maxAPIAnswer = 64 << 20
)

// apiPrefixes are the admin API paths served over HTTPS: what the CLI
// manages of the cluster. Not served there: admin tokens (a token cannot
// mint tokens), join tokens (a new member gets the cluster's keys) and
// import and export (they read and write the node's own files).
var apiPrefixes = []string{
	"/v1/status", "/v1/domains", "/v1/users", "/v1/aliases", "/v1/compact", pathScrub, "/v1/cluster",
	"/v1/backup/", "/v1/security/", pathAudit, pathQueue,
}

// apiAllowed reports whether path (without /api) is served over HTTPS.
func apiAllowed(path string) bool {
	if path == "/v1/cluster/tokens" || strings.HasPrefix(path, admin.PathAdminTokens) {
		return false
	}
	for _, p := range apiPrefixes {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// startHTTPS serves the HTTPS listener, when one is configured, with the
// frontends' TLS settings (the same certificate, reloads and ACME).
func (n *Node) startHTTPS(ctx context.Context, tlsCfg *tls.Config) error {
	addr := n.cfg.Listen.HTTPS
	if addr == "" {
		return nil
	}
	log := n.log.With("component", "https")
	web, err := n.startWebAdmin(log)
	if err != nil {
		return err
	}
	ln, err := listenTCP(ctx, ListenHTTPS, addr)
	if err != nil {
		return err
	}
	n.addrs[ListenHTTPS] = ln.Addr()
	bound := ln.Addr().String()
	n.httpsAddr.Store(&bound)
	cfg := tlsCfg.Clone()
	cfg.MinVersion = tls.VersionTLS12
	cfg.CipherSuites = protocols.AEADCipherSuites()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	mux := http.NewServeMux()
	mux.Handle("/api/", adminweb.Secure(n.apiHandler(log)))
	mux.Handle(adminweb.Prefix, web)
	mux.Handle("/", n.httpMux)
	n.httpsSrv = &http.Server{
		Handler:           mux,
		TLSConfig:         cfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv := n.httpsSrv
	n.serve(ListenHTTPS, func() error { return srv.ServeTLS(ln, "", "") })
	return nil
}

// apiError answers an API request refused before it reached the admin
// handler, in the admin API's error form.
func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "error": msg})
}

// apiHandler authenticates an API request by its admin token and hands
// it, without /api, to the admin handler as that token.
func (n *Node) apiHandler(log *slog.Logger) http.Handler {
	inner := http.StripPrefix("/api", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !apiAllowed(r.URL.Path) {
			apiError(w, http.StatusNotFound, "not_found", "no such admin API path (admin tokens, join tokens, import and export are managed on the node, with the mailnode command)")
			return
		}
		n.adminAPI.ServeHTTP(w, r)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailnode"`)
			apiError(w, http.StatusUnauthorized, "unauthenticated", "an admin token is required: Authorization: Bearer TOKEN (mailnode admin token add NAME)")
			return
		}
		name, err := n.checkAdminToken(r.Context(), r.RemoteAddr, token)
		if errors.Is(err, schema.ErrAuthFailed) {
			log.Info("admin API request with a wrong admin token", "remote", remoteHost(r.RemoteAddr))
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailnode", error="invalid_token"`)
			apiError(w, http.StatusUnauthorized, "unauthenticated", "not a valid admin token")
			return
		}
		if err != nil {
			log.Error("check admin token", "err", err)
			apiError(w, http.StatusServiceUnavailable, admin.CodeUnavailable, "the node cannot check admin tokens now")
			return
		}
		ctx := context.WithValue(r.Context(), peerKey{}, "token "+name)
		ctx = context.WithValue(ctx, remoteKey{}, remoteHost(r.RemoteAddr))
		inner.ServeHTTP(w, r.WithContext(ctx))
	})
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// checkAdminToken returns the name of token, under the auth guard's
// per-address limit: a wrong token counts as a failed login of the
// client address (protocol "admin"), and a locked-out address is
// refused without a check. A wrong token is schema.ErrAuthFailed.
func (n *Node) checkAdminToken(ctx context.Context, remote, token string) (string, error) {
	var name string
	check := func() (bool, error) {
		got, ok, err := n.directory.CheckAdminToken(token)
		name = got
		return ok, err
	}
	if n.guard == nil {
		ok, err := check()
		if err == nil && !ok {
			err = schema.ErrAuthFailed
		}
		return name, err
	}
	var addr net.Addr
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		addr = net.TCPAddrFromAddrPort(ap)
	}
	if err := n.guard.CheckSecret(ctx, apiAuthProtocol, addr, check); err != nil {
		return "", err
	}
	return name, nil
}

func remoteHost(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// refuseAdminOverHTTP keeps /api/ and /admin/ off the plain HTTP
// listener: browsers are sent to the HTTPS listener when there is one,
// everything else is refused.
func (n *Node) refuseAdminOverHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if !strings.HasPrefix(p, "/api/") && !strings.HasPrefix(p, adminweb.Prefix) && p != "/admin" {
			next.ServeHTTP(w, r)
			return
		}
		https := ""
		if a := n.httpsAddr.Load(); a != nil {
			https = *a
		}
		if https == "" || strings.HasPrefix(p, "/api/") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.Error(w, "the admin API and page are served over HTTPS only (listen.https)", http.StatusForbidden)
			return
		}
		_, port, err := net.SplitHostPort(https)
		host := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
		if err != nil || host == "" {
			http.Error(w, "the admin page is served over HTTPS only", http.StatusForbidden)
			return
		}
		http.Redirect(w, r, "https://"+net.JoinHostPort(host, port)+adminweb.Prefix, http.StatusMovedPermanently)
	})
}

// webAdmin is the web page's state in the node: the page and the rate
// sampler.
type webAdmin struct {
	page    *adminweb.Server
	mu      sync.Mutex
	samples []adminweb.RateSample
	cancel  context.CancelFunc
	done    chan struct{}
}

// startWebAdmin creates the page and starts sampling the rates it
// charts.
func (n *Node) startWebAdmin(log *slog.Logger) (*adminweb.Server, error) {
	w := &webAdmin{done: make(chan struct{})}
	page, err := adminweb.New(adminweb.Config{
		API: apiCaller{n},
		Login: func(ctx context.Context, remote net.Addr, token string) (string, error) {
			r := ""
			if remote != nil {
				r = remote.String()
			}
			name, err := n.checkAdminToken(ctx, r, token)
			if errors.Is(err, schema.ErrAuthFailed) {
				return "", adminweb.ErrBadToken
			}
			return name, err
		},
		Valid: func(name, token string) bool {
			ok, err := n.directory.AdminTokenValid(name, token)
			return ok && err == nil
		},
		Rates:  w.rates,
		Now:    n.now,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("web admin page: %w", err)
	}
	w.page = page
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	n.web = w
	go w.sample(ctx, n)
	return page, nil
}

// sample reads the counters every rateSampleEvery.
func (w *webAdmin) sample(ctx context.Context, n *Node) {
	defer close(w.done)
	every := rateSampleEvery
	if n.cfg.AdminWebRateInterval > 0 {
		every = n.cfg.AdminWebRateInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s := adminweb.RateSample{
			Time:          n.now(),
			Messages:      counterSum(n.metrics.frontend.delivered, func(l map[string]string) bool { return l["result"] == "accepted" }),
			Logins:        counterSum(n.metrics.auth.successes, mailProtocol),
			LoginFailures: counterSum(n.metrics.auth.failures, mailProtocol),
		}
		w.mu.Lock()
		w.samples = append(w.samples, s)
		if len(w.samples) > rateSamples {
			w.samples = append(w.samples[:0], w.samples[len(w.samples)-rateSamples:]...)
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// mailProtocol keeps the series of the mail protocols (not the admin
// token checks).
func mailProtocol(l map[string]string) bool { return l["protocol"] != apiAuthProtocol }

func (w *webAdmin) rates() []adminweb.RateSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]adminweb.RateSample(nil), w.samples...)
}

// close stops the sampler; it is a no-op on nil.
func (w *webAdmin) close() {
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
}

// counterSum adds the values of the series of a counter vector that keep
// accepts.
func counterSum(c prometheus.Collector, keep func(labels map[string]string) bool) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		labels := make(map[string]string, len(d.Label))
		for _, l := range d.Label {
			labels[l.GetName()] = l.GetValue()
		}
		if keep(labels) {
			sum += d.Counter.GetValue()
		}
	}
	return sum
}

// apiCaller calls the admin handler in-process for the web page, as the
// page's session: the same handler, checks and audit log as the admin
// socket and /api/.
type apiCaller struct{ n *Node }

// Call makes one admin API request.
func (c apiCaller) Call(ctx context.Context, who adminweb.Identity, method, path string, in, out any) error {
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode admin request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	ctx = context.WithValue(ctx, peerKey{}, who.Who)
	ctx = context.WithValue(ctx, remoteKey{}, who.Remote)
	req, err := http.NewRequestWithContext(ctx, method, "http://mailnode"+path, body)
	if err != nil {
		return fmt.Errorf("admin request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &answer{header: http.Header{}}
	c.n.adminAPI.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(rec.body.String())
		if json.Unmarshal(rec.body.Bytes(), &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &adminweb.APIError{Status: rec.status, Message: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
		return fmt.Errorf("decode admin answer: %w", err)
	}
	return nil
}

// answer is an in-process http.ResponseWriter holding a bounded answer.
type answer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (a *answer) Header() http.Header { return a.header }

func (a *answer) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
}

func (a *answer) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.body.Len()+len(p) > maxAPIAnswer {
		return 0, errors.New("admin answer too large")
	}
	return a.body.Write(p)
}
