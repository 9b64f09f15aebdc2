package protocols

import (
	"context"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// MailboxDelimiter separates levels of the mailbox hierarchy.
const MailboxDelimiter = '/'

// Store is the mail store as the frontends see it. Every method that
// changes mail returns only after the change is committed on a quorum.
type Store interface {
	// Authenticate checks a login: the account password, or an app
	// password whose scope has the credentials' protocol. Unknown users,
	// wrong passwords and credentials the user's policy refuses (the
	// account password of a user with MFA, an app password out of its
	// scope) all yield schema.ErrAuthFailed.
	Authenticate(ctx context.Context, cred schema.Credentials) (Account, error)
	// LookupRecipient reports whether address is a local mailbox:
	// schema.ErrNotLocal for a domain not served here, schema.ErrNoSuchUser
	// for an unknown user of a local domain.
	LookupRecipient(ctx context.Context, address string) error
	// Deliver stores one message in the inbox of every recipient.
	Deliver(ctx context.Context, d schema.Delivery) error
}

// Backend is what a mail store implementation provides for accounts of
// concrete type A. StoreOf turns it into a Store, so an implementation
// need not import this package to satisfy it.
type Backend[A Account] interface {
	Authenticate(ctx context.Context, cred schema.Credentials) (A, error)
	LookupRecipient(ctx context.Context, address string) error
	Deliver(ctx context.Context, d schema.Delivery) error
}

// QuotaChecker is what a Store may also offer: whether a message of
// size bytes (0: unknown) still fits the mailboxes an address delivers
// to, schema.ErrOverQuota when it does not. The SMTP frontend asks at
// RCPT, so that a full mailbox is refused for its recipient only.
type QuotaChecker interface {
	CheckQuota(ctx context.Context, address string, size int64) error
}

// KnownFlagStore is what an Account may also offer: StoreFlags, or
// StoreFlagsIf when unchangedSince is set, starting from the state a
// session already holds of the messages instead of reading them first.
// The store must refuse a change decided on a state that is no longer
// the stored one and decide it again on the stored state, and must not
// skip a change because the known state already has it (that state may
// be old). IMAP sessions use it for STORE and for the \Seen flag a
// FETCH sets.
type KnownFlagStore interface {
	StoreFlagsKnown(ctx context.Context, mailbox schema.ID, known []schema.MessageInfo, op schema.FlagOp, flags []string, unchangedSince *uint64) ([]schema.MessageInfo, []schema.UID, error)
}

// StoreFlagsFrom changes the flags of messages whose state the caller
// holds (known): through the account's KnownFlagStore when it offers
// one, else by UID with StoreFlags or, when unchangedSince is set,
// StoreFlagsIf. acct may be what AuthGuard.Login returned.
func StoreFlagsFrom(ctx context.Context, acct Account, mailbox schema.ID, known []schema.MessageInfo, op schema.FlagOp, flags []string, unchangedSince *uint64) ([]schema.MessageInfo, []schema.UID, error) {
	if ga, ok := acct.(guardedAccount); ok {
		acct = ga.Account
	}
	if ks, ok := acct.(KnownFlagStore); ok {
		return ks.StoreFlagsKnown(ctx, mailbox, known, op, flags, unchangedSince)
	}
	uids := make([]schema.UID, len(known))
	for i := range known {
		uids[i] = known[i].UID
	}
	if unchangedSince != nil {
		return acct.StoreFlagsIf(ctx, mailbox, uids, op, flags, *unchangedSince)
	}
	infos, err := acct.StoreFlags(ctx, mailbox, uids, op, flags)
	return infos, nil, err
}

// StoreOf adapts a Backend to the Store interface.
func StoreOf[A Account](b Backend[A]) Store { return backendStore[A]{b} }

type backendStore[A Account] struct{ b Backend[A] }

func (s backendStore[A]) Authenticate(ctx context.Context, cred schema.Credentials) (Account, error) {
	a, err := s.b.Authenticate(ctx, cred)
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (s backendStore[A]) LookupRecipient(ctx context.Context, address string) error {
	return s.b.LookupRecipient(ctx, address)
}

func (s backendStore[A]) Deliver(ctx context.Context, d schema.Delivery) error {
	return s.b.Deliver(ctx, d)
}

// CheckQuota asks the backend, when it is a QuotaChecker; otherwise every
// message fits.
func (s backendStore[A]) CheckQuota(ctx context.Context, address string, size int64) error {
	if qc, ok := s.b.(QuotaChecker); ok {
		return qc.CheckQuota(ctx, address, size)
	}
	return nil
}

// Account is an authenticated user's mail. Mailboxes are named by their
// full hierarchical name (MailboxDelimiter between levels, INBOX matched
// case-insensitively) and, once resolved, by their ID, which survives
// renames.
type Account interface {
	// Address returns the user's canonical address.
	Address() string

	// Mailboxes lists every mailbox with its counters.
	Mailboxes(ctx context.Context) ([]schema.MailboxInfo, error)
	// Mailbox resolves one mailbox by name (schema.ErrNoSuchMailbox).
	Mailbox(ctx context.Context, name string) (schema.MailboxInfo, error)
	// CreateMailbox creates a mailbox; specialUse is "" or a
	// schema.Special* attribute.
	CreateMailbox(ctx context.Context, name, specialUse string) error
	// DeleteMailbox deletes a mailbox and its messages. INBOX cannot be
	// deleted (schema.ErrCannotDelete).
	DeleteMailbox(ctx context.Context, name string) error
	// RenameMailbox renames a mailbox and its children. Renaming INBOX
	// moves its messages to the new mailbox and leaves INBOX empty
	// (RFC 3501 section 6.3.5).
	RenameMailbox(ctx context.Context, oldName, newName string) error
	// SetSubscribed subscribes to or unsubscribes from a mailbox, or
	// unsubscribes from a name kept subscribed after its mailbox was
	// deleted.
	SetSubscribed(ctx context.Context, name string, subscribed bool) error
	// Subscriptions lists the subscribed names: the subscribed mailboxes
	// and the names that stay subscribed after their mailbox was deleted
	// (RFC 3501 section 6.3.6).
	Subscriptions(ctx context.Context) ([]string, error)

	// ClaimRecent claims a mailbox's messages up to upTo as \Recent for
	// the calling session and returns the highest UID claimed before:
	// the messages above it, up to upTo, are \Recent for this session
	// and for no other, across the cluster (RFC 3501 section 2.3.2). A
	// claim below the current one changes nothing; upTo 0 only reads.
	ClaimRecent(ctx context.Context, mailbox schema.ID, upTo schema.UID) (schema.UID, error)

	// Snapshot returns a mailbox's counters and messages at one point.
	Snapshot(ctx context.Context, mailbox schema.ID) (schema.MailboxSnapshot, error)
	// Append stores a message in a mailbox; schema.ErrOverQuota when it
	// would take the user over their storage quota.
	Append(ctx context.Context, mailbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error)
	// AppendClaimingRecent is Append for a session that has the mailbox
	// selected read-write: where the store can, the same commit claims
	// the message as \Recent for the session (ClaimRecent up to its UID)
	// and the result reports the claim before it (RecentClaimed,
	// RecentBefore), so the session's next update needs no claim of its
	// own. A result with RecentClaimed false claimed nothing.
	AppendClaimingRecent(ctx context.Context, mailbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error)
	// AppendBatch stores several messages in a mailbox atomically: all
	// or none (RFC 3502 MULTIAPPEND).
	AppendBatch(ctx context.Context, mailbox schema.ID, msgs []schema.AppendMessage) (schema.AppendBatchResult, error)
	// Quota returns the user's storage quota and usage (RFC 9208).
	Quota(ctx context.Context) (schema.Quota, error)
	// Header returns a message's header section (up to and including the
	// blank line that ends it).
	Header(ctx context.Context, blob schema.ID) ([]byte, error)
	// Body returns a whole message.
	Body(ctx context.Context, blob schema.ID) ([]byte, error)
	// SearchRecords returns the opened search records of blobs (IMAP's
	// index of a message's header and words, built when it was stored),
	// in order, nil for a blob stored without one. A method of the
	// interface, not an optional one, so that wrappers of an Account
	// (the guard's session tracking) pass it on.
	SearchRecords(ctx context.Context, blobs []schema.ID) ([][]byte, error)
	// StoreFlags changes the flags of the given messages and returns their
	// new state; UIDs that no longer exist are skipped.
	StoreFlags(ctx context.Context, mailbox schema.ID, uids []schema.UID, op schema.FlagOp, flags []string) ([]schema.MessageInfo, error)
	// StoreFlagsIf is StoreFlags for the messages whose MODSEQ is at
	// most unchangedSince when the change commits (IMAP's STORE
	// UNCHANGEDSINCE, RFC 7162); the others are left alone and returned
	// in modified, in UID order.
	StoreFlagsIf(ctx context.Context, mailbox schema.ID, uids []schema.UID, op schema.FlagOp, flags []string, unchangedSince uint64) (infos []schema.MessageInfo, modified []schema.UID, err error)
	// Copy copies messages to dest (schema.ErrOverQuota when the copies
	// do not fit the user's quota; a move never counts against it).
	Copy(ctx context.Context, mailbox schema.ID, uids []schema.UID, dest schema.ID) (schema.CopyResult, error)
	// Move moves messages to dest atomically.
	Move(ctx context.Context, mailbox schema.ID, uids []schema.UID, dest schema.ID) (schema.CopyResult, error)
	// Expunge removes messages and returns the UIDs it removed.
	Expunge(ctx context.Context, mailbox schema.ID, targets []schema.ExpungeTarget) ([]schema.UID, error)

	// LockMaildrop takes the user's exclusive POP3 maildrop lock (RFC 1939
	// section 8) for the whole cluster: schema.ErrInUse while another
	// session holds it, on any node. A lock whose holder dies expires by
	// itself. release gives it back and may be called more than once.
	LockMaildrop(ctx context.Context) (release func(), err error)
	// ConfirmMaildrop renews the maildrop lock this account took now and
	// reports whether it still holds it: schema.ErrInUse once another
	// session took it, which happens when the lock ran out while its
	// holder could not renew it (its node cut off from the others, or
	// paused); any other error when that cannot be known now. A session
	// checks it before it deletes anything.
	ConfirmMaildrop(ctx context.Context) error

	// Watch streams the changes to one mailbox, in commit order, until
	// stop is called; stop closes the channel. A schema.ChangeResync event
	// means events were lost and the mailbox must be reloaded.
	Watch(mailbox schema.ID) (changes <-chan schema.Change, stop func())
	// Refresh waits, briefly, until the account's watchers of mailbox
	// hold the changes other sessions' writes on this node committed, so
	// that what one session did shows in another at its next command;
	// with fromLeader also those committed through any node (a client
	// polling for news: IMAP NOOP and CHECK).
	Refresh(ctx context.Context, mailbox schema.ID, fromLeader bool)

	// Close releases what the account holds (cached keys, watchers).
	Close() error
}
