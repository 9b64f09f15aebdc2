package mailstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Forwarded mail (an alias's targets outside the cluster) and bounces
// relayed from our SRS addresses to the original sender are queued in
// the alias's domain's own queue: entries whose User is the domain's id,
// sealed with the cluster's spool keys, in one mail shard picked from
// the domain id (domainShard). The delivery engine treats them like any
// entry; a report about one goes to the original sender through the
// queue again (relayReport), never to a mailbox.

// queueOwner returns the owner of queue entries with User id: a domain
// (its own queue) or a user. schema.ErrNoSuchUser when neither exists
// any more.
func (s *Store) queueOwner(ctx context.Context, id schema.ID) (*directory.User, error) {
	if o, err := s.dir.DomainQueueOwnerByID(id); err == nil {
		o.Shard = s.domainShard(id)
		return o, nil
	} else if !errors.Is(err, schema.ErrNoSuchDomain) {
		return nil, err
	}
	return s.dir.UserByID(ctx, id)
}

// domainShard is the mail shard of a domain's own queue.
func (s *Store) domainShard(id schema.ID) uint32 {
	return 1 + binary.BigEndian.Uint32(id[:4])%uint32(max(s.c.MailShards(), 1))
}

// Forwards reports whether mail to rcpt, on the MX port, leaves the
// cluster: bounce is true for an SRS address of ours that checks out
// (its mail goes only to the original sender), forward for an alias
// with targets outside the cluster (its local targets, if any, get
// their copy as usual). An SRS address that does not check out (forged,
// older than directory.SRSMaxAge days) and an address that forwards
// nowhere are schema.ErrNoSuchUser (bounce is true with the error for
// an SRS address, whose mail must never reach a mailbox or catch-all).
func (s *Store) Forwards(ctx context.Context, rcpt string) (forward, bounce bool, err error) {
	addr, _, err := schema.CanonicalAddress(rcpt)
	if err != nil {
		return false, false, err
	}
	if directory.IsSRS(addr) {
		if _, err := s.reverseSRS(ctx, addr); err != nil {
			return false, true, err
		}
		return true, true, nil
	}
	if _, err := s.dir.ForwardTargets(ctx, addr); err != nil {
		return false, false, err
	}
	return true, false, nil
}

// reverseSRS returns the address a bounce to addr, one of our SRS
// addresses, is relayed to.
func (s *Store) reverseSRS(ctx context.Context, addr string) (string, error) {
	srs, err := s.dir.SRS(ctx)
	if err != nil {
		return "", err
	}
	orig, err := srs.Reverse(addr, time.Now())
	if err != nil {
		if errors.Is(err, directory.ErrNotSRS) || errors.Is(err, directory.ErrSRSForged) || errors.Is(err, directory.ErrSRSExpired) {
			return "", fmt.Errorf("srs address: %w: %w", err, schema.ErrNoSuchUser)
		}
		return "", err
	}
	if _, _, err := schema.CanonicalAddress(orig); err != nil {
		return "", fmt.Errorf("srs address names no valid address: %w", schema.ErrNoSuchUser)
	}
	return orig, nil
}

// forwardGroup is one queue entry of a Forward: the mail of one domain's
// aliases with one envelope sender.
type forwardGroup struct {
	domain, from string
	rcpts        []string
}

// Forward commits the forwardings of a message that arrived on the MX
// port to the outbound queues of the recipients' domains: for an alias,
// to its targets outside the cluster with the envelope sender rewritten
// by SRS (the null sender stays null); for one of our SRS addresses, to
// the original sender with the null sender. It returns nil only once
// every entry is committed on a quorum; with a fingerprint, a retried
// transaction finds the entries the first one made.
func (s *Store) Forward(ctx context.Context, f schema.Forwarding) error {
	if len(f.Recipients) == 0 {
		return fmt.Errorf("forward: no recipients: %w", schema.ErrInvalid)
	}
	msg := schema.NormalizeCRLF(f.Message)
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("message of %d bytes: %w", len(msg), schema.ErrTooLarge)
	}
	srs, err := s.dir.SRS(ctx)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	now := time.Now()
	var groups []*forwardGroup
	add := func(domain, from string, rcpts ...string) {
		i := slices.IndexFunc(groups, func(g *forwardGroup) bool { return g.domain == domain && g.from == from })
		if i < 0 {
			groups = append(groups, &forwardGroup{domain: domain, from: from})
			i = len(groups) - 1
		}
		for _, r := range rcpts {
			if !slices.Contains(groups[i].rcpts, r) {
				groups[i].rcpts = append(groups[i].rcpts, r)
			}
		}
	}
	for i, r := range f.Recipients {
		addr, domain, err := schema.CanonicalAddress(r)
		if err != nil {
			return fmt.Errorf("forward to recipient %d: %w", i+1, err)
		}
		if directory.IsSRS(addr) {
			orig, err := s.reverseSRS(ctx, addr)
			if err != nil {
				return fmt.Errorf("forward to recipient %d: %w", i+1, err)
			}
			add(domain, "", orig)
			continue
		}
		targets, err := s.dir.ForwardTargets(ctx, addr)
		if err != nil {
			return fmt.Errorf("forward to recipient %d: %w", i+1, err)
		}
		srsDomain := s.cfg.SRSDomain
		if srsDomain == "" {
			srsDomain = domain
		}
		from, err := srs.Forward(f.From, srsDomain, now)
		if err != nil {
			return fmt.Errorf("forward: rewrite the sender: %w: %w", err, schema.ErrInvalid)
		}
		add(domain, from, targets...)
	}
	for _, g := range groups {
		o, err := s.dir.DomainQueueOwner(ctx, g.domain)
		if err != nil {
			return fmt.Errorf("forward: %w", err)
		}
		o.Shard = s.domainShard(o.ID)
		id := schema.NewID()
		if f.Fingerprint != nil {
			id = deriveID("mailcluster/forward/", f.Fingerprint, append(o.ID[:], []byte(strings.ToLower(g.from))...))
		}
		if err := s.enqueue(ctx, o, id, schema.OutboundState{From: g.from, UTF8: f.UTF8 || !asciiAddresses(g.from, g.rcpts),
			RequireTLS: f.RequireTLS, TLSOptional: f.TLSOptional && !f.RequireTLS}, g.rcpts, msg); err != nil {
			return fmt.Errorf("forward: %w", err)
		}
	}
	return nil
}

// relayReport sends a delivery report about an entry of a domain's own
// queue to the original sender: the SRS envelope sender reversed (no
// report for a message with the null sender, RFC 3461 section 6.2), as
// a new entry with the null sender, made once per entry and kind.
func (s *Store) relayReport(ctx context.Context, o *directory.User, e schema.OutboundEntry, kind string, msg []byte) error {
	if e.State.From == "" {
		return nil
	}
	srs, err := s.dir.SRS(ctx)
	if err != nil {
		return fmt.Errorf("report to the original sender: %w", err)
	}
	// The sender was rewritten when the entry was made: its age is
	// checked as of then, however long the queue retried.
	at := e.Created
	if at.IsZero() {
		at = time.Now()
	}
	orig, err := srs.Reverse(e.State.From, at)
	if err != nil {
		s.log.Info("report about forwarded mail dropped: its sender is not one of our SRS addresses")
		return nil
	}
	o.Shard = s.domainShard(o.ID)
	id := deriveID("mailcluster/outbound-report/", e.ID[:], []byte(kind))
	if err := s.enqueue(ctx, o, id, schema.OutboundState{}, []string{orig}, schema.NormalizeCRLF(msg)); err != nil {
		return fmt.Errorf("report to the original sender: %w", err)
	}
	return nil
}

// asciiAddresses reports whether from and rcpts are all ASCII: an
// alias's outside target, or a reversed SRS sender, may need SMTPUTF8
// although the address the message arrived for did not.
func asciiAddresses(from string, rcpts []string) bool {
	for _, a := range append([]string{from}, rcpts...) {
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 {
				return false
			}
		}
	}
	return true
}
