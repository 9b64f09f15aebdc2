package smtp

import (
	"bytes"
	"context"
	"errors"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// MaxHops is how many Received fields a message may carry when this
// server forwards it out of the cluster (RFC 5321 section 6.3: a loop
// between forwarders is broken by counting them; Postfix allows 50).
const MaxHops = 30

// forwards asks Config.Forwarder, on the MX port, whether mail to rcpt
// leaves the cluster (see Forwarder.Forwards), once the local lookup
// gave lookupErr: an address of a domain not served here, or one the
// lookup could not decide, is not asked about. An address that forwards
// nowhere is no error here (the local lookup decides about it); an SRS
// address that does not check out is.
func (s *session) forwards(ctx context.Context, rcpt string, lookupErr error) (forward, bounce bool, err error) {
	if s.srv.cfg.Mode != ModeMX || s.srv.cfg.Forwarder == nil ||
		(lookupErr != nil && !errors.Is(lookupErr, schema.ErrNoSuchUser)) {
		return false, false, nil
	}
	forward, bounce, err = s.srv.cfg.Forwarder.Forwards(ctx, rcpt)
	switch {
	case err == nil:
		return forward, bounce, nil
	case bounce:
		return false, false, err // a forged or expired SRS address: 550
	case errors.Is(err, schema.ErrNoSuchUser), errors.Is(err, schema.ErrNotLocal),
		errors.Is(err, schema.ErrNoSuchDomain), errors.Is(err, schema.ErrInvalid):
		return false, false, nil
	}
	return false, false, err
}

// checkHops refuses to forward a message that has passed through more
// than MaxHops servers: a forwarding loop.
func checkHops(msg []byte) *protocols.Error {
	hdr := msg[:schema.HeaderLength(msg)]
	n := 0
	for line := range bytes.Lines(hdr) {
		if len(line) > 9 && bytes.EqualFold(line[:9], []byte("received:")) {
			n++
		}
	}
	if n > MaxHops {
		return protocols.Permanentf(554, [3]int{5, 4, 6}, nil, "Too many hops (%d Received fields): a mail loop?", n)
	}
	return nil
}
