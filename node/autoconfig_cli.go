package node

import (
	"fmt"
	"strings"

	"github.com/mailcluster/mailcluster/protocols/autoconfig"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// domainDNSUsage is the usage line of "mailnode domain dns".
const domainDNSUsage = "mailnode domain dns [--config FILE] [--host NAME] DOMAIN"

// domainDNS prints, in zone-file form, the DNS records that let mail
// clients of a domain find the servers: RFC 6186 / RFC 8314 SRV records
// and the autoconfig/autodiscover names. It reads the config file (or
// the defaults) and needs no running node.
func (c CLI) domainDNS(args []string) error {
	fs := newFlagSet("domain dns")
	configFile := fs.String("config", "", "config file: hostname, listeners and [autoconfig]")
	host := fs.String("host", "", "host clients connect to (overrides autoconfig.host)")
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
	adv := cfg.advertised()
	recs, err := adv.DNSRecords(domain)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "; Mail client discovery for %s (RFC 6186, RFC 8314): clients connect to %s.\n", domain, adv.Host)
	fmt.Fprintf(c.Stdout, "; autoconfig.%s and autodiscover.%s need an HTTPS proxy forwarding\n", domain, domain)
	fmt.Fprintf(c.Stdout, ";   %s\n; to the node's listen.http (see docs/operations.md).\n", strings.Join(autoconfig.Paths(), " "))
	for _, r := range recs {
		fmt.Fprintln(c.Stdout, r.String())
	}
	return nil
}
