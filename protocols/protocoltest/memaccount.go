package protocoltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// MemAccount is an authenticated user's mail in a MemStore. It satisfies
// protocols.Account.
type MemAccount struct {
	s *MemStore
	u *memUser
}

// Address returns the user's canonical (lower-case) address.
func (a *MemAccount) Address() string { return a.u.address }

// Close releases nothing (watchers end with their stop functions) and may
// be called more than once, like the production account's.
func (a *MemAccount) Close() error { return nil }

// LockMaildrop takes the user's exclusive POP3 maildrop lock:
// schema.ErrInUse while another session holds it. Taking it is a write:
// it fails with schema.ErrUnavailable while the store is unavailable.
func (a *MemAccount) LockMaildrop(ctx context.Context) (func(), error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if a.s.unavailable {
		return nil, fmt.Errorf("lock maildrop: %w", schema.ErrUnavailable)
	}
	if a.u.maildropLocked {
		return nil, fmt.Errorf("lock maildrop: %w", schema.ErrInUse)
	}
	a.u.maildropLocked, a.u.maildropHolder = true, a
	var once sync.Once
	return func() {
		once.Do(func() {
			a.s.mu.Lock()
			if a.u.maildropHolder == a {
				a.u.maildropLocked, a.u.maildropHolder = false, nil
			}
			a.s.mu.Unlock()
		})
	}, ctx.Err()
}

// ConfirmMaildrop reports whether this account still holds the maildrop
// lock: schema.ErrInUse once another session took it (see
// MemStore.TakeMaildropLock), schema.ErrUnavailable while the store is
// unavailable.
func (a *MemAccount) ConfirmMaildrop(ctx context.Context) error {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	switch {
	case a.u.maildropHolder != a:
		return fmt.Errorf("confirm maildrop lock: %w", schema.ErrInUse)
	case a.s.unavailable:
		return fmt.Errorf("confirm maildrop lock: %w", schema.ErrUnavailable)
	}
	return ctx.Err()
}

// Mailboxes lists every mailbox, sorted by name.
func (a *MemAccount) Mailboxes(ctx context.Context) ([]schema.MailboxInfo, error) {
	a.s.mu.Lock()
	out := make([]schema.MailboxInfo, 0, len(a.u.mailboxes))
	for _, mb := range a.u.mailboxes {
		out = append(out, mb.info)
	}
	a.s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, ctx.Err()
}

// Mailbox resolves a mailbox by name (INBOX case-insensitively).
func (a *MemAccount) Mailbox(ctx context.Context, name string) (schema.MailboxInfo, error) {
	n, err := schema.CanonicalMailbox(name)
	if err != nil {
		return schema.MailboxInfo{}, err
	}
	a.s.mu.Lock()
	mb := a.u.byName(n)
	var info schema.MailboxInfo
	if mb != nil {
		info = mb.info
	}
	a.s.mu.Unlock()
	if mb == nil {
		return info, fmt.Errorf("mailbox: %w", schema.ErrNoSuchMailbox)
	}
	return info, ctx.Err()
}

// CreateMailbox creates a mailbox, and the levels above it that do not
// exist yet (RFC 3501 section 6.3.3), each with its own command. Only the
// mailbox named gets specialUse; none is subscribed.
func (a *MemAccount) CreateMailbox(ctx context.Context, name, specialUse string) error {
	n, err := schema.CanonicalNewMailbox(name)
	if err != nil {
		return err
	}
	if !schema.ValidSpecialUse(specialUse) {
		return fmt.Errorf("special use %q: %w", specialUse, schema.ErrInvalid)
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	return a.createWithParents(ctx, n, specialUse)
}

// createWithParents creates the canonical name n and its missing
// parents; a.s.mu must be held.
func (a *MemAccount) createWithParents(ctx context.Context, n, specialUse string) error {
	if n == schema.InboxName {
		return fmt.Errorf("create %s: %w", n, schema.ErrMailboxExists)
	}
	for _, p := range schema.ParentMailboxes(n) {
		if err := a.create(ctx, p, schema.SpecialNone); err != nil && !errors.Is(err, schema.ErrMailboxExists) {
			return err
		}
	}
	return a.create(ctx, n, specialUse)
}

// create is one create-mailbox command; a.s.mu must be held.
func (a *MemAccount) create(ctx context.Context, name, specialUse string) error {
	c, err := a.s.begin(ctx, "create mailbox")
	if err != nil {
		return fmt.Errorf("create mailbox: %w", err)
	}
	if a.u.byName(name) != nil {
		return fmt.Errorf("create mailbox: %w", schema.ErrMailboxExists)
	}
	mb := a.u.addMailbox(name, specialUse, false)
	c.emit(a.u, schema.Change{Kind: schema.ChangeMailbox, Mailbox: mb.info.ID})
	return nil
}

// DeleteMailbox deletes a mailbox and its messages; the mailboxes below
// it stay (RFC 3501 section 6.3.4). INBOX cannot be deleted
// (schema.ErrCannotDelete). Watchers of the mailbox get one
// schema.ChangeMailbox, not an expunge per message.
func (a *MemAccount) DeleteMailbox(ctx context.Context, name string) error {
	n, err := schema.CanonicalMailbox(name)
	if err != nil {
		return err
	}
	if n == schema.InboxName {
		return fmt.Errorf("delete %s: %w", n, schema.ErrCannotDelete)
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	mb := a.u.byName(n)
	if mb == nil {
		return fmt.Errorf("delete mailbox: %w", schema.ErrNoSuchMailbox)
	}
	c, err := a.s.begin(ctx, "delete mailbox")
	if err != nil {
		return fmt.Errorf("delete mailbox: %w", err)
	}
	if mb.inbox {
		return fmt.Errorf("delete mailbox: %w", schema.ErrCannotDelete)
	}
	for _, m := range mb.msgs {
		a.u.releaseBlob(m.Blob)
	}
	if mb.info.Subscribed && !slices.Contains(a.u.keptSubscriptions, mb.info.Name) {
		// The name stays subscribed (RFC 3501 section 6.3.6).
		a.u.keptSubscriptions = append(a.u.keptSubscriptions, mb.info.Name)
	}
	delete(a.u.names, mb.info.Name)
	delete(a.u.mailboxes, mb.info.ID)
	c.emit(a.u, schema.Change{Kind: schema.ChangeMailbox, Mailbox: mb.info.ID})
	return nil
}

// RenameMailbox renames a mailbox and everything below it in one command,
// after creating the missing parents of the new name. Mailboxes keep
// their ids and UIDVALIDITY. Renaming INBOX moves its messages to a new
// mailbox and leaves INBOX empty (RFC 3501 section 6.3.5).
func (a *MemAccount) RenameMailbox(ctx context.Context, oldName, newName string) error {
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
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if a.u.byName(to) != nil {
		return fmt.Errorf("rename: %w", schema.ErrMailboxExists)
	}
	if from == schema.InboxName {
		return a.renameInbox(ctx, to)
	}
	var moving []*memMailbox
	for _, mb := range a.u.mailboxes {
		if isBelow(mb.info.Name, from) {
			moving = append(moving, mb)
		}
	}
	if len(moving) == 0 {
		return fmt.Errorf("rename: %w", schema.ErrNoSuchMailbox)
	}
	// The production store meets them in the order of their random ids.
	sort.Slice(moving, func(i, j int) bool { return bytes.Compare(moving[i].info.ID[:], moving[j].info.ID[:]) < 0 })
	for _, p := range schema.ParentMailboxes(to) {
		if err := a.create(ctx, p, schema.SpecialNone); err != nil && !errors.Is(err, schema.ErrMailboxExists) {
			return err
		}
	}
	c, err := a.s.begin(ctx, "rename mailbox")
	if err != nil {
		return fmt.Errorf("rename mailbox: %w", err)
	}
	newNames := make([]string, len(moving))
	for i, mb := range moving {
		newNames[i] = to + strings.TrimPrefix(mb.info.Name, from)
		// A name may only be taken by a mailbox that is renamed too
		// (children of a deleted parent can hold names below it).
		if owner := a.u.byName(newNames[i]); owner != nil && !isBelow(owner.info.Name, from) {
			return fmt.Errorf("rename mailbox: %w", schema.ErrMailboxExists)
		}
	}
	for _, mb := range moving {
		delete(a.u.names, mb.info.Name)
	}
	for i, mb := range moving {
		mb.info.Name = newNames[i]
		a.u.names[newNames[i]] = mb.info.ID
		c.emit(a.u, schema.Change{Kind: schema.ChangeMailbox, Mailbox: mb.info.ID})
	}
	return nil
}

// renameInbox creates the mailbox to and moves INBOX's messages there;
// a.s.mu must be held.
func (a *MemAccount) renameInbox(ctx context.Context, to string) error {
	if err := a.createWithParents(ctx, to, schema.SpecialNone); err != nil {
		return err
	}
	inbox := a.u.mailboxes[a.u.inbox]
	dest := a.u.byName(to)
	uids := make([]schema.UID, len(inbox.msgs))
	for i, m := range inbox.msgs {
		uids[i] = m.UID
	}
	_, err := a.copy(ctx, inbox.info.ID, uids, dest.info.ID, true)
	return err
}

// SetSubscribed changes a mailbox's subscription, or drops a name kept
// subscribed after its mailbox was deleted; a change is a command that
// watchers of the mailbox see as schema.ChangeMailbox.
func (a *MemAccount) SetSubscribed(ctx context.Context, name string, subscribed bool) error {
	n, err := schema.CanonicalMailbox(name)
	if err != nil {
		return err
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	kept := slices.Index(a.u.keptSubscriptions, n)
	mb := a.u.byName(n)
	if mb == nil && kept < 0 {
		return fmt.Errorf("subscribe: %w", schema.ErrNoSuchMailbox)
	}
	if (mb == nil || mb.info.Subscribed == subscribed) && (subscribed || kept < 0) {
		return nil
	}
	c, err := a.s.begin(ctx, "update mailbox")
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if !subscribed && kept >= 0 {
		a.u.keptSubscriptions = slices.Delete(a.u.keptSubscriptions, kept, kept+1)
	}
	if mb != nil && mb.info.Subscribed != subscribed {
		mb.info.Subscribed = subscribed
		c.emit(a.u, schema.Change{Kind: schema.ChangeMailbox, Mailbox: mb.info.ID})
	}
	return nil
}

// Subscriptions lists the subscribed names, sorted: the subscribed
// mailboxes and the names kept subscribed after their mailbox was
// deleted.
func (a *MemAccount) Subscriptions(ctx context.Context) ([]string, error) {
	a.s.mu.Lock()
	out := slices.Clone(a.u.keptSubscriptions)
	for _, mb := range a.u.mailboxes {
		if mb.info.Subscribed && !slices.Contains(out, mb.info.Name) {
			out = append(out, mb.info.Name)
		}
	}
	a.s.mu.Unlock()
	sort.Strings(out)
	return out, ctx.Err()
}
