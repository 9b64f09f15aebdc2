package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Account is an authenticated user's mail store. It satisfies
// protocols.Account.
type Account struct {
	c       *Cluster
	user    schema.ID
	address string
	shard   *raftstore.Shard
	keys    *userKeys
}

func (c *Cluster) newAccount(rec schema.UserRecord, address string) (*Account, error) {
	keys, err := c.userKeysFor(rec)
	if err != nil {
		return nil, err
	}
	shard, err := c.mailShard(rec.Shard)
	if err != nil {
		return nil, err
	}
	return &Account{c: c, user: rec.ID, address: address, shard: shard, keys: keys}, nil
}

// Address returns the user's canonical address.
func (a *Account) Address() string { return a.address }

// Close releases the account; it holds nothing that needs releasing
// beyond memory, and may be called more than once.
func (a *Account) Close() error { return nil }

// mailboxAttrs is the sealed part of a mailbox record.
type mailboxAttrs struct {
	Name       string `json:"n"`
	SpecialUse string `json:"s,omitempty"`
	Subscribed bool   `json:"sub,omitempty"`
}

func (c *Cluster) sealMailbox(k *userKeys, user, mbox schema.ID, attrs mailboxAttrs) ([]byte, error) {
	b, err := json.Marshal(attrs)
	if err != nil {
		return nil, err
	}
	return c.sealer.Seal(k.ring, seal.KindMailbox, user[:], mbox[:], b)
}

func (a *Account) openMailbox(rec schema.MailboxRecord) (schema.MailboxInfo, mailboxAttrs, error) {
	var attrs mailboxAttrs
	b, err := a.c.sealer.Open(a.keys.ring, seal.KindMailbox, a.user[:], rec.ID[:], rec.Sealed)
	if err != nil {
		return schema.MailboxInfo{}, attrs, fmt.Errorf("open mailbox record: %w", err)
	}
	if err := json.Unmarshal(b, &attrs); err != nil {
		return schema.MailboxInfo{}, attrs, fmt.Errorf("decode mailbox record: %w", err)
	}
	return schema.MailboxInfo{
		ID: rec.ID, Name: attrs.Name, SpecialUse: attrs.SpecialUse, Subscribed: attrs.Subscribed,
		UIDValidity: rec.UIDValidity, UIDNext: rec.UIDNext, Messages: rec.Messages,
		Size: rec.Size, HighestModSeq: rec.HighestModSeq,
	}, attrs, nil
}

// Mailboxes lists every mailbox, sorted by name.
func (a *Account) Mailboxes(ctx context.Context) ([]schema.MailboxInfo, error) {
	var recs []schema.MailboxRecord
	if err := a.shard.View(func(r *raftstore.Reader) (err error) { recs, err = r.Mailboxes(a.user); return err }); err != nil {
		return nil, fmt.Errorf("list mailboxes: %w", err)
	}
	out := make([]schema.MailboxInfo, 0, len(recs))
	for _, rec := range recs {
		info, _, err := a.openMailbox(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, ctx.Err()
}

func (a *Account) mailboxRecord(name string) (schema.MailboxRecord, error) {
	var rec schema.MailboxRecord
	err := a.shard.View(func(r *raftstore.Reader) (err error) {
		rec, err = r.MailboxByName(a.user, a.keys.mailboxNameKey(name))
		return err
	})
	return rec, err
}

// Mailbox resolves a mailbox by name.
func (a *Account) Mailbox(ctx context.Context, name string) (schema.MailboxInfo, error) {
	n, err := canonicalMailbox(name)
	if err != nil {
		return schema.MailboxInfo{}, err
	}
	rec, err := a.mailboxRecord(n)
	if err != nil {
		return schema.MailboxInfo{}, err
	}
	info, _, err := a.openMailbox(rec)
	if err != nil {
		return info, err
	}
	return info, ctx.Err()
}

var specialUses = map[string]bool{
	schema.SpecialNone: true, schema.SpecialSent: true, schema.SpecialDrafts: true,
	schema.SpecialTrash: true, schema.SpecialJunk: true, schema.SpecialArchive: true,
	`\All`: true, `\Flagged`: true,
}

// CreateMailbox creates a mailbox, and the levels above it that do not
// exist yet (RFC 3501 section 6.3.3).
func (a *Account) CreateMailbox(ctx context.Context, name, specialUse string) error {
	n, err := canonicalMailbox(name)
	if err != nil {
		return err
	}
	if !specialUses[specialUse] {
		return fmt.Errorf("special use %q: %w", specialUse, schema.ErrInvalid)
	}
	if n == schema.InboxName {
		return fmt.Errorf("create %s: %w", n, schema.ErrMailboxExists)
	}
	for _, p := range parentMailboxes(n) {
		if err := a.create(ctx, p, mailboxAttrs{Name: p}); err != nil && !errors.Is(err, schema.ErrMailboxExists) {
			return err
		}
	}
	return a.create(ctx, n, mailboxAttrs{Name: n, SpecialUse: specialUse})
}

func (a *Account) create(ctx context.Context, name string, attrs mailboxAttrs) error {
	id := schema.NewID()
	sealed, err := a.c.sealMailbox(a.keys, a.user, id, attrs)
	if err != nil {
		return err
	}
	_, err = a.shard.Apply(ctx, a.c.command(&schema.CreateMailbox{User: a.user,
		Mailbox: schema.NewMailbox{ID: id, NameKey: a.keys.mailboxNameKey(name), Sealed: sealed}}))
	if err != nil {
		return fmt.Errorf("create mailbox: %w", err)
	}
	return nil
}

// DeleteMailbox deletes a mailbox and its messages; the mailboxes below
// it stay (RFC 3501 section 6.3.4).
func (a *Account) DeleteMailbox(ctx context.Context, name string) error {
	n, err := canonicalMailbox(name)
	if err != nil {
		return err
	}
	if n == schema.InboxName {
		return fmt.Errorf("delete %s: %w", n, schema.ErrCannotDelete)
	}
	rec, err := a.mailboxRecord(n)
	if err != nil {
		return err
	}
	if _, err := a.shard.Apply(ctx, a.c.command(&schema.DeleteMailbox{User: a.user, Mailbox: rec.ID})); err != nil {
		return fmt.Errorf("delete mailbox: %w", err)
	}
	return nil
}

// RenameMailbox renames a mailbox and everything below it in one atomic
// step. Renaming INBOX moves its messages to a new mailbox instead.
func (a *Account) RenameMailbox(ctx context.Context, oldName, newName string) error {
	from, err := canonicalMailbox(oldName)
	if err != nil {
		return err
	}
	to, err := canonicalMailbox(newName)
	if err != nil {
		return err
	}
	if to == schema.InboxName || from == to || strings.HasPrefix(to, from+mailboxDelimiter) {
		return fmt.Errorf("rename a mailbox into itself, below itself or onto INBOX: %w", schema.ErrInvalid)
	}
	if _, err := a.mailboxRecord(to); err == nil {
		return fmt.Errorf("rename: %w", schema.ErrMailboxExists)
	}
	if from == schema.InboxName {
		return a.renameInbox(ctx, to)
	}
	var recs []schema.MailboxRecord
	if err := a.shard.View(func(r *raftstore.Reader) (err error) { recs, err = r.Mailboxes(a.user); return err }); err != nil {
		return err
	}
	var renames []schema.MailboxRename
	for _, rec := range recs {
		info, attrs, err := a.openMailbox(rec)
		if err != nil {
			return err
		}
		if info.Name != from && !strings.HasPrefix(info.Name, from+mailboxDelimiter) {
			continue
		}
		attrs.Name = to + strings.TrimPrefix(info.Name, from)
		sealed, err := a.c.sealMailbox(a.keys, a.user, rec.ID, attrs)
		if err != nil {
			return err
		}
		renames = append(renames, schema.MailboxRename{Mailbox: rec.ID, NameKey: a.keys.mailboxNameKey(attrs.Name), Sealed: sealed})
	}
	if len(renames) == 0 {
		return fmt.Errorf("rename: %w", schema.ErrNoSuchMailbox)
	}
	for _, p := range parentMailboxes(to) {
		if err := a.create(ctx, p, mailboxAttrs{Name: p}); err != nil && !errors.Is(err, schema.ErrMailboxExists) {
			return err
		}
	}
	if _, err := a.shard.Apply(ctx, a.c.command(&schema.RenameMailbox{User: a.user, Renames: renames})); err != nil {
		return fmt.Errorf("rename mailbox: %w", err)
	}
	return nil
}

// renameInbox implements RFC 3501's special case: INBOX's messages move
// to the new mailbox and INBOX stays, empty.
func (a *Account) renameInbox(ctx context.Context, to string) error {
	if err := a.CreateMailbox(ctx, to, schema.SpecialNone); err != nil {
		return err
	}
	inbox, err := a.mailboxRecord(schema.InboxName)
	if err != nil {
		return err
	}
	dest, err := a.mailboxRecord(to)
	if err != nil {
		return err
	}
	snap, err := a.Snapshot(ctx, inbox.ID)
	if err != nil {
		return err
	}
	uids := make([]schema.UID, len(snap.Messages))
	for i, m := range snap.Messages {
		uids[i] = m.UID
	}
	_, err = a.Move(ctx, inbox.ID, uids, dest.ID)
	return err
}

// SetSubscribed changes a mailbox's subscription.
func (a *Account) SetSubscribed(ctx context.Context, name string, subscribed bool) error {
	n, err := canonicalMailbox(name)
	if err != nil {
		return err
	}
	rec, err := a.mailboxRecord(n)
	if err != nil {
		return err
	}
	_, attrs, err := a.openMailbox(rec)
	if err != nil {
		return err
	}
	if attrs.Subscribed == subscribed {
		return nil
	}
	attrs.Subscribed = subscribed
	sealed, err := a.c.sealMailbox(a.keys, a.user, rec.ID, attrs)
	if err != nil {
		return err
	}
	if _, err := a.shard.Apply(ctx, a.c.command(&schema.UpdateMailbox{User: a.user, Mailbox: rec.ID, Sealed: sealed})); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}
