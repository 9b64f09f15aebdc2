package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/autoconfig"
	"github.com/mailcluster/mailcluster/protocols/mtasts"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// MTASTSConfig is the [mta_sts] section: the MTA-STS policy (RFC 8461)
// the nodes serve at https://mta-sts.DOMAIN/.well-known/mta-sts.txt for
// every served domain. Its mx lines are the cluster's host names.
type MTASTSConfig struct {
	// Mode is "enforce", "testing" (the default: senders report what
	// enforce would refuse, and deliver anyway) or "none".
	Mode string `toml:"mode"`
	// MaxAge is how long senders cache the policy (default one week, at
	// most RFC 8461's 31557600 seconds).
	MaxAge time.Duration `toml:"max_age"`
}

// DefaultMTASTSMaxAge is the served policy's max_age unless configured.
const DefaultMTASTSMaxAge = 7 * 24 * time.Hour

func (m MTASTSConfig) validate() []error {
	var errs []error
	if m.Mode != "" && !mtasts.Mode(m.Mode).Valid() {
		errs = append(errs, fmt.Errorf("mta_sts.mode %q: want enforce, testing or none", m.Mode))
	}
	if m.MaxAge < 0 || m.MaxAge > mtasts.MaxAge || (m.MaxAge > 0 && m.MaxAge < time.Hour) {
		errs = append(errs, fmt.Errorf("mta_sts.max_age %s: want 1h to %s (0 keeps the default, one week)", m.MaxAge, mtasts.MaxAge))
	}
	return errs
}

// mailHosts returns the host names of the cluster's members (each node
// records its hostname in the directory at start), sorted; this node's
// own name when nothing is recorded yet.
func (n *Node) mailHosts() []string {
	recorded, err := n.directory.MailHosts()
	members := map[string]bool{}
	for _, m := range n.cluster.Status().Nodes {
		if m.Health != "removed" {
			members[m.ID] = true
		}
	}
	hosts := map[string]string{}
	for id, h := range recorded {
		if members[id] {
			hosts[id] = h
		}
	}
	if err != nil || len(hosts) == 0 {
		hosts = map[string]string{n.cfg.NodeID: strings.ToLower(n.cfg.Hostname)}
	}
	return directory.SortedHosts(hosts)
}

// mtaSTSPolicy is the policy the nodes serve for every domain.
func (n *Node) mtaSTSPolicy() mtasts.Policy {
	mode := mtasts.Mode(n.cfg.MTASTS.Mode)
	if mode == "" {
		mode = mtasts.ModeTesting
	}
	maxAge := n.cfg.MTASTS.MaxAge
	if maxAge == 0 {
		maxAge = DefaultMTASTSMaxAge
	}
	return mtasts.Policy{Mode: mode, MX: n.mailHosts(), MaxAge: maxAge}
}

// registerMTASTS serves the MTA-STS policy on the HTTP mux for
// mta-sts.DOMAIN of every served domain (the HTTPS listener serves the
// same mux).
func (n *Node) registerMTASTS(mux *http.ServeMux) {
	mux.Handle("GET "+mtasts.PolicyPath, mtasts.Handler(n.mtaSTSPolicy, n.directory, n.log.With("component", "mta-sts")))
}

// mailDNSRecords returns the records a served domain must publish: for
// mail MX (the cluster's hosts), SPF, both DKIM keys (and any in their
// rotation overlap), DMARC, MTA-STS and TLS-RPT, then the client
// discovery records (autoconfig.Config.DNSRecords) of this node's
// config, with clientHost instead of autoconfig.host if set.
func (n *Node) mailDNSRecords(ctx context.Context, domain, clientHost string) ([]autoconfig.Record, error) {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return nil, err
	}
	served, err := n.directory.HostsDomain(ctx, dn)
	if err != nil {
		return nil, err
	}
	if !served {
		return nil, fmt.Errorf("domain %s: %w", dn, schema.ErrNoSuchDomain)
	}
	dkim, err := n.directory.DKIMRecords(ctx, dn)
	if err != nil {
		return nil, err
	}
	hosts := n.mailHosts()
	origin := dn + "."
	var out []autoconfig.Record
	for _, h := range hosts {
		out = append(out, autoconfig.Record{Name: origin, Type: "MX", Data: "10 " + h + ".", Comment: "a node of this cluster receives the domain's mail"})
	}
	out = append(out, autoconfig.Record{Name: origin, Type: "TXT", Data: directory.QuoteTXT("v=spf1 mx -all"),
		Comment: "SPF: mail from the domain comes only from its MX hosts, the cluster's nodes (" + strings.Join(hosts, ", ") + ")"})
	for _, r := range dkim {
		comment := "DKIM " + r.Algorithm + ", signing"
		if !r.RetiringUntil.IsZero() {
			comment = "DKIM " + r.Algorithm + ", retiring until " + r.RetiringUntil.Format(time.DateOnly) + " (remove it after)"
		}
		out = append(out, autoconfig.Record{Name: r.Name, Type: "TXT", Data: r.ZoneData(), Comment: comment})
	}
	postmaster := "mailto:postmaster@" + dn
	out = append(out, autoconfig.Record{Name: "_dmarc." + origin, Type: "TXT", Data: directory.QuoteTXT("v=DMARC1; p=quarantine; rua=" + postmaster),
		Comment: "DMARC: unaligned mail goes to Junk; aggregate reports to postmaster"})
	pol := n.mtaSTSPolicy()
	cfg := n.cfg
	if clientHost != "" {
		cfg.Autoconfig.Host = clientHost
	}
	adv := cfg.advertised()
	target := strings.TrimSuffix(adv.Host, ".") + "."
	out = append(out,
		autoconfig.Record{Name: "_mta-sts." + origin, Type: "TXT", Data: directory.QuoteTXT(pol.Record()),
			Comment: "MTA-STS (mode " + string(pol.Mode) + "): the id changes with the policy"},
		autoconfig.Record{Name: "mta-sts." + origin, Type: "CNAME", Data: target,
			Comment: "MTA-STS policy host: HTTPS on port 443 to the nodes' HTTP listener (" + mtasts.PolicyPath + ")"},
		autoconfig.Record{Name: "_smtp._tls." + origin, Type: "TXT", Data: directory.QuoteTXT("v=TLSRPTv1; rua=" + postmaster),
			Comment: "TLS-RPT: senders' daily TLS reports to postmaster"},
	)
	client, err := adv.DNSRecords(dn)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", schema.ErrInvalid, err)
	}
	return append(out, client...), nil
}

// maintainDKIM gives every domain DKIM keys (those added before signing
// existed get theirs here), drops rotated-out selectors whose overlap
// has ended and records this node's hostname if it is not yet: at
// start, then every interval, until stop ends.
func (n *Node) maintainDKIM(stop context.Context, interval time.Duration) {
	log := n.log.With("component", "dkim")
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(stop, time.Minute)
		err := errors.Join(n.directory.MaintainDKIM(ctx), n.directory.SetMailHost(ctx, n.cfg.NodeID, n.cfg.Hostname))
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("DKIM key and host name upkeep", "err", err)
		}
		select {
		case <-stop.Done():
			return
		case <-t.C:
		}
	}
}

// dkimMaintenanceInterval is how often a node runs the DKIM upkeep.
const dkimMaintenanceInterval = time.Hour

// startMaintenance starts the node's background upkeep; Close stops it
// and waits for it.
func (n *Node) startMaintenance() {
	stop, cancel := context.WithCancel(context.Background())
	n.stopMaintenance = cancel
	n.maintenance.Add(1)
	go func() {
		defer n.maintenance.Done()
		n.maintainDKIM(stop, dkimMaintenanceInterval)
	}()
	n.startScrubs(stop)
}
