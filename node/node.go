package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/protocols/outbound"
	"github.com/mailcluster/mailcluster/raftstore"
)

// shutdownTimeout bounds how long the admin and HTTP servers wait for
// requests in flight when the node stops.
const shutdownTimeout = 10 * time.Second

// Options are a node's dependencies that are not configuration.
type Options struct {
	// Logger receives the node's logs; nil discards them. Records get a
	// "node" attribute here and a "component" one from each part.
	Logger *slog.Logger
	// Version is the mailnode version, reported by metrics and status.
	Version string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Node is one mailnode process's server: the store, the frontends, the
// admin socket and the HTTP endpoints, started and stopped in order.
type Node struct {
	cfg     Config
	log     *slog.Logger
	version string
	now     func() time.Time
	metrics *metrics

	mu      sync.Mutex
	started bool
	closed  atomic.Bool
	// Set by Start, released by Close.
	dir       *dataDir
	cluster   *cluster.Cluster
	directory *directory.Directory
	store     *mailstore.Store
	outbound  *outbound.Deliverer
	// tickets wraps the frontends' TLS 1.3 session tickets under a key
	// derived from the master key, so sessions resume on any node.
	tickets *protocols.SessionTickets
	// outTLS is outbound delivery's TLS policy (MTA-STS, require_tls).
	outTLS *tlsPolicy
	// tlsReports sends the daily TLS reports; nil without a postmaster.
	tlsReports *tlsReporter
	backups    *backupService
	// scrubs runs the scrubs of the node's replicas; nil when they are
	// off or before the node starts them.
	scrubs atomic.Pointer[scrubber]
	// authState is the auth guard's cluster-wide lockout state, for
	// "mailnode security" (set once the frontends start).
	authState atomic.Pointer[protocols.SharedAuthState]
	// cmdRate is the frontends' command-rate limiter, for "security
	// blocked" and "unblock"; nil before the frontends start.
	cmdRate atomic.Pointer[protocols.CommandLimiter]
	// deliveries writes the SMTP frontends' delivery metadata (set once
	// the frontends start).
	deliveries *deliveryService
	// sessions is the registry of open sessions and the login history
	// (set once the frontends start).
	sessions *sessionService
	// filterHealth is what /readyz says about the content scanners.
	filterHealth filterHealth
	frontends    []frontend
	addrs        map[string]net.Addr
	adminSrv     *http.Server
	httpSrv      *http.Server
	// adminAPI is the admin socket's handler, also served (behind admin
	// tokens) at /api/ of the HTTPS listener.
	adminAPI http.Handler
	// httpMux is what the HTTP listener serves; the HTTPS one serves it
	// too, with /api/ and /admin/ in front.
	httpMux  *http.ServeMux
	httpsSrv *http.Server
	// httpsAddr is the HTTPS listener's bound address, read without the
	// lock by the HTTP listener's redirect.
	httpsAddr atomic.Pointer[string]
	// guard is the auth guard of the frontends; it also counts wrong
	// admin tokens.
	guard *protocols.AuthGuard
	// web is the web admin page (its sessions, the rate samples).
	web       *webAdmin
	startedAt time.Time
	serving   sync.WaitGroup
	// tls serves the frontends' certificate and keeps it current.
	tls *nodeTLS
	// stopMaintenance ends the background upkeep (DKIM keys) that
	// maintenance waits for.
	stopMaintenance context.CancelFunc
	maintenance     sync.WaitGroup

	failed    chan error
	closeOnce sync.Once
	closeErr  error
}

// protocolServer is what the smtp, imap and pop3 packages' servers have
// in common.
type protocolServer interface {
	Serve(net.Listener) error
	Close() error
}

// frontend is a protocol server and the listeners it serves.
type frontend struct {
	name      string
	srv       protocolServer
	listeners []net.Listener
}

// New checks cfg and returns a node that is not started yet.
func New(cfg Config, opts Options) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	return &Node{
		cfg:     cfg,
		log:     log,
		version: version,
		now:     now,
		metrics: newMetrics(cfg.NodeID, version),
		addrs:   make(map[string]net.Addr),
		failed:  make(chan error, 1),
	}, nil
}

// Start brings the node up: data directory (initialized on first use),
// keys and TLS, the store (waiting until every shard has a leader), the
// frontends, the admin socket, then HTTP. On error everything started so
// far is stopped again and the node cannot be started once more.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.closed.Load() {
		return errors.New("start node: already started or closed")
	}
	n.started = true
	defer func() {
		if err != nil {
			n.mu.Unlock()
			n.Close()
			n.mu.Lock()
		}
	}()

	log := n.log.With("component", "node")
	if n.dir, err = openDataDir(ctx, n.cfg, n.version, log, n.now()); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	cc := n.cfg.Cluster
	timing := cluster.WANTiming()
	if cc.RaftProfile == "lan" {
		timing = cluster.LANTiming()
	}
	if cc.HeartbeatTimeout > 0 {
		timing.HeartbeatTimeout = cc.HeartbeatTimeout
		timing.LeaderLeaseTimeout = min(timing.LeaderLeaseTimeout, cc.HeartbeatTimeout)
	}
	if cc.ElectionTimeout > 0 {
		timing.ElectionTimeout = cc.ElectionTimeout
	}
	if cc.LeaderLeaseTimeout > 0 {
		timing.LeaderLeaseTimeout = cc.LeaderLeaseTimeout
	}
	if n.cfg.RaftTiming != (raftstore.Timing{}) {
		timing = n.cfg.RaftTiming
	}
	n.cluster, err = cluster.Open(ctx, cluster.Config{
		DataDir:        n.cfg.DataDir,
		NodeID:         n.cfg.NodeID,
		Region:         cc.Region,
		Listen:         cc.Listen,
		Advertise:      cc.Advertise,
		MailShards:     n.dir.state.MailShards,
		Replicas:       cc.Replicas,
		MasterKey:      n.dir.masterKey,
		Timing:         timing,
		BootstrapToken: cc.BootstrapToken,
		DeadAfter:      cc.DeadAfter,
		Version:        n.version,
		Logger:         n.log,
	})
	if err != nil {
		n.dir.masterKey = [32]byte{}
		return fmt.Errorf("start node: %w", err)
	}
	n.directory, err = directory.New(n.cluster, directory.Config{MasterKey: n.dir.masterKey, Logger: n.log, MFAIssuer: n.cfg.Hostname,
		Postmaster: n.cfg.Postmaster, Now: n.now, DefaultQuota: directory.Quotas{Bytes: uint64(n.cfg.Limits.DefaultQuota), Messages: uint64(n.cfg.Limits.DefaultMessageQuota)}})
	if err == nil {
		n.tickets, err = protocols.NewSessionTickets(n.dir.masterKey[:])
	}
	// The cluster, the directory and the tickets hold what they derived
	// from the key; drop our copy.
	n.dir.masterKey = [32]byte{}
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if err := waitReady(ctx, n.cluster); err != nil {
		return fmt.Errorf("start node: store not ready: %w", err)
	}
	if err := n.directory.Init(ctx); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	// Users from before the key store get a key-encryption key of their
	// own, so that deleting them reaches later backups; the meta leader
	// does it (any node may; the change is idempotent).
	if n.cluster.LeadsMeta() {
		if _, err := n.directory.MigrateKeyStore(ctx); err != nil {
			n.log.Warn("move user keys to the key store; retried at the next start", "err", err)
		}
	}
	n.store = mailstore.New(n.cluster, n.directory, mailstore.Config{Logger: n.log, SRSDomain: n.cfg.Forwarding.SRSDomain,
		OverQuota: n.quotaRefused, SearchIndexer: imap.BuildSearchRecord})
	// The DNS records and the MTA-STS policy name the nodes' hosts; a
	// failure here only leaves this node's name out until the hourly
	// upkeep writes it (maintainDKIM).
	if err := n.directory.SetMailHost(ctx, n.cfg.NodeID, n.cfg.Hostname); err != nil {
		log.Warn("hostname not recorded in the directory", "err", err)
	}
	n.startMaintenance()
	if err := n.startOutbound(); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	n.startTLSReports(outboundSubmitter{n.store, n.outbound})
	if err := n.metrics.reg.Register(newShardCollector(n.cluster, n.cfg.DataDir)); err != nil {
		return fmt.Errorf("start node: register shard metrics: %w", err)
	}
	if err := n.startBackup(ctx); err != nil {
		return fmt.Errorf("start node: backups: %w", err)
	}

	tlsCfg, err := n.startTLS(ctx)
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if err := n.startFrontends(ctx, tlsCfg); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if err := n.startAdmin(); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if err := n.startHTTP(ctx); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if err := n.startHTTPS(ctx, tlsCfg); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	n.startedAt = n.now()
	n.metrics.up.Set(1)
	attrs := []any{"hostname", n.cfg.Hostname, "data_dir", n.cfg.DataDir, "version", n.version}
	for _, name := range ListenerNames() {
		if a := n.addrs[name]; a != nil {
			attrs = append(attrs, name, a.String())
		}
	}
	log.Info("node started", attrs...)
	return nil
}

// waitReady polls the store until every shard has a leader.
func waitReady(ctx context.Context, c *cluster.Cluster) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := c.Ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// Addr returns the bound address of a listener (see ListenerNames), or
// nil when it is disabled or the node is not started.
func (n *Node) Addr(name string) net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs[name]
}

// AdminSocket returns the path of the node's admin socket.
func (n *Node) AdminSocket() string { return admin.SocketPath(n.cfg.DataDir) }

// Cluster returns the node's cluster once started, for tests and tools
// that run in the node's process.
func (n *Node) Cluster() *cluster.Cluster {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cluster
}

// Directory returns the node's directory once started.
func (n *Node) Directory() *directory.Directory {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.directory
}

// Store returns the node's mail store, as the frontends see it, once
// started.
func (n *Node) Store() protocols.Store {
	n.mu.Lock()
	defer n.mu.Unlock()
	return protocols.StoreOf[*mailstore.Account](n.store)
}

// Failed delivers the first error of a listener that stopped serving on
// its own; the node should then be closed.
func (n *Node) Failed() <-chan error { return n.failed }

// serve runs one server loop and reports an unexpected end.
func (n *Node) serve(name string, fn func() error) {
	n.serving.Add(1)
	go func() {
		defer n.serving.Done()
		err := fn()
		if err == nil || errors.Is(err, http.ErrServerClosed) || n.closed.Load() {
			return
		}
		err = fmt.Errorf("%s listener: %w", name, err)
		n.log.Error("listener stopped", "component", "node", "listener", name, "err", err)
		select {
		case n.failed <- err:
		default:
		}
	}()
}

// status reports the node's state for the admin API.
func (n *Node) status(ctx context.Context) admin.Status {
	n.mu.Lock()
	s := admin.Status{
		NodeID:    n.cfg.NodeID,
		Hostname:  n.cfg.Hostname,
		Version:   n.version,
		Started:   n.startedAt,
		Listeners: make(map[string]string, len(n.addrs)),
	}
	for name, a := range n.addrs {
		s.Listeners[name] = a.String()
	}
	c := n.cluster
	n.mu.Unlock()
	if err := n.ready(ctx, c); err != nil {
		s.ReadyError = err.Error()
	} else {
		s.Ready = true
	}
	return s
}

// ready reports whether the node can serve mail.
func (n *Node) ready(ctx context.Context, c *cluster.Cluster) error {
	if n.closed.Load() {
		return errors.New("node is shutting down")
	}
	if c == nil {
		return errors.New("store not open")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return c.Ready(ctx)
}

// Close stops the node: frontends first (no new mail, sessions end),
// then the admin socket and HTTP, then the store, then the data
// directory's lock. It is idempotent and safe after a failed Start.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		n.metrics.up.Set(0)
		n.mu.Lock()
		defer n.mu.Unlock()
		log := n.log.With("component", "node")
		var errs []error
		for _, f := range n.frontends {
			if err := f.srv.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", f.name, err))
			}
		}
		n.stopTLS()
		if n.stopMaintenance != nil {
			n.stopMaintenance()
			n.maintenance.Wait()
		}
		n.sessions.close()
		n.deliveries.close()
		for _, srv := range []*http.Server{n.adminSrv, n.httpSrv, n.httpsSrv} {
			if srv == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
			}
			cancel()
		}
		n.serving.Wait()
		n.web.close()
		n.stopBackup()
		if n.tlsReports != nil {
			n.tlsReports.close()
		}
		if n.outbound != nil {
			n.outbound.Close()
			n.outTLS.sts.Close()
		}
		if n.store != nil {
			n.store.Close()
		}
		if n.cluster != nil {
			// Hands the leadership of this node's groups over first.
			if err := n.cluster.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close store: %w", err))
			}
		}
		if n.directory != nil {
			n.directory.Close()
		}
		if n.dir != nil {
			if err := n.dir.Close(); err != nil {
				errs = append(errs, fmt.Errorf("release data directory: %w", err))
			}
		}
		n.closeErr = errors.Join(errs...)
		if n.started {
			log.Info("node stopped")
		}
	})
	return n.closeErr
}
