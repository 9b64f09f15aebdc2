package protocoltest

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Quotas in the reference store: a user's limits in bytes and in
// messages (0: none, the default), checked like the production store
// checks them, against all the user's messages.

// SetQuota sets a user's storage limit in bytes; 0 removes it.
func (s *MemStore) SetQuota(address string, limit uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[address]
	if u == nil {
		return fmt.Errorf("set quota: %w", schema.ErrNoSuchUser)
	}
	u.quota = limit
	return nil
}

// SetMessageQuota sets a user's limit on the number of messages; 0
// removes it.
func (s *MemStore) SetMessageQuota(address string, limit uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[address]
	if u == nil {
		return fmt.Errorf("set quota: %w", schema.ErrNoSuchUser)
	}
	u.messageQuota = limit
	return nil
}

// usage returns the bytes and number of u's messages; s.mu must be held.
func (u *memUser) usage() (uint64, uint64) {
	var b, n uint64
	for _, mb := range u.mailboxes {
		b += mb.info.Size
		n += uint64(mb.info.Messages)
	}
	return b, n
}

// fits refuses n more messages of size bytes over u's quota; s.mu must
// be held.
func (u *memUser) fits(size, n uint64) error {
	if u.quota == 0 && u.messageQuota == 0 {
		return nil
	}
	used, msgs := u.usage()
	if (u.quota != 0 && used+size > u.quota) || (u.messageQuota != 0 && msgs+n > u.messageQuota) {
		return fmt.Errorf("mailbox full: %w", schema.ErrOverQuota)
	}
	return nil
}

// CheckQuota reports whether a message of size bytes still fits the
// mailbox address delivers to (protocols.QuotaChecker).
func (s *MemStore) CheckQuota(ctx context.Context, address string, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.resolveRecipient(address)
	if err != nil {
		return err
	}
	if err := u.fits(uint64(max(size, 1)), 1); err != nil {
		return err
	}
	return ctx.Err()
}

// Quota returns the user's storage limit and usage.
func (a *MemAccount) Quota(ctx context.Context) (schema.Quota, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	b, n := a.u.usage()
	return schema.Quota{Limit: a.u.quota, MessageLimit: a.u.messageQuota, Usage: b, Messages: n}, ctx.Err()
}

// AppendBatch stores several messages in one mailbox, all or none.
func (a *MemAccount) AppendBatch(ctx context.Context, mbox schema.ID, msgs []schema.AppendMessage) (schema.AppendBatchResult, error) {
	var res schema.AppendBatchResult
	if len(msgs) == 0 {
		return res, fmt.Errorf("append: no messages: %w", schema.ErrInvalid)
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	mb := a.u.mailboxes[mbox]
	if mb == nil {
		return res, fmt.Errorf("append: %w", schema.ErrNoSuchMailbox)
	}
	var total uint64
	flags := make([][]string, len(msgs))
	for i, m := range msgs {
		fl, err := schema.CanonicalFlags(m.Flags)
		if err != nil {
			return res, err
		}
		flags[i] = fl
		n := schema.NormalizeCRLF(m.Message)
		if len(n) > a.s.maxSize {
			return res, fmt.Errorf("message of %d bytes: %w", len(n), schema.ErrTooLarge)
		}
		total += uint64(len(n))
	}
	if err := a.u.fits(total, uint64(len(msgs))); err != nil {
		return res, err
	}
	if a.s.unavailable {
		return res, fmt.Errorf("append: %w", schema.ErrUnavailable)
	}
	// The reference store has no partial failure past these checks:
	// each message is one command, all under one lock.
	for i, m := range msgs {
		r, err := a.s.storeMessage(ctx, a.u, mbox, m.Message, flags[i], m.Date)
		if err != nil {
			return schema.AppendBatchResult{}, err
		}
		res.UIDValidity = r.UIDValidity
		res.UIDs = append(res.UIDs, r.UID)
	}
	return res, nil
}
