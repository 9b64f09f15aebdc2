package directory

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// A domain may ask that submission store a copy of what its users send
// in their Sent mailbox (off by default: mail clients save their own).
// The setting is a meta setting keyed by the domain id, holding only
// sentCopyOn: no name in the clear.
const (
	domainSentCopyPrefix = "sent_copy/"
	sentCopyOn           = "on"
)

func domainSentCopyKey(id schema.ID) string { return domainSentCopyPrefix + id.String() }

// SetDomainSentCopy switches the Sent copies of a domain's users on or
// off.
func (d *Directory) SetDomainSentCopy(ctx context.Context, domain string, on bool) error {
	dn, err := schema.CanonicalDomain(domain)
	if err != nil {
		return err
	}
	rec, _, err := d.findDomain(ctx, dn)
	if err != nil {
		return fmt.Errorf("set sent copy: %w", err)
	}
	var v []byte
	if on {
		v = []byte(sentCopyOn)
	}
	if _, err := d.c.Apply(ctx, MetaShard, &schema.PutSetting{Key: domainSentCopyKey(rec.ID), Value: v}); err != nil {
		return fmt.Errorf("set sent copy: %w", err)
	}
	d.log.Info("domain sent copy set", "on", on)
	return nil
}

// SentCopy reports whether mail the user with address sends is to be
// copied to their Sent mailbox (their domain's setting).
func (d *Directory) SentCopy(ctx context.Context, address string) (bool, error) {
	_, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return false, err
	}
	rec, _, err := d.findDomain(ctx, domain)
	if err != nil {
		return false, fmt.Errorf("sent copy: %w", err)
	}
	v, err := d.setting(domainSentCopyKey(rec.ID))
	if err != nil {
		return false, fmt.Errorf("sent copy: %w", err)
	}
	return string(v) == sentCopyOn, nil
}
