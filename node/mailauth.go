package node

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/protocols/mailauth"
)

// DNSConfig is the [dns] section: the resolver for the checks of
// incoming mail (and, later, outbound delivery).
type DNSConfig struct {
	// Servers are "HOST:PORT" of recursive resolvers, tried in turn;
	// empty means the system's resolver.
	Servers []string `toml:"servers"`
	// Timeout bounds one query (default 5 s).
	Timeout time.Duration `toml:"timeout"`
}

// InboundConfig is the [inbound] section: what the MX port checks.
type InboundConfig struct {
	// CheckSender runs SPF, DKIM and DMARC on every message on the MX
	// port: an Authentication-Results field, 550 for DMARC p=reject,
	// Junk for p=quarantine. Off in the development defaults (no DNS);
	// the production example turns it on.
	CheckSender bool `toml:"check_sender"`
}

func (d DNSConfig) validate() []error {
	var errs []error
	for _, s := range d.Servers {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("dns.servers %q: want HOST:PORT", s))
		}
	}
	if d.Timeout < 0 || d.Timeout > time.Minute {
		errs = append(errs, fmt.Errorf("dns.timeout %s: want at most 1m", d.Timeout))
	}
	return errs
}

// resolver returns the DNS resolver of dns.servers (the system's when
// none is set).
func (d DNSConfig) resolver() *net.Resolver {
	if len(d.Servers) == 0 {
		return net.DefaultResolver
	}
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	var next atomic.Uint32
	servers := append([]string(nil), d.Servers...)
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			dialer := net.Dialer{Timeout: timeout}
			server := servers[int(next.Add(1)-1)%len(servers)]
			return dialer.DialContext(ctx, network, server)
		},
	}
}

// senderChecker is the MX port's SPF/DKIM/DMARC checker, or nil when
// inbound.check_sender is off.
func (n *Node) senderChecker() *mailauth.Checker {
	if !n.cfg.Inbound.CheckSender {
		return nil
	}
	timeout := n.cfg.DNS.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	return &mailauth.Checker{Resolver: n.cfg.DNS.resolver(), AuthServID: n.cfg.Hostname, Timeout: 4 * timeout}
}
