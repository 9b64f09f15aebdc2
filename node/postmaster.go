package node

import (
	"context"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// barePostmasterLookup bounds the directory read that finds the primary
// domain when none is configured.
const barePostmasterLookup = 5 * time.Second

// barePostmaster returns the address that "RCPT TO:<postmaster>" without
// a domain goes to on the MX port (RFC 5321 section 4.5.1): postmaster@
// of the primary domain (config primary_domain, else the domain of the
// postmaster setting, else the first served domain in name order), which
// the directory resolves like any postmaster@ address (the domain's own
// postmaster user or alias, else the postmaster setting). "" when the
// cluster serves no domain yet.
func (n *Node) barePostmaster() string {
	domain := n.cfg.PrimaryDomain
	if domain == "" && n.cfg.Postmaster != "" {
		if _, d, err := schema.CanonicalAddress(n.cfg.Postmaster); err == nil {
			domain = d
		}
	}
	if domain == "" {
		ctx, cancel := context.WithTimeout(context.Background(), barePostmasterLookup)
		defer cancel()
		doms, err := n.Directory().Domains(ctx)
		if err != nil || len(doms) == 0 {
			return ""
		}
		domain = doms[0].Name
	}
	if d, err := schema.CanonicalDomain(domain); err == nil {
		domain = d
	}
	return "postmaster@" + strings.TrimSuffix(domain, ".")
}
