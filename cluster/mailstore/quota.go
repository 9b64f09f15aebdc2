package mailstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Quotas: every command that adds mail carries the user's limit as this
// node's directory has it (directory/quota.go), and the user's shard
// refuses it with schema.ErrOverQuota at apply time (raftstore/quota.go).
// Deliveries check first, before anything is committed, so that a full
// mailbox is refused at RCPT and a delivery to several users refuses only
// the full ones. Two kinds of delivery are never refused for quota:
// mail to a postmaster address (RFC 5321 section 4.5.1: it must be
// accepted), and the copies of a message already spooled for several
// shards (accepted with 250; refusing the copy then would lose it), so
// a race between the check and the spooled copy can take a user over
// the limit by that one message.

// maxBatchInline bounds the sealed bytes of one append of several
// messages carried inline in its final command; beyond it every chunk is
// staged.
const maxBatchInline = maxInline

// maxBatchRecords bounds the sealed search records one AppendBatch
// entry carries.
const maxBatchRecords = 8 << 20

// quotaRefused tells the node's metrics about a change refused for quota.
func (s *Store) quotaRefused(op string) {
	if s.cfg.OverQuota != nil {
		s.cfg.OverQuota(op)
	}
}

// usageOf reads a user's usage from their shard's leader.
func (s *Store) usageOf(ctx context.Context, shard uint32, user schema.ID, minIndex uint64) (schema.Quota, *raftstore.QueryResult, error) {
	res, err := s.c.Query(ctx, shard, raftstore.Query{Kind: raftstore.QueryMailboxes, User: user}, minIndex)
	if err != nil {
		return schema.Quota{}, nil, fmt.Errorf("read quota usage: %w", err)
	}
	var q schema.Quota
	for _, m := range res.Mailboxes {
		q.Usage += m.Size
		q.Messages += uint64(m.Messages)
	}
	return q, res, nil
}

// fits reports whether size more bytes fit in u's quota (ignoring it for
// exempt users). It is the check before a commit; the shard's check at
// apply time is the one that holds under races.
func (s *Store) fits(ctx context.Context, u *directory.User, size uint64) error {
	if u.Quota == (directory.Quotas{}) {
		return nil
	}
	q, _, err := s.usageOf(ctx, u.Shard, u.ID, 0)
	if err != nil {
		return err
	}
	if u.Quota.Bytes != 0 && q.Usage+size > u.Quota.Bytes {
		return fmt.Errorf("mailbox of %d of %d bytes: %w", q.Usage, u.Quota.Bytes, schema.ErrOverQuota)
	}
	if u.Quota.Messages != 0 && q.Messages+1 > u.Quota.Messages {
		return fmt.Errorf("mailbox of %d of %d messages: %w", q.Messages, u.Quota.Messages, schema.ErrOverQuota)
	}
	return nil
}

// postmasterAddress reports whether a recipient is a postmaster address,
// which is never refused for quota.
func postmasterAddress(rcpt string) bool {
	at := strings.LastIndexByte(rcpt, '@')
	return at > 0 && strings.EqualFold(rcpt[:at], "postmaster")
}

// CheckQuota reports whether a message of size bytes (0: unknown, any
// message at all) still fits the mailboxes address delivers to:
// schema.ErrOverQuota when every user it reaches is full. The SMTP
// frontend asks at RCPT, so a full mailbox is refused for its recipient
// only.
func (s *Store) CheckQuota(ctx context.Context, address string, size int64) error {
	if postmasterAddress(address) {
		return nil
	}
	users, err := s.dir.ResolveRecipients(ctx, address)
	if err != nil {
		return err
	}
	var full error
	for _, u := range users {
		err := s.fits(ctx, u, uint64(max(size, 1)))
		if err == nil {
			return nil
		}
		if !errors.Is(err, schema.ErrOverQuota) {
			return err
		}
		full = err
	}
	if full != nil {
		s.quotaRefused("deliver")
	}
	return full
}

// Quota returns the account's storage quota and usage.
func (a *Account) Quota(ctx context.Context) (schema.Quota, error) {
	limit, err := a.s.dir.QuotaLimit(a.user)
	if err != nil {
		return schema.Quota{}, err
	}
	q, res, err := a.s.usageOf(ctx, a.shard, a.user, a.minIndex())
	if err != nil {
		return schema.Quota{}, err
	}
	a.seen(res.Index)
	q.Limit, q.MessageLimit = limit.Bytes, limit.Messages
	return q, nil
}

// limit returns the account's storage limit for a command that adds
// mail.
func (a *Account) limit() (directory.Quotas, error) {
	l, err := a.s.dir.QuotaLimit(a.user)
	if err != nil {
		return l, fmt.Errorf("read quota: %w", err)
	}
	return l, nil
}

// AppendBatch stores several messages in one mailbox atomically: all of
// them or none (RFC 3502 MULTIAPPEND). Large messages are staged chunk
// by chunk first, as for one message; the final command commits them
// together.
func (a *Account) AppendBatch(ctx context.Context, mbox schema.ID, msgs []schema.AppendMessage) (schema.AppendBatchResult, error) {
	if mbox.IsZero() {
		return schema.AppendBatchResult{}, fmt.Errorf("append: %w", schema.ErrNoSuchMailbox)
	}
	if len(msgs) == 0 {
		return schema.AppendBatchResult{}, fmt.Errorf("append: no messages: %w", schema.ErrInvalid)
	}
	quota, err := a.limit()
	if err != nil {
		return schema.AppendBatchResult{}, err
	}
	batch := &schema.AppendBatch{User: a.user, Mailbox: mbox, Quota: quota.Bytes, MessageQuota: quota.Messages}
	sealed := make([][][]byte, len(msgs))
	total := 0
	for i, m := range msgs {
		fl, err := schema.CanonicalFlags(m.Flags)
		if err != nil {
			return schema.AppendBatchResult{}, err
		}
		var app *schema.Append
		if app, sealed[i], err = a.s.sealMessage(a.user, a.keys, mbox, m.Message, fl, m.Date); err != nil {
			return schema.AppendBatchResult{}, err
		}
		for _, c := range sealed[i] {
			total += len(c)
		}
		batch.Items = append(batch.Items, *app)
	}
	// The search records ride in the final entry; past a bound the rest
	// go without (they are searched by reading them).
	records := 0
	for i := range batch.Items {
		it := &batch.Items[i]
		if records += len(it.SearchRecord); records > maxBatchRecords {
			it.SearchRecord = nil
		}
	}
	for i := range batch.Items {
		it := &batch.Items[i]
		if total <= maxBatchInline {
			it.Chunks = sealed[i]
			continue
		}
		if err := a.s.stageAll(ctx, a.shard, a.user, it.Blob, sealed[i]); err != nil {
			return schema.AppendBatchResult{}, err
		}
		it.StagedChunks = uint32(len(sealed[i]))
	}
	res, err := a.applyTo(ctx, batch, mbox)
	if errors.Is(err, schema.ErrOverQuota) {
		a.s.quotaRefused("append")
	}
	if err != nil {
		return schema.AppendBatchResult{}, fmt.Errorf("append: %w", err)
	}
	return schema.AppendBatchResult{UIDValidity: res.UIDValidity, UIDs: res.UIDs}, nil
}

// sealMessage seals a message's attributes and chunks for a user and
// returns its Append without chunks, and the sealed chunks. Line ends
// become CRLF but in the bodies of binary parts (normalizeKeepingBinary).
func (s *Store) sealMessage(user schema.ID, keys *directory.UserKeys, mbox schema.ID, msg []byte, flags []string, date time.Time) (*schema.Append, [][]byte, error) {
	msg = normalizeKeepingBinary(msg)
	if len(msg) > MaxMessageSize {
		return nil, nil, fmt.Errorf("message of %d bytes: %w", len(msg), schema.ErrTooLarge)
	}
	if date.IsZero() {
		date = time.Now()
	}
	app := &schema.Append{User: user, Mailbox: mbox, Message: schema.NewID(), Blob: schema.NewID(), Size: uint64(len(msg))}
	var err error
	if app.Sealed, err = s.sealAttrs(keys, user, app.Message, messageAttrs{Flags: flags, Date: date.UnixNano()}); err != nil {
		return nil, nil, err
	}
	if idx := s.cfg.SearchIndexer; idx != nil && s.c.CommandLevel() >= schema.LevelSearchRecords {
		if rec := idx(msg); rec != nil {
			if app.SearchRecord, err = s.sealer.Seal(keys.Ring(), seal.KindSearchRecord, user[:], app.Blob[:], rec); err != nil {
				return nil, nil, err
			}
		}
	}
	pieces := splitMessage(msg)
	sealed := make([][]byte, len(pieces))
	for i, p := range pieces {
		if sealed[i], err = s.sealer.Seal(keys.Ring(), seal.KindChunk, user[:], seal.ChunkObject(app.Blob, uint32(i)), p); err != nil {
			return nil, nil, err
		}
	}
	return app, sealed, nil
}

// UserQuota returns a user's storage limit and usage, for the admin
// interface.
func (s *Store) UserQuota(ctx context.Context, address string) (schema.Quota, error) {
	u, err := s.dir.UserByAddress(ctx, address)
	if err != nil {
		return schema.Quota{}, err
	}
	q, _, err := s.usageOf(ctx, u.Shard, u.ID, 0)
	if err != nil {
		return schema.Quota{}, err
	}
	q.Limit, q.MessageLimit = u.Quota.Bytes, u.Quota.Messages
	return q, nil
}
