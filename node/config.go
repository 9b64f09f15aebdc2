package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Listener names, as used in Config.Listen, in metrics and by Node.Addr.
const (
	ListenSMTP        = "smtp"
	ListenSubmission  = "submission"
	ListenSubmissions = "submissions"
	ListenIMAP        = "imap"
	ListenIMAPS       = "imaps"
	ListenPOP3        = "pop3"
	ListenPOP3S       = "pop3s"
	ListenHTTP        = "http"
	// ListenHTTPS serves what ListenHTTP does over TLS, plus the admin API
	// (/api/) and the web admin page (/admin/).
	ListenHTTPS = "https"
	// ListenACMEHTTP and ListenACMETLS answer the ACME CA's http-01 and
	// tls-alpn-01 challenges (tls.acme); they are not in ListenerNames.
	ListenACMEHTTP = "acme_http"
	ListenACMETLS  = "acme_tls"
)

// ListenerNames lists every listener a node may open, in start-up order.
func ListenerNames() []string {
	return []string{ListenSMTP, ListenSubmission, ListenSubmissions, ListenIMAP, ListenIMAPS, ListenPOP3, ListenPOP3S, ListenHTTP, ListenHTTPS}
}

// allListenerNames adds the ACME challenge listeners, which only an ACME
// node opens, to ListenerNames.
func allListenerNames() []string {
	return append(ListenerNames(), ListenACMEHTTP, ListenACMETLS)
}

// Limits on what the node accepts from the network.
const (
	// DefaultMaxMessageSize is the largest message SMTP and IMAP APPEND
	// accept.
	DefaultMaxMessageSize = 50 << 20
	// maxMessageSizeCeiling keeps a configured limit within what the
	// store accepts, trace headers included.
	maxMessageSizeCeiling = mailstore.MaxMessageSize - protocols.TraceHeadroom
	// DefaultMaxRecipients bounds the recipients of one SMTP transaction.
	DefaultMaxRecipients = 100
	// DefaultMaxConnections bounds the open client connections of a node
	// over all its frontends.
	DefaultMaxConnections = 1000
	// DefaultMaxConnectionsPerIP bounds the open client connections from
	// one client address.
	DefaultMaxConnectionsPerIP = 50
	// DefaultMailShards is the number of mail shards of a new data
	// directory.
	DefaultMailShards = 8
	maxMailShards     = 1024
)

// Config is everything a node is configured with: the TOML file, with
// command-line flags applied on top. Start from Default() (or Load) and
// call Validate before use.
type Config struct {
	// Hostname is the node's public name, announced in greetings and
	// Received headers and used for the generated certificate.
	Hostname string `toml:"hostname"`
	// DataDir holds everything the node stores; it is created (mode 0700)
	// and initialized on the first start.
	DataDir string `toml:"data_dir"`
	// NodeID is this node's stable id within the cluster. It is recorded
	// at init and may not change afterwards.
	NodeID string `toml:"node_id"`
	// MailShards is the number of mail shards, fixed when the data
	// directory is initialized.
	MailShards int `toml:"mail_shards"`

	Listen    Listeners       `toml:"listen"`
	TLS       TLSFiles        `toml:"tls"`
	Keys      KeyFiles        `toml:"keys"`
	Limits    Limits          `toml:"limits"`
	AuthGuard AuthGuardConfig `toml:"auth_guard"`
	Log       LogConfig       `toml:"log"`
	Backup    BackupConfig    `toml:"backup"`
	// Scrub is the periodic read of every stored message (see
	// ScrubConfig); weekly by default.
	Scrub   ScrubConfig   `toml:"scrub"`
	Cluster ClusterConfig `toml:"cluster"`
	// Autoconfig is what the client autoconfiguration documents
	// advertise (see AutoconfigConfig).
	Autoconfig AutoconfigConfig `toml:"autoconfig"`
	// Filters are the content scanners mail passes before it is stored
	// (see FiltersConfig); none by default.
	Filters FiltersConfig `toml:"filters"`
	// DNS is the resolver of the sender checks (see DNSConfig).
	DNS DNSConfig `toml:"dns"`
	// Inbound is what the MX port checks (see InboundConfig).
	Inbound InboundConfig `toml:"inbound"`
	// MTASTS is the MTA-STS policy served for every domain (see
	// MTASTSConfig).
	MTASTS MTASTSConfig `toml:"mta_sts"`
	// Outbound is the delivery of mail to other domains (see
	// OutboundConfig).
	Outbound OutboundConfig `toml:"outbound"`
	// Forwarding is the forwarding of aliases to addresses outside the
	// cluster (see ForwardingConfig).
	Forwarding ForwardingConfig `toml:"forwarding"`
	// Postmaster is the address (a user's or an alias's) that receives
	// mail to postmaster@ of every served domain that has no postmaster
	// user or alias of its own (RFC 5321 section 4.5.1); "" for none.
	Postmaster string `toml:"postmaster"`
	// PrimaryDomain is the domain whose postmaster gets "RCPT
	// TO:<postmaster>" without a domain on the MX port (RFC 5321 section
	// 4.5.1). "" means the domain of Postmaster, else the first served
	// domain in name order.
	PrimaryDomain string `toml:"primary_domain"`
	// AuditRetention is how long the audit log of administrative actions
	// keeps an entry (default 400 days).
	AuditRetention time.Duration `toml:"audit_retention"`
	// LoginHistoryRetention is how long a user's recent logins are kept
	// (default 30 days).
	LoginHistoryRetention time.Duration `toml:"login_history_retention"`
	// DeliveryMetadataRetention is how long the delivery records (time,
	// sender IP, sender, recipients, Message-ID, TLS, result of each SMTP
	// transaction) are kept before they are purged cluster-wide (default
	// 60 days).
	DeliveryMetadataRetention time.Duration `toml:"delivery_metadata_retention"`

	// Debug switches on diagnostics an operator uses to see where a
	// node's time goes (see DebugConfig); all off by default.
	Debug DebugConfig `toml:"debug"`

	// RaftTiming overrides the Raft timeouts of every shard (over
	// cluster.raft_profile). It is not read from the config file; tests
	// shorten elections with it.
	RaftTiming raftstore.Timing `toml:"-"`
	// AdminWebRateInterval overrides how often the web admin page samples
	// the message and login counters it charts (0: every 10s). It is not
	// read from the config file; tests shorten it.
	AdminWebRateInterval time.Duration `toml:"-"`
}

// ClusterConfig is the node's place in the cluster: its cluster port,
// region, and on its first start the cluster it joins.
type ClusterConfig struct {
	// Region names where the node runs ("eu", "us-east"...); mail shards
	// are homed in regions and domains may be pinned to one.
	Region string `toml:"region"`
	// Listen is the cluster port: every Raft group and the internal RPC,
	// under mutual TLS.
	Listen string `toml:"listen"`
	// Advertise is the address other nodes reach the cluster port at
	// ("" means listen; required when listen is 0.0.0.0).
	Advertise string `toml:"advertise"`
	// Join is a member's cluster address to join on the first start (with
	// a token from "mailnode cluster token"); without it a new data
	// directory creates a new cluster.
	Join string `toml:"join"`
	// TokenFile holds the join token (or use --token).
	TokenFile string `toml:"token_file"`
	// BootstrapTokenFile holds a token this node accepts for any number of
	// joins (automated deployments such as docker compose); one-time
	// tokens are the safer default.
	BootstrapTokenFile string `toml:"bootstrap_token_file"`
	// Replicas is how many replicas each mail shard keeps (0: 3).
	Replicas int `toml:"replicas"`
	// RaftProfile is "wan" (default: timeouts that hold across regions)
	// or "lan" (faster failover for nodes on one network).
	RaftProfile string `toml:"raft_profile"`
	// DeadAfter is how long a node may be unreachable before its
	// replicas are rebuilt elsewhere (0: 5m).
	DeadAfter time.Duration `toml:"dead_after"`
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout override
	// the profile's Raft timeouts (0 keeps the profile's). Every node of
	// a cluster should use the same values.
	HeartbeatTimeout   time.Duration `toml:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `toml:"election_timeout"`
	LeaderLeaseTimeout time.Duration `toml:"leader_lease_timeout"`

	// Token and BootstrapToken are set from the command line or read from
	// the files above.
	Token          string `toml:"-"`
	BootstrapToken string `toml:"-"`
}

// DefaultClusterPort is the development node's cluster port.
const DefaultClusterPort = 2700

// Listeners holds the address ("host:port") of every listener; "" disables
// one. Port 0 picks a free port (tests read it back with Node.Addr).
type Listeners struct {
	// SMTP is the MX listener (STARTTLS offered, no AUTH).
	SMTP string `toml:"smtp"`
	// Submission is message submission with STARTTLS required before AUTH.
	Submission string `toml:"submission"`
	// Submissions is message submission over implicit TLS.
	Submissions string `toml:"submissions"`
	// IMAP offers STARTTLS; IMAPS is implicit TLS.
	IMAP  string `toml:"imap"`
	IMAPS string `toml:"imaps"`
	// POP3 offers STLS; POP3S is implicit TLS.
	POP3  string `toml:"pop3"`
	POP3S string `toml:"pop3s"`
	// HTTP serves /metrics, /healthz and /readyz.
	HTTP string `toml:"http"`
	// HTTPS serves the same over TLS (the node's certificate), plus the
	// admin API at /api/ and the web admin page at /admin/.
	HTTPS string `toml:"https"`
	// ACMEHTTP answers the ACME CA's http-01 challenges (port 80 in
	// production) and ACMETLS its tls-alpn-01 challenges (port 443);
	// only with tls.acme, which needs at least one of them.
	ACMEHTTP string `toml:"acme_http"`
	ACMETLS  string `toml:"acme_tls"`
}

// Get returns the address of the named listener.
func (l Listeners) Get(name string) string {
	switch name {
	case ListenSMTP:
		return l.SMTP
	case ListenSubmission:
		return l.Submission
	case ListenSubmissions:
		return l.Submissions
	case ListenIMAP:
		return l.IMAP
	case ListenIMAPS:
		return l.IMAPS
	case ListenPOP3:
		return l.POP3
	case ListenPOP3S:
		return l.POP3S
	case ListenHTTP:
		return l.HTTP
	case ListenHTTPS:
		return l.HTTPS
	case ListenACMEHTTP:
		return l.ACMEHTTP
	case ListenACMETLS:
		return l.ACMETLS
	}
	return ""
}

// set changes the address of the named listener.
func (l *Listeners) set(name, addr string) {
	switch name {
	case ListenSMTP:
		l.SMTP = addr
	case ListenSubmission:
		l.Submission = addr
	case ListenSubmissions:
		l.Submissions = addr
	case ListenIMAP:
		l.IMAP = addr
	case ListenIMAPS:
		l.IMAPS = addr
	case ListenPOP3:
		l.POP3 = addr
	case ListenPOP3S:
		l.POP3S = addr
	case ListenHTTP:
		l.HTTP = addr
	case ListenHTTPS:
		l.HTTPS = addr
	case ListenACMEHTTP:
		l.ACMEHTTP = addr
	case ListenACMETLS:
		l.ACMETLS = addr
	}
}

// BindHost replaces the host part of every enabled listener, keeping its
// port; a container uses it to listen on 0.0.0.0 with the default ports.
func (l *Listeners) BindHost(host string) error {
	for _, name := range allListenerNames() {
		addr := l.Get(name)
		if addr == "" {
			continue
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("listener %s %q: %w", name, addr, err)
		}
		l.set(name, net.JoinHostPort(host, port))
	}
	return nil
}

// TLSFiles says where the frontends' certificate comes from: the PEM
// certificate chain and key files CertFile and KeyFile (reloaded when they
// change), or an ACME CA (ACME). With neither the node generates a
// self-signed certificate for Hostname into DataDir/tls at init, which
// suits development only.
type TLSFiles struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ReloadInterval is how often cert_file and key_file are checked for
	// a change (modification time, size, file identity); 0 checks only
	// on SIGHUP.
	ReloadInterval time.Duration `toml:"reload_interval"`

	// ACME obtains and renews a certificate for every name of ACMEHosts
	// from an ACME (RFC 8555) CA, accepting its terms of service.
	ACME bool `toml:"acme"`
	// ACMEDirectory is the CA's directory URL ("": Let's Encrypt).
	ACMEDirectory string `toml:"acme_directory"`
	// ACMEEmail is the contact address of the ACME account (optional).
	ACMEEmail string `toml:"acme_email"`
	// ACMEHosts are the names certificates are obtained for ("": the
	// hostname and autoconfig.host). The first is served to clients that
	// name no host or another one.
	ACMEHosts []string `toml:"acme_hosts"`
	// ACMECAFile holds PEM CA certificates trusted for the ACME server's
	// own HTTPS (a private CA); "" uses the system's roots.
	ACMECAFile string `toml:"acme_ca_file"`
}

// DefaultTLSReloadInterval is how often certificate files are checked
// for a change.
const DefaultTLSReloadInterval = 5 * time.Second

// minTLSReloadInterval bounds the polling of the certificate files.
const minTLSReloadInterval = 100 * time.Millisecond

func (c Config) validateTLS() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("tls: cert_file and key_file must be set together")
	}
	if t.ReloadInterval < 0 || (t.ReloadInterval > 0 && t.ReloadInterval < minTLSReloadInterval) {
		bad("tls.reload_interval %s: want 0 (on SIGHUP only) or at least %s", t.ReloadInterval, minTLSReloadInterval)
	}
	if !t.ACME {
		for _, name := range []string{ListenACMEHTTP, ListenACMETLS} {
			if c.Listen.Get(name) != "" {
				bad("listen.%s: only with tls.acme = true", name)
			}
		}
		for _, k := range []struct {
			key string
			set bool
		}{{"acme_directory", t.ACMEDirectory != ""}, {"acme_email", t.ACMEEmail != ""}, {"acme_hosts", len(t.ACMEHosts) > 0}, {"acme_ca_file", t.ACMECAFile != ""}} {
			if k.set {
				bad("tls.%s: only with tls.acme = true", k.key)
			}
		}
		return errs
	}
	if t.CertFile != "" {
		bad("tls: set acme or cert_file and key_file, not both")
	}
	if c.Listen.ACMEHTTP == "" && c.Listen.ACMETLS == "" {
		bad("tls.acme: set listen.acme_http (port 80, http-01) or listen.acme_tls (port 443, tls-alpn-01): the CA checks one of them")
	}
	if t.ACMEDirectory != "" {
		if u, err := url.Parse(t.ACMEDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("tls.acme_directory %q: want an https:// URL", t.ACMEDirectory)
		}
	}
	if t.ACMEEmail != "" {
		if a, err := mail.ParseAddress(t.ACMEEmail); err != nil || a.Address != t.ACMEEmail {
			bad("tls.acme_email %q: want a plain address (user@example.com)", t.ACMEEmail)
		}
	}
	hosts := c.acmeHosts()
	if len(hosts) == 0 {
		bad("tls.acme_hosts: no host name")
	}
	for _, h := range hosts {
		if len(h) > 253 || !hostnamePattern.MatchString(h) || !strings.Contains(h, ".") || net.ParseIP(h) != nil {
			bad("tls.acme: %q is not a fully qualified host name a CA can issue for (set hostname or tls.acme_hosts)", h)
		}
	}
	return errs
}

// acmeHosts returns the names an ACME node obtains certificates for, in
// lower case without duplicates: tls.acme_hosts, or the hostname and
// autoconfig.host.
func (c Config) acmeHosts() []string {
	hosts := c.TLS.ACMEHosts
	if len(hosts) == 0 {
		hosts = []string{c.Hostname, c.Autoconfig.Host}
	}
	var out []string
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		out = append(out, h)
	}
	return out
}

// KeyFiles says where the master key, the root of the key hierarchy,
// comes from. With neither set, DataDir/master.key is used (32 random
// bytes created at init). A passphrase file is turned into the key with
// argon2id and a salt kept in DataDir/master.salt.
type KeyFiles struct {
	MasterKeyFile  string `toml:"master_key_file"`
	PassphraseFile string `toml:"passphrase_file"`
}

// Limits bounds what clients may make the node hold.
type Limits struct {
	// MaxMessageSize is the largest message accepted by SMTP and APPEND.
	MaxMessageSize ByteSize `toml:"max_message_size"`
	// MaxRecipients bounds the recipients of one SMTP transaction.
	MaxRecipients int `toml:"max_recipients"`
	// MaxConnections bounds open client connections over all frontends;
	// 0 means no limit.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerIP bounds open client connections from one
	// address; 0 means no limit.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// HandshakeTimeout bounds a TLS handshake on every frontend: from
	// the accept on the implicit-TLS ports, from the command after
	// STARTTLS or STLS.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	// PreLoginIdleTimeout closes a connection whose client sent nothing
	// for this long before it logged in (on the MX port: before its
	// first command).
	PreLoginIdleTimeout time.Duration `toml:"prelogin_idle_timeout"`
	// LoginTimeout closes a connection whose client has not logged in
	// this long after connecting, however active.
	LoginTimeout time.Duration `toml:"login_timeout"`
	// CommandsPerSecond is the sustained rate of commands one client
	// address (an IPv4 address or an IPv6 /64) may send over every port
	// of the node; 0 turns the limit off.
	CommandsPerSecond float64 `toml:"commands_per_second"`
	// CommandBurst is how many commands an address may send at once
	// after a quiet spell; 0 means twice CommandsPerSecond.
	CommandBurst int `toml:"command_burst"`
	// CommandRateLoopback limits loopback clients (127.0.0.0/8, ::1)
	// too; by default they are not limited (a test or a proxy on the
	// node's own host, see protocols.CommandRateConfig.Loopback).
	CommandRateLoopback bool `toml:"command_rate_loopback"`
	// DefaultQuota is the storage quota (the bytes of all of a user's
	// messages) of every user without one of their own (mailnode user
	// quota); 0, the default, means unlimited. Every node of a cluster
	// should have the same value: the node that takes a message in
	// decides which limit it carries.
	DefaultQuota ByteSize `toml:"default_quota"`
	// DefaultMessageQuota is the same for the number of a user's
	// messages; 0, the default, means unlimited.
	DefaultMessageQuota int64 `toml:"default_message_quota"`
	// SearchCache bounds the IMAP server's in-memory cache of opened
	// search records (docs/architecture.md, "Search records"); 0 turns
	// it off.
	SearchCache ByteSize `toml:"search_cache"`
}

// commandRate returns the frontends' command-rate limit, telling
// onRefuse about each refusal.
func (l Limits) commandRate(onRefuse func(closing bool)) protocols.CommandRateConfig {
	return protocols.CommandRateConfig{PerSecond: l.CommandsPerSecond, Burst: l.CommandBurst, OnRefuse: onRefuse, Loopback: l.CommandRateLoopback}
}

// maxClientTimeout bounds the configurable client timeouts.
const maxClientTimeout = time.Hour

// connTimeouts returns the frontends' pre-login bounds.
func (l Limits) connTimeouts() protocols.ConnTimeouts {
	return protocols.ConnTimeouts{
		Handshake:    l.HandshakeTimeout,
		PreLoginIdle: l.PreLoginIdleTimeout,
		Login:        l.LoginTimeout,
	}
}

// AuthGuardConfig sets the node's brute-force limits on logins (shared by
// every frontend); see protocols.AuthGuardConfig.
type AuthGuardConfig struct {
	MaxFailuresPerIP   int           `toml:"max_failures_per_ip"`
	MaxFailuresPerUser int           `toml:"max_failures_per_user"`
	Window             time.Duration `toml:"window"`
	Lockout            time.Duration `toml:"lockout"`
	// KnownAddressTTL is how long a successful login keeps its address
	// exempt from the user's lockout (0: never exempt).
	KnownAddressTTL time.Duration `toml:"known_address_ttl"`
	FailureDelay    time.Duration `toml:"failure_delay"`
}

// protocols returns the guard's configuration, reporting lockouts to log
// and counting refusals in obs.
func (g AuthGuardConfig) protocols(log *slog.Logger, obs protocols.AuthObserver) protocols.AuthGuardConfig {
	return protocols.AuthGuardConfig{
		MaxFailuresPerIP:   g.MaxFailuresPerIP,
		MaxFailuresPerUser: g.MaxFailuresPerUser,
		Window:             g.Window,
		Lockout:            g.Lockout,
		KnownAddressTTL:    g.KnownAddressTTL,
		FailureDelay:       g.FailureDelay,
		Logger:             log,
		Observer:           obs,
	}
}

// LogConfig selects the log level ("debug", "info", "warn", "error") and
// format ("json" or "text").
type LogConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Default returns the development configuration a node uses without a
// config file: every listener on 127.0.0.1 at the high development ports,
// hostname "localhost", JSON logs at level info. DataDir is left empty:
// the caller must name one.
func Default() Config {
	g := protocols.DefaultAuthGuardConfig()
	return Config{
		Hostname:   "localhost",
		NodeID:     "node1",
		MailShards: DefaultMailShards,
		Autoconfig: defaultAutoconfig(),
		Listen: Listeners{
			SMTP:        "127.0.0.1:2525",
			Submission:  "127.0.0.1:2587",
			Submissions: "127.0.0.1:2465",
			IMAP:        "127.0.0.1:2143",
			IMAPS:       "127.0.0.1:2993",
			POP3:        "127.0.0.1:2110",
			POP3S:       "127.0.0.1:2995",
			HTTP:        "127.0.0.1:2980",
			HTTPS:       "127.0.0.1:2443",
		},
		Cluster: ClusterConfig{Listen: "127.0.0.1:2700"},
		TLS:     TLSFiles{ReloadInterval: DefaultTLSReloadInterval},
		Limits: Limits{
			MaxMessageSize:      DefaultMaxMessageSize,
			MaxRecipients:       DefaultMaxRecipients,
			MaxConnections:      DefaultMaxConnections,
			MaxConnectionsPerIP: DefaultMaxConnectionsPerIP,
			HandshakeTimeout:    protocols.DefaultHandshakeTimeout,
			PreLoginIdleTimeout: protocols.DefaultPreLoginIdleTimeout,
			LoginTimeout:        protocols.DefaultLoginTimeout,
			CommandsPerSecond:   protocols.DefaultCommandsPerSecond,
			CommandBurst:        protocols.DefaultCommandBurst,
			SearchCache:         imap.DefaultSearchCacheBytes,
		},
		AuthGuard: AuthGuardConfig{
			MaxFailuresPerIP:   g.MaxFailuresPerIP,
			MaxFailuresPerUser: g.MaxFailuresPerUser,
			Window:             g.Window,
			Lockout:            g.Lockout,
			KnownAddressTTL:    g.KnownAddressTTL,
			FailureDelay:       g.FailureDelay,
		},
		Log: LogConfig{Level: "info", Format: "json"},
	}
}

// maxConfigSize bounds a config file; real ones are a few KiB.
const maxConfigSize = 1 << 20

// Parse reads a TOML config over Default(): keys the file leaves out keep
// their default. Unknown keys are an error, so a typo cannot silently
// leave a default in force. name is used in error messages.
func Parse(name string, data []byte) (Config, error) {
	if len(data) > maxConfigSize {
		return Config{}, fmt.Errorf("config %s: larger than %d bytes", name, maxConfigSize)
	}
	cfg := Default()
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return Config{}, fmt.Errorf("config %s: unknown key(s): %s", name, strings.Join(keys, ", "))
	}
	return cfg, nil
}

var (
	nodeIDPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	hostnamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
)

// Validate reports every problem with the configuration at once, each
// naming the offending key.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Hostname == "" {
		bad("hostname: must be set")
	} else if len(c.Hostname) > 253 || !hostnamePattern.MatchString(c.Hostname) {
		bad("hostname %q: not a valid host name", c.Hostname)
	}
	if c.DataDir == "" {
		bad("data_dir: must be set (--data DIR)")
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		bad("node_id %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", c.NodeID)
	}
	if c.MailShards < 1 || c.MailShards > maxMailShards {
		bad("mail_shards %d: want 1 to %d", c.MailShards, maxMailShards)
	}
	errs = append(errs, c.Listen.validate()...)
	errs = append(errs, c.validateTLS()...)
	if c.Keys.MasterKeyFile != "" && c.Keys.PassphraseFile != "" {
		bad("keys: set master_key_file or passphrase_file, not both")
	}
	if c.Limits.MaxMessageSize < 1024 || c.Limits.MaxMessageSize > maxMessageSizeCeiling {
		bad("limits.max_message_size %d: want 1 KiB to %d bytes", c.Limits.MaxMessageSize, maxMessageSizeCeiling)
	}
	if c.Limits.MaxRecipients < 1 {
		bad("limits.max_recipients %d: want at least 1", c.Limits.MaxRecipients)
	}
	if c.Limits.MaxConnections < 0 {
		bad("limits.max_connections %d: want 0 (no limit) or more", c.Limits.MaxConnections)
	}
	if c.Limits.SearchCache < 0 {
		bad("limits.search_cache %d: want 0 (off) or more", c.Limits.SearchCache)
	}
	if c.Limits.DefaultMessageQuota < 0 {
		bad("limits.default_message_quota %d: want 0 (unlimited) or more", c.Limits.DefaultMessageQuota)
	}
	if c.Limits.MaxConnectionsPerIP < 0 {
		bad("limits.max_connections_per_ip %d: want 0 (no limit) or more", c.Limits.MaxConnectionsPerIP)
	}
	if c.Limits.CommandsPerSecond < 0 || c.Limits.CommandsPerSecond > 1e9 {
		bad("limits.commands_per_second %g: want 0 (no limit) to 1e9", c.Limits.CommandsPerSecond)
	}
	if c.Limits.CommandBurst < 0 || c.Limits.CommandBurst > 2e9 {
		bad("limits.command_burst %d: want 0 (twice commands_per_second) to 2e9", c.Limits.CommandBurst)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"handshake_timeout", c.Limits.HandshakeTimeout}, {"prelogin_idle_timeout", c.Limits.PreLoginIdleTimeout}, {"login_timeout", c.Limits.LoginTimeout}} {
		if d.v <= 0 || d.v > maxClientTimeout {
			bad("limits.%s %s: want more than 0 and at most %s", d.name, d.v, maxClientTimeout)
		}
	}
	g := c.AuthGuard
	if g.MaxFailuresPerIP < 0 || g.MaxFailuresPerUser < 0 {
		bad("auth_guard: failure limits must not be negative")
	}
	if g.Window < 0 || g.Lockout < 0 || g.KnownAddressTTL < 0 || g.FailureDelay < 0 {
		bad("auth_guard: durations must not be negative")
	}
	if (g.MaxFailuresPerIP > 0 || g.MaxFailuresPerUser > 0) && (g.Window <= 0 || g.Lockout <= 0) {
		bad("auth_guard: window and lockout must be positive when failure limits are set")
	}
	if g.FailureDelay > time.Minute {
		bad("auth_guard.failure_delay %s: at most 1m", g.FailureDelay)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level: %v", err)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("log.format %q: want json or text", c.Log.Format)
	}
	errs = append(errs, c.Backup.validate()...)
	errs = append(errs, c.Scrub.validate()...)
	errs = append(errs, c.Cluster.validate()...)
	errs = append(errs, c.Autoconfig.validate()...)
	errs = append(errs, c.Filters.validate()...)
	errs = append(errs, c.DNS.validate()...)
	errs = append(errs, c.MTASTS.validate()...)
	errs = append(errs, c.Outbound.validate()...)
	errs = append(errs, c.Forwarding.validate()...)
	if c.Postmaster != "" {
		if _, _, err := schema.CanonicalAddress(c.Postmaster); err != nil {
			errs = append(errs, fmt.Errorf("postmaster %q: not a mail address", c.Postmaster))
		}
	}
	if c.PrimaryDomain != "" {
		if _, err := schema.CanonicalDomain(c.PrimaryDomain); err != nil {
			errs = append(errs, fmt.Errorf("primary_domain %q: not a domain name", c.PrimaryDomain))
		}
	}
	if c.AuditRetention < 0 || (c.AuditRetention > 0 && c.AuditRetention < 24*time.Hour) {
		errs = append(errs, fmt.Errorf("audit_retention %s: want at least 24h (0 keeps the default, 400 days)", c.AuditRetention))
	}
	if c.LoginHistoryRetention < 0 || (c.LoginHistoryRetention > 0 && c.LoginHistoryRetention < time.Hour) {
		errs = append(errs, fmt.Errorf("login_history_retention %s: want at least 1h (0 keeps the default, 30 days)", c.LoginHistoryRetention))
	}
	if c.DeliveryMetadataRetention < 0 || (c.DeliveryMetadataRetention > 0 && c.DeliveryMetadataRetention < time.Hour) {
		errs = append(errs, fmt.Errorf("delivery_metadata_retention %s: want at least 1h (0 keeps the default, 60 days)", c.DeliveryMetadataRetention))
	}
	return errors.Join(errs...)
}

func (c ClusterConfig) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Region != "" && !nodeIDPattern.MatchString(c.Region) {
		bad("cluster.region %q: want 1-64 letters, digits, '.', '_' or '-'", c.Region)
	}
	for _, a := range []struct{ name, addr string }{{"listen", c.Listen}, {"advertise", c.Advertise}, {"join", c.Join}} {
		if a.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			bad("cluster.%s %q: want host:port", a.name, a.addr)
		}
	}
	if c.Listen == "" {
		bad("cluster.listen: must be set (the cluster port)")
	}
	if c.Advertise == "" && c.Listen != "" {
		if host, _, err := net.SplitHostPort(c.Listen); err == nil {
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				bad("cluster.advertise: must be set when cluster.listen (%s) is not an address other nodes can dial", c.Listen)
			}
		}
	}
	if c.Replicas < 0 || c.Replicas > 9 {
		bad("cluster.replicas %d: want 1 to 9 (0 for the default 3)", c.Replicas)
	}
	if c.RaftProfile != "" && c.RaftProfile != "wan" && c.RaftProfile != "lan" {
		bad("cluster.raft_profile %q: want wan or lan", c.RaftProfile)
	}
	if c.DeadAfter < 0 {
		bad("cluster.dead_after must not be negative")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeat_timeout", c.HeartbeatTimeout}, {"election_timeout", c.ElectionTimeout}, {"leader_lease_timeout", c.LeaderLeaseTimeout}} {
		if d.v != 0 && (d.v < 50*time.Millisecond || d.v > time.Minute) {
			bad("cluster.%s %s: want 50ms to 1m", d.name, d.v)
		}
	}
	hb := c.HeartbeatTimeout
	if hb == 0 {
		hb = 400 * time.Millisecond // the smallest profile value
		if c.RaftProfile != "lan" {
			hb = 1500 * time.Millisecond
		}
	}
	if c.LeaderLeaseTimeout > hb {
		bad("cluster.leader_lease_timeout %s: must not exceed the heartbeat timeout %s", c.LeaderLeaseTimeout, hb)
	}
	if c.BootstrapToken != "" && len(c.BootstrapToken) < 16 {
		bad("cluster bootstrap token: at least 16 characters")
	}
	return errs
}

func (l Listeners) validate() []error {
	var errs []error
	seen := map[string]string{}
	for _, name := range allListenerNames() {
		addr := l.Get(name)
		if addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("listen.%s %q: want host:port: %v", name, addr, err))
			continue
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			errs = append(errs, fmt.Errorf("listen.%s %q: bad port", name, addr))
			continue
		}
		if host != "" && net.ParseIP(host) == nil && !hostnamePattern.MatchString(host) {
			errs = append(errs, fmt.Errorf("listen.%s %q: bad host", name, addr))
			continue
		}
		if p == 0 {
			continue // every port-0 listener gets its own free port
		}
		if other, dup := seen[addr]; dup {
			errs = append(errs, fmt.Errorf("listen.%s %q: same address as listen.%s", name, addr, other))
		}
		seen[addr] = name
	}
	return errs
}

// masterKeyPath is where the master key is read from (or created).
func (c Config) masterKeyPath() string {
	if c.Keys.MasterKeyFile != "" {
		return c.Keys.MasterKeyFile
	}
	return filepath.Join(c.DataDir, "master.key")
}
