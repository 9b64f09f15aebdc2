package node

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/protocols/outbound"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// ForwardingConfig is the [forwarding] section: aliases whose targets
// are outside the cluster's domains.
type ForwardingConfig struct {
	// SRSDomain is the domain of the SRS addresses forwarded mail is
	// sent from ("" means the alias's own domain). It must be served by
	// this cluster (bounces come back to it) and its SPF record must
	// name the cluster's outbound addresses.
	SRSDomain string `toml:"srs_domain"`
}

func (f ForwardingConfig) validate() []error {
	if f.SRSDomain == "" {
		return nil
	}
	if _, err := schema.CanonicalDomain(f.SRSDomain); err != nil {
		return []error{fmt.Errorf("forwarding.srs_domain %q: %w", f.SRSDomain, err)}
	}
	return nil
}

// forwarder is the MX port's way out for forwarded mail: the store's
// domain queues, and a kick to the deliverer so it leaves at once.
type forwarder struct {
	store *mailstore.Store
	d     *outbound.Deliverer
}

func (f forwarder) Forwards(ctx context.Context, rcpt string) (forward, bounce bool, err error) {
	return f.store.Forwards(ctx, rcpt)
}

func (f forwarder) Forward(ctx context.Context, fw schema.Forwarding) error {
	if err := f.store.Forward(ctx, fw); err != nil {
		return err
	}
	f.d.Kick()
	return nil
}
