package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/protocols/autoconfig"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// domainDNSUsage is the usage line of "mailnode domain dns".
const domainDNSUsage = "mailnode domain dns [--data DIR] [--config FILE] [--json] [--host NAME] DOMAIN"

// domainDNS prints, in zone-file form (or as JSON), every DNS record a
// domain needs: from the running node, the mail records (MX, SPF, DKIM,
// DMARC, MTA-STS, TLS-RPT; see Node.mailDNSRecords), then the records
// that let mail clients find the servers (RFC 6186 / RFC 8314 SRV
// records and the autoconfig/autodiscover names), which come from the
// config file (or the defaults) alone. With no node to ask (no --data,
// and no data directory from --config or $MAILNODE_DATA that a node
// serves) it prints the client records and says what is missing; with
// --data the node must answer.
func (c CLI) domainDNS(ctx context.Context, args []string) error {
	fs := newFlagSet("domain dns")
	data := fs.String("data", "", "data directory of the running node (for the mail records)")
	configFile := fs.String("config", "", "config file: hostname, listeners, data_dir and [autoconfig]")
	host := fs.String("host", "", "host clients connect to (overrides autoconfig.host)")
	asJSON := fs.Bool("json", false, "print as JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: domain dns takes 1 argument, got %d (%s)", errUsage, len(pos), domainDNSUsage)
	}
	cfg := Default()
	if *configFile != "" {
		if cfg, err = loadConfigFile(*configFile); err != nil {
			return err
		}
	}
	if *host != "" {
		cfg.Autoconfig.Host = *host
	}
	if errs := cfg.Autoconfig.validate(); len(errs) > 0 {
		return errs[0]
	}
	domain, err := schema.CanonicalDomain(pos[0])
	if err != nil {
		return err
	}
	var all []dnsRecord
	var missing error
	if dir, explicit := mailDNSDataDir(*data, cfg); dir == "" {
		missing = errors.New("no node to ask: give --data DIR of the running node")
	} else if all, err = fetchMailDNS(ctx, dir, domain, *host); err != nil {
		if explicit || !errors.Is(err, admin.ErrNoNode) {
			return err
		}
		missing = err
	}
	if missing != nil {
		// The client records need no node.
		recs, err := cfg.advertised().DNSRecords(domain)
		if err != nil {
			return err
		}
		all = toDNSRecords(recs)
		fmt.Fprintf(c.Stderr, "mailnode: domain dns: the MX, SPF, DKIM, DMARC, MTA-STS and TLS-RPT records are not shown: %v\n", missing)
	}
	if *asJSON {
		enc := json.NewEncoder(c.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	if missing != nil {
		fmt.Fprintf(c.Stdout, "; The mail records of %s (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT) need the running node: --data DIR.\n", domain)
	}
	clientHost := ""
	for _, r := range all {
		if r.Type == "CNAME" && r.Name == "autodiscover."+domain+"." {
			clientHost = strings.TrimSuffix(r.Data, ".")
		}
	}
	clientPart := false
	for i, r := range all {
		switch {
		case i == 0 && r.Type == "MX":
			fmt.Fprintf(c.Stdout, "; Mail for %s: MX, SPF, DKIM, DMARC, MTA-STS and TLS-RPT.\n", domain)
		case !clientPart && r.Type == "SRV":
			clientPart = true
			fmt.Fprintf(c.Stdout, "\n; Mail client discovery for %s (RFC 6186, RFC 8314): clients connect to %s.\n", domain, clientHost)
			fmt.Fprintf(c.Stdout, "; autoconfig.%s and autodiscover.%s need an HTTPS proxy forwarding\n", domain, domain)
			fmt.Fprintf(c.Stdout, ";   %s\n; to the node's listen.http (see docs/operations.md).\n", strings.Join(autoconfig.Paths(), " "))
		}
		fmt.Fprintln(c.Stdout, r.record().String())
	}
	return nil
}
