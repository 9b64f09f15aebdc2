package smtp

import (
	"context"
	"errors"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Quotas: a recipient whose mailbox is full is refused at RCPT with 552
// 5.2.2 (RFC 3463: mailbox full), so that only that recipient fails and
// the others of the transaction get the message; the store's check at
// commit covers a mailbox that fills between RCPT and the end of DATA
// (deliveryError). The size is MAIL FROM's SIZE= when the client gave
// one (RFC 1870), otherwise any message at all must still fit.

// errMailboxFull is the reply for a recipient over quota.
func errMailboxFull(reason error) *protocols.Error {
	return protocols.Permanentf(552, [3]int{5, 2, 2}, reason, "Mailbox full")
}

// checkQuota asks the store, when it can tell, whether the transaction's
// message still fits the mailboxes of a local recipient. A failure of
// the check itself does not refuse the recipient: the commit checks
// again.
func (s *session) checkQuota(ctx context.Context, to string) *protocols.Error {
	qc, ok := s.srv.store.(protocols.QuotaChecker)
	if !ok {
		return nil
	}
	s.mu.Lock()
	size := s.tx.sizeHint
	s.mu.Unlock()
	err := qc.CheckQuota(ctx, to, size)
	if errors.Is(err, schema.ErrOverQuota) {
		return errMailboxFull(err)
	}
	if err != nil {
		s.log.Debug("quota check failed; the commit checks again", "err", err)
	}
	return nil
}
