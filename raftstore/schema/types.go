package schema

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ID is an opaque 128-bit identifier for users, domains, mailboxes, messages
// and blobs, and for requests (Command.ReqID). IDs from NewID are random,
// so they reveal nothing about what they name; request ids are made by
// NewRequestID, or derived from what a retry must reproduce.
type ID [16]byte

// NewID returns a fresh random ID.
func NewID() ID {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		// crypto/rand never fails on supported platforms; a failure means
		// the process cannot create keys or identifiers safely.
		panic(fmt.Sprintf("schema: crypto/rand: %v", err))
	}
	return id
}

// NewRequestID returns a fresh request id (Command.ReqID). The ids one
// process makes follow each other: a random half drawn once per process,
// then a counter. A shard's request table is keyed by request id, and
// every entry adds one and, once the table is full, removes the oldest:
// random ids put each entry's two changes in two random leaves of a large
// table, rewritten at commit with the branches above them, where ids in
// sequence put a commit's new ids together in one leaf and take the
// oldest from another. They say nothing of when they were made; the
// counter tells how many requests the process made before.
func NewRequestID() ID {
	requestIDs.once.Do(func() { requestIDs.prefix = NewID() })
	id := requestIDs.prefix
	binary.BigEndian.PutUint64(id[8:], requestIDs.next.Add(1))
	return id
}

// requestIDs is the state of NewRequestID: the random first half of
// every id (the second half of prefix is not used) and the counter.
var requestIDs struct {
	once   sync.Once
	prefix ID
	next   atomic.Uint64
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// String returns the hex form of id.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the hex form produced by String.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("parse id %q: %w", s, ErrInvalid)
	}
	copy(id[:], b)
	return id, nil
}

// NameKey is the keyed hash of a name (a domain, an address, a mailbox name)
// used to look it up without storing the name in the clear.
type NameKey [32]byte

// UID is an IMAP unique identifier, allocated by the shard when a message is
// added to a mailbox. UIDs in a mailbox only grow.
type UID uint32

// Special-use attributes of mailboxes (RFC 6154) created for every user.
const (
	SpecialNone    = ""
	SpecialSent    = `\Sent`
	SpecialDrafts  = `\Drafts`
	SpecialTrash   = `\Trash`
	SpecialJunk    = `\Junk`
	SpecialArchive = `\Archive`
)

// InboxName is the name of the mailbox that receives delivered mail.
const InboxName = "INBOX"

// DefaultMailboxes lists the mailboxes created for every new user, with
// their special-use attribute.
var DefaultMailboxes = []struct{ Name, SpecialUse string }{
	{InboxName, SpecialNone},
	{"Sent", SpecialSent},
	{"Drafts", SpecialDrafts},
	{"Trash", SpecialTrash},
	{"Junk", SpecialJunk},
	{"Archive", SpecialArchive},
}

// Standard message flags (RFC 3501 section 2.3.2).
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

// MailboxInfo is a mailbox as the frontends see it: decrypted name and
// attributes plus the counters kept by the shard.
type MailboxInfo struct {
	ID            ID
	Name          string
	SpecialUse    string
	Subscribed    bool
	UIDValidity   uint32
	UIDNext       UID
	Messages      uint32
	Size          uint64
	HighestModSeq uint64
}

// MessageInfo is one message of a mailbox as the frontends see it.
type MessageInfo struct {
	UID          UID
	ID           ID // per-message object id, bound into the sealed attributes
	Blob         ID // the stored message bytes, shared between copies
	Size         uint64
	ModSeq       uint64
	Flags        []string
	InternalDate time.Time
}

// HasFlag reports whether m carries flag (compared case-insensitively, as
// IMAP flags are).
func (m *MessageInfo) HasFlag(flag string) bool {
	for _, f := range m.Flags {
		if equalFold(f, flag) {
			return true
		}
	}
	return false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// MailboxSnapshot is a consistent view of a mailbox: its counters and every
// message, read at one applied Raft index.
type MailboxSnapshot struct {
	Mailbox  MailboxInfo
	Messages []MessageInfo // in UID order
	Index    uint64        // the applied index the snapshot was read at
}

// AppendResult reports where an appended or delivered message was stored.
type AppendResult struct {
	UIDValidity uint32
	UID         UID
	// RecentClaimed says the append also claimed the message as \Recent
	// for the appending session (Account.AppendClaimingRecent), and
	// RecentBefore is the mailbox's claim before it: the messages above
	// it, up to UID, are \Recent for that session.
	RecentClaimed bool
	RecentBefore  UID
}

// CopyResult reports the UIDs a COPY or MOVE assigned (RFC 4315 COPYUID).
type CopyResult struct {
	UIDValidity uint32
	Source      []UID
	Dest        []UID
}

// FlagOp says how a flag update combines with the current flags.
type FlagOp uint8

// Flag update operations.
const (
	FlagsSet FlagOp = iota
	FlagsAdd
	FlagsRemove
)

// ExpungeTarget names a message to expunge. ModSeq, when non-zero, must
// still be the message's modification sequence, so a message whose flags
// changed since the caller decided to expunge it is left alone.
type ExpungeTarget struct {
	UID    UID
	ModSeq uint64
}

// ChangeKind says what a Change reports.
type ChangeKind uint8

// Kinds of change events.
const (
	// ChangeAdded: a message was added to the mailbox.
	ChangeAdded ChangeKind = iota + 1
	// ChangeFlags: a message's flags changed.
	ChangeFlags
	// ChangeExpunged: a message was removed from the mailbox.
	ChangeExpunged
	// ChangeMailbox: a mailbox was created, deleted or renamed.
	ChangeMailbox
	// ChangeResync: events were dropped (the watcher was too slow, or the
	// state was replaced by a snapshot); reload the mailbox.
	ChangeResync
)

// Change is one event emitted after a command is applied, in Raft log
// order. Message carries the decrypted state of the message for
// ChangeAdded and ChangeFlags.
type Change struct {
	Kind    ChangeKind
	Index   uint64 // Raft log index of the command that caused it
	ReqID   ID     // request id of that command
	Mailbox ID
	UID     UID
	Message *MessageInfo
}

// Delivery is a message accepted for local recipients.
type Delivery struct {
	From       string // envelope sender; empty for a null reverse-path
	Recipients []string
	Message    []byte // the full message, trace headers included
	// Fingerprint, when set, identifies the message as the sender sent it
	// (before trace headers): a sender that retries a message whose
	// acknowledgement it never got (the node died after committing it)
	// sends the same fingerprint, and each recipient gets one copy.
	// Frontends set it only for messages with a Message-ID.
	Fingerprint []byte
	// Junk delivers to each recipient's Junk mailbox (created, with the
	// \Junk special use, if the user has none) instead of INBOX: a
	// content filter judged the message spam.
	Junk bool
}

// Quota is a user's quota (RFC 9208 STORAGE and MESSAGE) and what
// counts against it.
type Quota struct {
	// Limit is the limit in bytes, MessageLimit the limit on the number
	// of messages; 0 means unlimited.
	Limit        uint64
	MessageLimit uint64
	// Usage is the bytes of all the user's messages (a copy counts like
	// the original); Messages is their number.
	Usage    uint64
	Messages uint64
}

// AppendMessage is one message of an append of several (RFC 3502
// MULTIAPPEND).
type AppendMessage struct {
	Message []byte
	Flags   []string
	Date    time.Time
}

// AppendBatchResult reports where the messages of an append of several
// were stored, in order (RFC 4315 APPENDUID with a UID set).
type AppendBatchResult struct {
	UIDValidity uint32
	UIDs        []UID
}
