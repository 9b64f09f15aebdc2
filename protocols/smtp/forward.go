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

// Reasons a message is judged junk, as Config.WithheldForwards and the
// log name them.
const (
	// JunkDMARCQuarantine: the sender's domain asks for quarantine
	// (DMARC p=quarantine) and the message failed DMARC.
	JunkDMARCQuarantine = "dmarc-quarantine"
	// JunkSpam: the content filter judged the message spam.
	JunkSpam = "spam"
)

// withholdForwards decides about the forwarded recipients of a message
// judged junk (reason): it is not relayed out of the cluster, where it
// would count against our addresses' and our domains' reputation (the
// SRS sender makes it ours). With no copy kept here for anyone
// (others: the recipients that still get one), the message is refused
// at the end of DATA, so that its sender learns it was not delivered
// (RFC 5321 section 6.2 discourages dropping accepted mail). With
// local copies, those are stored (in Junk) and the forwardings are
// dropped: SMTP has one reply to DATA for every recipient, and a
// delivery report to a spam sender would be backscatter. Either way it
// is logged and counted, never the content.
func (s *session) withholdForwards(txnID, reason string, forward []string, others int) *protocols.Error {
	if f := s.srv.cfg.WithheldForwards; f != nil {
		f(reason, len(forward))
	}
	if others == 0 {
		s.log.Info("message judged junk refused: its recipients only forward out of the cluster", "id", txnID, "reason", reason, "forwards", len(forward))
		return protocols.Permanentf(550, [3]int{5, 7, 1}, nil, "Message judged as spam (%s); it is not forwarded", reason)
	}
	s.log.Info("message judged junk not forwarded; local copies kept", "id", txnID, "reason", reason, "forwards", len(forward), "local", others)
	return nil
}
