package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols/mtasts"
	"github.com/mailcluster/mailcluster/protocols/outbound"
	"github.com/mailcluster/mailcluster/protocols/tlsrpt"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// OutboundConfig is the [outbound] section: delivery of mail that users
// send to addresses outside the cluster.
type OutboundConfig struct {
	// Port is the remote SMTP port (default 25; tests and staging point
	// it at a loopback MTA).
	Port int `toml:"port"`
	// Expire is how long a message is retried before it bounces
	// (default 5 days).
	Expire time.Duration `toml:"expire"`
	// DelayNotice is the age at which the sender is told once that a
	// message is still being retried (default 4 h; negative: never).
	DelayNotice time.Duration `toml:"delay_notice"`
	// RetryBase is the first retry interval; later ones grow to 240
	// times it (default 1 m: retries after 1, 5, 15, 30 minutes, 1, 2,
	// then every 4 hours).
	RetryBase time.Duration `toml:"retry_base"`
	// DomainConnections bounds the connections open at one time to one
	// recipient domain (default 4).
	DomainConnections int `toml:"domain_connections"`
	// AttemptTimeout bounds one delivery attempt of a message, and is
	// how long the claim of a node that died during an attempt holds the
	// message before another attempt (default 10 m).
	AttemptTimeout time.Duration `toml:"attempt_timeout"`
	// RequireTLS makes every outbound connection require STARTTLS with
	// a certificate that verifies (against the system's roots, or
	// CAFile) for the MX's name; a destination without it is retried,
	// then bounced. Off by default: opportunistic TLS, and MTA-STS
	// where the recipient domain publishes a policy.
	RequireTLS bool `toml:"require_tls"`
	// CAFile is a PEM file of root certificates that replaces the
	// system's for verifying MX certificates and MTA-STS policy hosts
	// (staging with a private CA; tests). Empty: the system's roots.
	CAFile string `toml:"ca_file"`
	// MTASTSPort is the HTTPS port MTA-STS policies are fetched from
	// (default 443; staging and tests point it at a loopback server).
	MTASTSPort int `toml:"mta_sts_port"`
	// TLSReportEvery replaces the daily period of TLS reports (RFC
	// 8460), which otherwise end at each UTC midnight. Not read from the
	// file; tests shorten it.
	TLSReportEvery time.Duration `toml:"-"`
	// TLSReportSave replaces how often a node stores its counts for the
	// TLS reports in the meta shard (default a minute). Not read from
	// the file; tests shorten it.
	TLSReportSave time.Duration `toml:"-"`
	// Poll is the longest the deliverer waits before looking at the
	// queues again (a new shard leader finds its queue within it;
	// default 5 s). Not read from the file; tests shorten it.
	Poll time.Duration `toml:"-"`
}

func (o OutboundConfig) validate() []error {
	var errs []error
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("outbound.port %d: want 1-65535", o.Port))
	}
	if o.Expire < 0 {
		errs = append(errs, fmt.Errorf("outbound.expire %s: want a positive duration", o.Expire))
	}
	if o.AttemptTimeout < 0 {
		errs = append(errs, fmt.Errorf("outbound.attempt_timeout %s: want a positive duration", o.AttemptTimeout))
	}
	if o.RetryBase < 0 {
		errs = append(errs, fmt.Errorf("outbound.retry_base %s: want a positive duration", o.RetryBase))
	}
	if o.MTASTSPort < 0 || o.MTASTSPort > 65535 {
		errs = append(errs, fmt.Errorf("outbound.mta_sts_port %d: want 1-65535", o.MTASTSPort))
	}
	if o.CAFile != "" {
		if _, err := loadCAFile(o.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("outbound.ca_file: %w", err))
		}
	}
	if o.DomainConnections < 0 || o.DomainConnections > 100 {
		errs = append(errs, fmt.Errorf("outbound.domain_connections %d: want 0-100", o.DomainConnections))
	}
	return errs
}

// startOutbound starts delivery of the queues of the shards this node
// leads.
func (n *Node) startOutbound() error {
	m := newOutboundMetrics()
	o := n.cfg.Outbound
	var roots *x509.CertPool
	if o.CAFile != "" {
		var err error
		if roots, err = loadCAFile(o.CAFile); err != nil {
			return fmt.Errorf("outbound.ca_file: %w", err)
		}
	}
	resolver := n.cfg.DNS.resolver()
	tp := &tlsPolicy{
		sts:        mtasts.New(mtasts.Config{Resolver: resolver, RootCAs: roots, Port: o.MTASTSPort}),
		log:        n.log,
		tlsResults: m.tlsResults,
		rpt:        tlsrpt.NewCollector(n.now()),
		policies:   map[string]tlsrpt.Policy{},
	}
	n.outTLS = tp
	n.outbound = outbound.New(n.store, outbound.Config{
		Hostname:          n.cfg.Hostname,
		Resolver:          resolver,
		TLSPolicy:         tp.decide,
		OnTLS:             tp.record,
		RequireTLS:        o.RequireTLS,
		RootCAs:           roots,
		Port:              o.Port,
		Expire:            o.Expire,
		DelayNotice:       o.DelayNotice,
		RetryBase:         o.RetryBase,
		DomainConnections: o.DomainConnections,
		AttemptTimeout:    o.AttemptTimeout,
		Poll:              o.Poll,
		Signer:            n.directory.DKIMSigner(),
		OnResult:          func(r string) { m.deliveries.WithLabelValues(r).Inc() },
		Logger:            n.log,
		Now:               n.now,
	})
	d := n.outbound
	m.size = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mail_outbound_queue_messages",
		Help: "Messages in the outbound queues of the shards this node leads that still have recipients to deliver to.",
	}, func() float64 { return float64(d.Stats().Messages) })
	m.oldest = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mail_outbound_queue_oldest_seconds",
		Help: "Age of the oldest message in the outbound queues of the shards this node leads.",
	}, func() float64 { return d.Stats().Oldest.Seconds() })
	for _, c := range []prometheus.Collector{m.deliveries, m.size, m.oldest, m.tlsResults} {
		if err := n.metrics.reg.Register(c); err != nil {
			return fmt.Errorf("register outbound metrics: %w", err)
		}
	}
	return nil
}

// outboundMetrics are the queue's metrics.
type outboundMetrics struct {
	deliveries   *prometheus.CounterVec
	tlsResults   *prometheus.CounterVec
	size, oldest prometheus.GaugeFunc
}

func newOutboundMetrics() *outboundMetrics {
	return &outboundMetrics{deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mail_outbound_deliveries_total",
		Help: "Recipients of outbound delivery attempts by result (delivered, deferred, failed, expired).",
	}, []string{"result"}),
		tlsResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_outbound_tls_total",
			Help: "TLS outcomes of outbound connections by policy (none, mta-sts-testing, mta-sts-enforce, require-tls) and RFC 8460 result (success, starttls-not-supported, certificate-host-mismatch, ...).",
		}, []string{"policy", "result"}),
	}
}

// outboundSubmitter is the submission port's way out: the store's queue,
// and a kick to the deliverer so a new message leaves at once.
type outboundSubmitter struct {
	store *mailstore.Store
	d     *outbound.Deliverer
}

func (o outboundSubmitter) SendsAs(ctx context.Context, user, address string) (bool, error) {
	return o.store.SendsAs(ctx, user, address)
}

func (o outboundSubmitter) SaveSent(ctx context.Context, user string, msg, fingerprint []byte) error {
	return o.store.SaveSent(ctx, user, msg, fingerprint)
}

func (o outboundSubmitter) Submit(ctx context.Context, sub schema.Submission) error {
	if err := o.store.Submit(ctx, sub); err != nil {
		return err
	}
	o.d.Kick()
	return nil
}
