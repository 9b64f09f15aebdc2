package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/protocols/pop3"
	"github.com/mailcluster/mailcluster/protocols/smtp"
)

// Lines written to a client refused by the connection limits, in each
// protocol's "try again later" form.
const (
	busySMTP = "421 4.7.0 too many connections\r\n"
	busyIMAP = "* BYE too many connections\r\n"
	busyPOP3 = "-ERR [SYS/TEMP] too many connections\r\n"
	// rejectTimeout bounds the handshake and write to a refused client.
	rejectTimeout = 3 * time.Second
)

// listenerSpec says how one listener is served.
type listenerSpec struct {
	name        string
	frontend    string // which server serves it
	busy        string
	implicitTLS bool
	startTLS    string // the command that starts TLS on a plain port
	tagged      bool   // commands carry a tag (IMAP)
}

var frontendListeners = []listenerSpec{
	{ListenSMTP, "smtp-mx", busySMTP, false, "STARTTLS", false},
	{ListenSubmission, "smtp-submission", busySMTP, false, "STARTTLS", false},
	{ListenSubmissions, "smtp-submission", busySMTP, true, "", false},
	{ListenIMAP, "imap", busyIMAP, false, "STARTTLS", true},
	{ListenIMAPS, "imap", busyIMAP, true, "", false},
	{ListenPOP3, "pop3", busyPOP3, false, "STLS", false},
	{ListenPOP3S, "pop3", busyPOP3, true, "", false},
}

// startFrontends binds every enabled frontend listener (all of them
// before serving any, so a busy port fails the start cleanly), wraps
// them in the node's connection limiter, the pre-login timeouts (and TLS
// for implicit-TLS ports), and starts the protocol servers.
func (n *Node) startFrontends(ctx context.Context, tlsCfg *tls.Config) error {
	// Every handshake, implicit or STARTTLS, reports its end to the
	// timeouts of its connection.
	tlsCfg = protocols.TrackHandshakes(tlsCfg)
	limiter := protocols.NewConnLimiter(n.cfg.Limits.MaxConnections, n.cfg.Limits.MaxConnectionsPerIP)
	cmdRate := protocols.NewCommandLimiter(n.cfg.Limits.commandRate(func(closing bool) {
		action := "refused"
		if closing {
			action = "closed"
		}
		n.metrics.commandsRefused.WithLabelValues(action).Inc()
	}), n.now)
	n.cmdRate.Store(cmdRate)
	deliveries := n.startDeliveryLog()
	n.deliveries = deliveries
	guardCfg := n.cfg.AuthGuard.protocols(n.log, n.metrics.auth)
	shared := n.sharedAuthState()
	n.authState.Store(shared)
	guardCfg.Failures, guardCfg.Known = shared, shared
	sessions := n.startSessions()
	guardCfg.Sessions, guardCfg.Logins = sessions.registry, sessions
	guard := protocols.NewAuthGuard(guardCfg, n.now)
	n.guard = guard
	store := protocols.StoreOf[*mailstore.Account](n.store)

	byFrontend := map[string][]net.Listener{}
	var bound []net.Listener
	for _, spec := range frontendListeners {
		addr := n.cfg.Listen.Get(spec.name)
		if addr == "" {
			continue
		}
		raw, err := listenTCP(ctx, spec.name, addr)
		if err != nil {
			for _, ln := range bound {
				ln.Close()
			}
			return err
		}
		bound = append(bound, raw)
		n.addrs[spec.name] = raw.Addr()
		var rejectTLS *tls.Config
		if spec.implicitTLS {
			rejectTLS = tlsCfg
		}
		ln := limiter.ListenerWithReason(raw, n.rejecter(spec.name, spec.busy, rejectTLS))
		ln = protocols.NewTimeoutListener(ln, protocols.TimeoutListenerConfig{
			Timeouts:         n.cfg.Limits.connTimeouts(),
			ImplicitTLS:      spec.implicitTLS,
			StartTLS:         spec.startTLS,
			Tagged:           spec.tagged,
			LoginOnFirstLine: spec.name == ListenSMTP,
			OnTimeout:        n.timedOut(spec.name),
			Observer:         n.metrics.frontend.listener(frontendProtocol(spec.frontend), spec.name),
		})
		if spec.implicitTLS {
			ln = tls.NewListener(ln, tlsCfg)
		}
		byFrontend[spec.frontend] = append(byFrontend[spec.frontend], ln)
	}

	maxMsg := int64(n.cfg.Limits.MaxMessageSize)
	mxFilter, submissionFilter := n.contentFilters()
	senderCheck := n.senderChecker()
	fm := n.metrics.frontend
	smtpCommands := fm.commands("smtp", smtp.Commands)
	makers := []struct {
		name string
		make func() (protocolServer, error)
	}{
		{"smtp-mx", func() (protocolServer, error) {
			return smtp.NewServer(smtp.Config{Mode: smtp.ModeMX, Hostname: n.cfg.Hostname, TLS: tlsCfg, Guard: guard,
				Logger: n.log, MaxMessageBytes: maxMsg, MaxRecipients: n.cfg.Limits.MaxRecipients, Filter: mxFilter,
				AuthCheck: senderCheck, Observer: smtpCommands, Deliveries: fm.deliveries("mx"), CommandRate: cmdRate, DeliveryLog: deliveries,
				Forwarder: forwarder{n.store, n.outbound}, Postmaster: n.barePostmaster,
				WithheldForwards: func(reason string, rcpts int) {
					n.metrics.forwardsWithheld.WithLabelValues(reason).Add(float64(rcpts))
				}}, store)
		}},
		{"smtp-submission", func() (protocolServer, error) {
			return smtp.NewServer(smtp.Config{Mode: smtp.ModeSubmission, Hostname: n.cfg.Hostname, TLS: tlsCfg, Guard: guard,
				Logger: n.log, MaxMessageBytes: maxMsg, MaxRecipients: n.cfg.Limits.MaxRecipients, Filter: submissionFilter,
				Observer: smtpCommands, Deliveries: fm.deliveries("submission"), CommandRate: cmdRate, DeliveryLog: deliveries,
				Outbound: outboundSubmitter{n.store, n.outbound}}, store)
		}},
		{"imap", func() (protocolServer, error) {
			return imap.NewServer(imap.Config{Hostname: n.cfg.Hostname, TLS: tlsCfg, Guard: guard, Logger: n.log,
				MaxMessageSize: maxMsg, Observer: fm.commands("imap", imap.Commands), CommandRate: cmdRate,
				SearchCacheBytes: searchCacheBytes(n.cfg.Limits.SearchCache)}, store)
		}},
		{"pop3", func() (protocolServer, error) {
			return pop3.NewServer(pop3.Config{Hostname: n.cfg.Hostname, TLS: tlsCfg, Guard: guard, Logger: n.log,
				HandshakeTimeout: n.cfg.Limits.HandshakeTimeout, Observer: fm.commands("pop3", pop3.Commands), CommandRate: cmdRate}, store)
		}},
	}
	for _, m := range makers {
		lns := byFrontend[m.name]
		if len(lns) == 0 {
			continue
		}
		srv, err := m.make()
		if err != nil {
			for _, ln := range bound {
				ln.Close()
			}
			return fmt.Errorf("%s server: %w", m.name, err)
		}
		n.frontends = append(n.frontends, frontend{name: m.name, srv: srv, listeners: lns})
	}
	for _, f := range n.frontends {
		for _, ln := range f.listeners {
			n.serve(f.name, func() error { return f.srv.Serve(ln) })
		}
	}
	return nil
}

// frontendProtocol names the protocol of a frontend in metrics.
func frontendProtocol(frontend string) string {
	if strings.HasPrefix(frontend, "smtp") {
		return "smtp"
	}
	return frontend
}

func listenTCP(ctx context.Context, name, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", name, addr, err)
	}
	return ln, nil
}

// rejecter returns the connection limiter's callback for one listener:
// it counts and logs the refusal and writes the protocol's busy line
// (inside TLS for implicit-TLS ports, so the client can read it) within
// a short deadline.
func (n *Node) rejecter(name, line string, tlsCfg *tls.Config) func(net.Conn, protocols.Refusal) {
	log := n.log.With("component", "frontend", "listener", name)
	for _, why := range []protocols.Refusal{protocols.RefusedMaxConnections, protocols.RefusedMaxPerIP} {
		n.metrics.rejected.WithLabelValues(name, string(why)) // exists from the start, at 0
	}
	return func(c net.Conn, why protocols.Refusal) {
		n.metrics.rejected.WithLabelValues(name, string(why)).Inc()
		log.Info("connection refused", "reason", string(why), "remote_ip", protocols.RemoteIP(c.RemoteAddr()).String())
		if err := c.SetDeadline(time.Now().Add(rejectTimeout)); err != nil {
			return
		}
		if tlsCfg != nil {
			tc := tls.Server(c, tlsCfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			defer tc.Close()
			c = tc
		}
		// The client may already be gone; nothing more to do then.
		_, _ = io.WriteString(c, line)
	}
}

// timedOut returns the callback of one listener's pre-login timeouts: it
// counts and logs each connection they cut off.
func (n *Node) timedOut(name string) func(protocols.TimeoutKind, net.Addr, time.Duration) {
	log := n.log.With("component", "frontend", "listener", name)
	handshakes := n.metrics.handshakeTimeouts.WithLabelValues(name)
	for _, kind := range []protocols.TimeoutKind{protocols.TimeoutIdle, protocols.TimeoutLogin} {
		n.metrics.preLoginTimeouts.WithLabelValues(name, string(kind)) // exists from the start, at 0
	}
	return func(kind protocols.TimeoutKind, remote net.Addr, open time.Duration) {
		ip := protocols.RemoteIP(remote).String()
		if kind == protocols.TimeoutHandshake {
			handshakes.Inc()
			log.Info("tls handshake timed out", "remote_ip", ip, "open", open.Round(time.Millisecond))
			return
		}
		n.metrics.preLoginTimeouts.WithLabelValues(name, string(kind)).Inc()
		log.Info("closed before login", "reason", string(kind), "remote_ip", ip, "open", open.Round(time.Millisecond))
	}
}

// startAdmin opens the admin socket in the data directory.
func (n *Node) startAdmin() error {
	ln, err := admin.Listen(n.cfg.DataDir)
	if err != nil {
		return err
	}
	log := n.log.With("component", "admin")
	// One handler serves the socket and, behind token authentication,
	// the HTTPS admin API (https.go).
	n.adminAPI = n.auditAdmin(n.scrubAdmin(n.queueAdmin(n.dkimAdmin(n.sessionsAdmin(n.securityAdmin(n.importAdmin(n.exportAdmin(n.backupAdmin(admin.NewHandler(adminDirectory{n.directory, n.cluster, n}, n.cluster, n.status, log), log), log), log), log), log), log), log), log), log)
	n.adminSrv = &http.Server{
		Handler:           n.adminAPI,
		ConnContext:       adminConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv := n.adminSrv
	n.serve("admin", func() error { return srv.Serve(ln) })
	return nil
}

// startHTTP serves /metrics, /healthz, /readyz, the client
// autoconfiguration documents (autoconfig.go) and the MTA-STS policy
// (maildns.go). The HTTPS listener (https.go) serves the same mux,
// n.httpMux, so a handler registered here is on both.
func (n *Node) startHTTP(ctx context.Context) error {
	log := n.log.With("component", "http")
	mux := http.NewServeMux()
	n.httpMux = mux
	if err := n.registerAutoconfig(mux); err != nil {
		return err
	}
	n.registerMTASTS(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	if n.cfg.Debug.PProf {
		registerPProf(mux)
	}
	c := n.cluster
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := n.ready(r.Context(), c); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready: "+err.Error()+"\n"+n.backupDetails()+n.filterHealth.details())
			return
		}
		io.WriteString(w, "ready\n"+n.backupDetails()+n.filterHealth.details())
	})
	addr := n.cfg.Listen.HTTP
	if addr == "" {
		return nil
	}
	ln, err := listenTCP(ctx, ListenHTTP, addr)
	if err != nil {
		return err
	}
	n.addrs[ListenHTTP] = ln.Addr()
	n.httpSrv = &http.Server{
		Handler:           n.refuseAdminOverHTTP(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv := n.httpSrv
	n.serve(ListenHTTP, func() error { return srv.Serve(ln) })
	return nil
}

// adminDirectory is what the admin socket manages: the directory, and
// compaction of this node's replicas.
type adminDirectory struct {
	*directory.Directory
	c *cluster.Cluster
	n *Node
}

// Compact snapshots every replica of this node, truncating its logs.
func (a adminDirectory) Compact(ctx context.Context) error { return a.c.Compact(ctx) }

// User shows a user as the directory has it, with the bytes their
// messages take (from the user's mail shard; left out when the shard
// cannot be read now).
func (a adminDirectory) User(ctx context.Context, address string) (directory.UserInfo, error) {
	u, err := a.Directory.User(ctx, address)
	if err != nil {
		return u, err
	}
	if q, err := a.n.store.UserQuota(ctx, address); err == nil {
		u.Usage, u.Messages = &q.Usage, &q.Messages
	}
	return u, nil
}

// searchCacheBytes turns limits.search_cache into the IMAP server's
// setting, where 0 means its default and a negative value off.
func searchCacheBytes(b ByteSize) int64 {
	if b == 0 {
		return -1
	}
	return int64(b)
}
