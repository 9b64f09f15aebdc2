package mailstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Account is an authenticated user's mail store. It satisfies
// protocols.Account. Its reads see at least its own writes: every call
// carries the highest log index the account has written or read, and the
// replica that serves it waits for that index.
type Account struct {
	s       *Store
	user    schema.ID
	address string
	shard   uint32
	keys    *directory.UserKeys
	// credential names the app password the login used ("" for the
	// account password).
	credential string

	mu       sync.Mutex
	index    uint64 // highest log index written or read through this account
	watchers map[*watcher]struct{}
	maildrop *maildropLock // the POP3 lock taken through the account, if any
	// claim is the \Recent claim the last Snapshot read with its
	// mailbox, for the ClaimRecent of that mailbox that follows it.
	claim knownClaim
}

// knownClaim is a mailbox's \Recent claim (schema.RecentValue) as a read
// found it; value nil: no claim yet.
type knownClaim struct {
	mbox  schema.ID
	value []byte
	ok    bool
}

func (s *Store) newAccount(u *directory.User) *Account {
	return &Account{s: s, user: u.ID, address: u.Address, shard: u.Shard, keys: u.Keys, credential: u.AppPassword, watchers: map[*watcher]struct{}{}}
}

// Credential names the app password the account logged in with, "" for
// the account password (protocols.CredentialNamer).
func (a *Account) Credential() string { return a.credential }

// seen records that the account has seen the shard up to index.
func (a *Account) seen(index uint64) {
	a.mu.Lock()
	if index > a.index {
		a.index = index
	}
	a.mu.Unlock()
}

func (a *Account) minIndex() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index
}

// query runs a named read on the account's shard, at or after every index
// the account has seen.
func (a *Account) query(ctx context.Context, q raftstore.Query) (*raftstore.QueryResult, error) {
	q.User = a.user
	res, err := a.s.c.Query(ctx, a.shard, q, a.minIndex())
	if res != nil {
		a.seen(res.Index)
	}
	return res, err
}

// apply commits a change to the account's shard. Before it returns, every
// watcher of the account has been handed the change's events, so a
// session that drains its watcher next sees its own command's effects,
// whichever node leads the shard.
func (a *Account) apply(ctx context.Context, p schema.Payload) (*schema.Result, error) {
	return a.applyTo(ctx, p)
}

// applyTo is apply for a change to messages of mboxes only: it waits for
// the watchers of those mailboxes. On a node whose replica follows the
// shard's leader, that wait lasts until the replica learns the commit,
// so a message saved to a mailbox no session here watches (Sent, while
// INBOX is selected) is acknowledged without it.
func (a *Account) applyTo(ctx context.Context, p schema.Payload, mboxes ...schema.ID) (*schema.Result, error) {
	res, err := a.s.c.Apply(ctx, a.shard, p)
	if res != nil && res.Index > 0 {
		a.seen(res.Index)
		a.syncWatchers(ctx, res.Index, mboxes...)
	}
	return res, err
}

// applyUnwatched commits a change that no watcher shows, a user value
// (the FSM emits no event for one), without waiting for the watchers: a
// watcher passes an index that brings it no event only at the next
// progress mark of its source, which on a follower's node is a tick
// away, and nothing it could be handed makes the change visible sooner.
func (a *Account) applyUnwatched(ctx context.Context, p *schema.SwapUserValue) (*schema.Result, error) {
	res, err := a.s.c.Apply(ctx, a.shard, p)
	if res != nil && res.Index > 0 {
		a.seen(res.Index)
	}
	return res, err
}

// Address returns the user's canonical address.
func (a *Account) Address() string { return a.address }

// Close stops the account's watchers; it may be called more than once.
func (a *Account) Close() error {
	a.mu.Lock()
	ws := make([]*watcher, 0, len(a.watchers))
	for w := range a.watchers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
	return nil
}

type mailboxAttrs = directory.MailboxAttrs

func (a *Account) sealMailbox(mbox schema.ID, attrs mailboxAttrs) ([]byte, error) {
	return directory.SealMailbox(a.s.sealer, a.keys, a.user, mbox, attrs)
}

func (a *Account) openMailbox(rec schema.MailboxRecord) (schema.MailboxInfo, mailboxAttrs, error) {
	var attrs mailboxAttrs
	b, err := a.s.sealer.Open(a.keys.Ring(), seal.KindMailbox, a.user[:], rec.ID[:], rec.Sealed)
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
	infos, _, err := a.openMailboxes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list mailboxes: %w", err)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos, ctx.Err()
}

// openMailboxes reads and opens every mailbox record. One whose copy on
// the replica read does not open is read from another replica's
// (mendRecords).
func (a *Account) openMailboxes(ctx context.Context) (infos []schema.MailboxInfo, attrs []mailboxAttrs, err error) {
	_, err = a.readOpen(ctx, schema.ID{}, raftstore.Query{Kind: raftstore.QueryMailboxes}, true, func(res *raftstore.QueryResult) error {
		infos = make([]schema.MailboxInfo, len(res.Mailboxes))
		attrs = make([]mailboxAttrs, len(res.Mailboxes))
		for i, rec := range res.Mailboxes {
			var err error
			if infos[i], attrs[i], err = a.openMailbox(rec); err != nil {
				return err
			}
		}
		return nil
	})
	return infos, attrs, err
}

// mailboxRecord reads the record of the mailbox name, for its ID and
// counters; openNamed opens it too.
func (a *Account) mailboxRecord(ctx context.Context, name string) (schema.MailboxRecord, error) {
	res, err := a.query(ctx, raftstore.Query{Kind: raftstore.QueryMailboxByName, NameKey: a.keys.MailboxNameKey(name)})
	if err != nil {
		return schema.MailboxRecord{}, err
	}
	return res.Mailbox, nil
}

// openNamed reads and opens the record of the mailbox name. One whose
// copy on the replica read does not open is read from another replica's
// (mendRecords).
func (a *Account) openNamed(ctx context.Context, name string) (rec schema.MailboxRecord, info schema.MailboxInfo, attrs mailboxAttrs, err error) {
	q := raftstore.Query{Kind: raftstore.QueryMailboxByName, NameKey: a.keys.MailboxNameKey(name)}
	_, err = a.readOpen(ctx, schema.ID{}, q, true, func(res *raftstore.QueryResult) (err error) {
		rec = res.Mailbox
		info, attrs, err = a.openMailbox(rec)
		return err
	})
	return rec, info, attrs, err
}

// Mailbox resolves a mailbox by name.
func (a *Account) Mailbox(ctx context.Context, name string) (schema.MailboxInfo, error) {
	n, err := schema.CanonicalMailbox(name)
	if err != nil {
		return schema.MailboxInfo{}, err
	}
	_, info, _, err := a.openNamed(ctx, n)
	if err != nil {
		return info, err
	}
	return info, ctx.Err()
}

// CreateMailbox creates a mailbox, and the levels above it that do not
// exist yet (RFC 3501 section 6.3.3).
func (a *Account) CreateMailbox(ctx context.Context, name, specialUse string) error {
	n, err := schema.CanonicalNewMailbox(name)
	if err != nil {
		return err
	}
	if !schema.ValidSpecialUse(specialUse) {
		return fmt.Errorf("special use %q: %w", specialUse, schema.ErrInvalid)
	}
	if n == schema.InboxName {
		return fmt.Errorf("create %s: %w", n, schema.ErrMailboxExists)
	}
	for _, p := range schema.ParentMailboxes(n) {
		if err := a.create(ctx, p, mailboxAttrs{Name: p}); err != nil && !errors.Is(err, schema.ErrMailboxExists) {
			return err
		}
	}
	return a.create(ctx, n, mailboxAttrs{Name: n, SpecialUse: specialUse})
}

func (a *Account) create(ctx context.Context, name string, attrs mailboxAttrs) error {
	id := schema.NewID()
	sealed, err := a.sealMailbox(id, attrs)
	if err != nil {
		return err
	}
	_, err = a.apply(ctx, &schema.CreateMailbox{User: a.user,
		Mailbox: schema.NewMailbox{ID: id, NameKey: a.keys.MailboxNameKey(name), Sealed: sealed}})
	if err != nil {
		return fmt.Errorf("create mailbox: %w", err)
	}
	return nil
}

// DeleteMailbox deletes a mailbox and its messages; the mailboxes below
// it stay (RFC 3501 section 6.3.4).
func (a *Account) DeleteMailbox(ctx context.Context, name string) error {
	n, err := schema.CanonicalMailbox(name)
	if err != nil {
		return err
	}
	if n == schema.InboxName {
		return fmt.Errorf("delete %s: %w", n, schema.ErrCannotDelete)
	}
	rec, _, attrs, err := a.openNamed(ctx, n)
	if err != nil {
		return err
	}
	if attrs.Subscribed {
		// The name stays subscribed (RFC 3501 section 6.3.6). Kept
		// first: if the delete fails, it is still subscribed anyway.
		if err := a.keepSubscription(ctx, n); err != nil {
			return err
		}
	}
	if _, err := a.apply(ctx, &schema.DeleteMailbox{User: a.user, Mailbox: rec.ID}); err != nil {
		return fmt.Errorf("delete mailbox: %w", err)
	}
	return nil
}

// RenameMailbox renames a mailbox and everything below it in one atomic
// step. Renaming INBOX moves its messages to a new mailbox instead.
func (a *Account) RenameMailbox(ctx context.Context, oldName, newName string) error {
	from, err := schema.CanonicalMailbox(oldName)
	if err != nil {
		return err
	}
	to, err := schema.CanonicalNewMailbox(newName)
	if err != nil {
		return err
	}
	if to == schema.InboxName || from == to || strings.HasPrefix(to, from+schema.MailboxDelimiter) {
		return fmt.Errorf("rename a mailbox into itself, below itself or onto INBOX: %w", schema.ErrInvalid)
	}
	if _, err := a.mailboxRecord(ctx, to); err == nil {
		return fmt.Errorf("rename: %w", schema.ErrMailboxExists)
	}
	if from == schema.InboxName {
		return a.renameInbox(ctx, to)
	}
	infos, all, err := a.openMailboxes(ctx)
	if err != nil {
		return err
	}
	var renames []schema.MailboxRename
	for i, info := range infos {
		attrs := all[i]
		if info.Name != from && !strings.HasPrefix(info.Name, from+schema.MailboxDelimiter) {
			continue
		}
		attrs.Name = to + strings.TrimPrefix(info.Name, from)
		sealed, err := a.sealMailbox(info.ID, attrs)
		if err != nil {
			return err
		}
		renames = append(renames, schema.MailboxRename{Mailbox: info.ID, NameKey: a.keys.MailboxNameKey(attrs.Name), Sealed: sealed})
	}
	if len(renames) == 0 {
		return fmt.Errorf("rename: %w", schema.ErrNoSuchMailbox)
	}
	for _, p := range schema.ParentMailboxes(to) {
		if err := a.create(ctx, p, mailboxAttrs{Name: p}); err != nil && !errors.Is(err, schema.ErrMailboxExists) {
			return err
		}
	}
	if _, err := a.apply(ctx, &schema.RenameMailbox{User: a.user, Renames: renames}); err != nil {
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
	inbox, err := a.mailboxRecord(ctx, schema.InboxName)
	if err != nil {
		return err
	}
	dest, err := a.mailboxRecord(ctx, to)
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

// SetSubscribed changes the subscription to a name: a mailbox, or a name
// kept subscribed after its mailbox was deleted, which can then only be
// unsubscribed. Other names are schema.ErrNoSuchMailbox.
func (a *Account) SetSubscribed(ctx context.Context, name string, subscribed bool) error {
	n, err := schema.CanonicalMailbox(name)
	if err != nil {
		return err
	}
	rec, _, attrs, err := a.openNamed(ctx, n)
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		kept, _, kerr := a.keptSubscriptions(ctx)
		if kerr != nil {
			return kerr
		}
		if !slices.Contains(kept, n) {
			return err
		}
		if !subscribed {
			_, err = a.dropSubscription(ctx, n)
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !subscribed {
		// The name may also be kept from an earlier mailbox of that name.
		if _, err := a.dropSubscription(ctx, n); err != nil {
			return err
		}
	}
	if attrs.Subscribed == subscribed {
		return nil
	}
	attrs.Subscribed = subscribed
	sealed, err := a.sealMailbox(rec.ID, attrs)
	if err != nil {
		return err
	}
	if _, err := a.apply(ctx, &schema.UpdateMailbox{User: a.user, Mailbox: rec.ID, Sealed: sealed}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}
