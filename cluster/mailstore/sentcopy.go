package mailstore

import (
	"context"
	"fmt"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// sentMailboxName is the name of the Sent mailbox a Sent copy creates
// when the user has none.
const sentMailboxName = "Sent"

// SaveSent stores msg, a message the user with address user sent
// through submission, in their Sent mailbox (the \Sent special-use one,
// else one named Sent, else a new one), marked \Seen, when their
// domain asks for Sent copies (directory.SetDomainSentCopy); otherwise
// it does nothing. It returns nil once the copy is committed. With a
// fingerprint, a retried submission stores one copy.
func (s *Store) SaveSent(ctx context.Context, user string, msg, fingerprint []byte) error {
	on, err := s.dir.SentCopy(ctx, user)
	if err != nil || !on {
		return err
	}
	u, err := s.dir.UserByAddress(ctx, user)
	if err != nil {
		return fmt.Errorf("sent copy: %w", err)
	}
	mbox, err := s.specialMailbox(ctx, u, schema.SpecialSent, sentMailboxName)
	if err != nil {
		return fmt.Errorf("sent copy: %w", err)
	}
	req := schema.NewRequestID()
	if fingerprint != nil {
		req = deriveID("mailcluster/sent-copy/", fingerprint, u.ID[:])
	}
	// Not limited by the quota: a user whose mailbox is full can still
	// send mail, and the message is already on its way.
	if _, err := s.storeMessage(ctx, u.Shard, u.ID, u.Keys, mbox, msg, []string{schema.FlagSeen}, time.Now(), req, directory.Quotas{}, false); err != nil {
		return fmt.Errorf("sent copy: %w", err)
	}
	return nil
}
