package protocoltest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Limits of the production store that the frontends can observe.
const (
	// maxMessageSize is the largest message the store accepts.
	maxMessageSize = 256 << 20
	// maxHeaderChunk bounds what Header returns (the production store
	// keeps the header section in one chunk of at most this size).
	maxHeaderChunk = 1 << 20
	// batchSize bounds the messages one flag or copy command changes; a
	// bigger request is split into several commands.
	batchSize = 1000
	// expungeBatch bounds the targets of one expunge command.
	expungeBatch = 100000
	// watchBuffer is how many events a watcher holds before it is told
	// to resynchronise instead.
	watchBuffer = 1024
)

// MemStore is an in-memory mail store with the semantics of the
// production one (package cluster over raftstore), for the frontends'
// tests: canonical addresses and mailbox names, the default mailboxes of
// every user, UIDVALIDITY, UID and MODSEQ allocation, flag
// canonicalisation, CRLF normalisation, the schema sentinel errors where
// the production store returns them, and change events queued on every
// watcher before the write that caused them returns.
//
// Every write is a command that takes the next value of a store-wide
// counter, which plays the role of the Raft log index: the events of a
// command carry it, and a snapshot carries the counter it was read at.
// Writes the production store makes with several commands (a mailbox
// created with its parents, a big copy) take several values here too.
//
// One mutex guards the whole store, so a MemStore is safe for concurrent
// use and every call is atomic, which the production store guarantees
// only per command. Passwords are kept as SHA-256 digests and compared in
// constant time. Nothing is persisted.
type MemStore struct {
	mu          sync.Mutex
	index       uint64 // the last command's index
	unavailable bool
	maxSize     int               // largest message accepted
	dummy       [sha256.Size]byte // compared for unknown users
	domains     map[string]bool
	users       map[string]*memUser // by canonical address
	nextWatcher int
	// indexer builds the search record of each message stored from now
	// on (SetSearchIndexer); nil stores none.
	indexer func(msg []byte) []byte
}

var (
	_ protocols.Backend[*MemAccount] = (*MemStore)(nil)
	_ protocols.Account              = (*MemAccount)(nil)
)

// memUser is one user's directory entry and mail.
type memUser struct {
	address         string
	password        [sha256.Size]byte
	lastUIDValidity uint32
	inbox           schema.ID
	mailboxes       map[schema.ID]*memMailbox
	names           map[string]schema.ID // canonical name -> mailbox
	blobs           map[schema.ID]*memBlob
	watchers        map[int]*memWatcher
	maildropLocked  bool        // the POP3 maildrop lock
	maildropHolder  *MemAccount // the account that holds it
	appPasswords    []memAppPassword
	mfa             bool   // MFA on: only app passwords log in
	quota           uint64 // storage limit in bytes, 0 for none
	messageQuota    uint64 // limit on the number of messages, 0 for none

	// keptSubscriptions are subscribed names whose mailbox was deleted.
	keptSubscriptions []string
}

// memAppPassword is an app password: its digest and the protocols it
// logs in with.
type memAppPassword struct {
	password [sha256.Size]byte
	scope    []string
}

// memMailbox is a mailbox: its counters and messages.
type memMailbox struct {
	info  schema.MailboxInfo    // Messages, Size and the UID and MODSEQ counters kept current
	inbox bool                  // the user's INBOX (receives deliveries, cannot be deleted)
	msgs  []*schema.MessageInfo // in UID order

	// recent is the highest UID a session has claimed as \Recent.
	recent schema.UID
}

// memBlob is a stored message, shared by its copies.
type memBlob struct {
	data   []byte
	refs   int
	record []byte // search record, nil for none
}

// NewMemStore returns an empty store: no domains, no users.
func NewMemStore() *MemStore {
	s := &MemStore{maxSize: maxMessageSize, domains: map[string]bool{}, users: map[string]*memUser{}}
	if _, err := rand.Read(s.dummy[:]); err != nil {
		panic(fmt.Sprintf("protocoltest: crypto/rand: %v", err))
	}
	return s
}

// SetUnavailable makes every later write fail with schema.ErrUnavailable
// (as when the store cannot reach a quorum) until it is called with
// false. Reads keep working.
func (s *MemStore) SetUnavailable(unavailable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unavailable = unavailable
}

// command is one write in the role of a Raft log entry.
type command struct {
	index uint64
	reqID schema.ID
}

// begin starts a command, taking the next index; s.mu must be held. It
// fails when the store is unavailable or ctx is done, as a proposal
// would.
func (s *MemStore) begin(ctx context.Context, op string) (*command, error) {
	if s.unavailable {
		return nil, fmt.Errorf("apply %s: %w", op, schema.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apply %s: %w", op, err)
	}
	s.index++
	return &command{index: s.index, reqID: schema.NewID()}, nil
}

// emit queues a change on every watcher of u that watches its mailbox;
// the store's mutex must be held, which keeps commit order.
func (c *command) emit(u *memUser, ch schema.Change) {
	ch.Index, ch.ReqID = c.index, c.reqID
	for _, w := range u.watchers {
		if ch.Kind != schema.ChangeResync && ch.Mailbox != w.mbox {
			continue
		}
		e := ch
		if ch.Message != nil {
			e.Message = cloneMessage(ch.Message)
		}
		w.push(e)
	}
}

// AddDomain starts serving a domain (schema.ErrDomainExists if it is
// served already).
func (s *MemStore) AddDomain(ctx context.Context, name string) error {
	d, err := schema.CanonicalDomain(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.begin(ctx, "put domain"); err != nil {
		return fmt.Errorf("add domain %s: %w", d, err)
	}
	if s.domains[d] {
		return fmt.Errorf("add domain %s: %w", d, schema.ErrDomainExists)
	}
	s.domains[d] = true
	return nil
}

// AddUser creates an account in a served domain with the default
// mailboxes (schema.DefaultMailboxes, all subscribed).
func (s *MemStore) AddUser(ctx context.Context, address, password string) error {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	if err := schema.ValidatePassword(password); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.domains[domain] {
		return fmt.Errorf("add user: domain %s: %w", domain, schema.ErrNoSuchDomain)
	}
	if s.users[addr] != nil {
		return fmt.Errorf("add user: %w", schema.ErrUserExists)
	}
	if _, err := s.begin(ctx, "init user"); err != nil {
		return fmt.Errorf("add user: create mailboxes: %w", err)
	}
	u := &memUser{
		address: addr, password: sha256.Sum256([]byte(password)),
		mailboxes: map[schema.ID]*memMailbox{}, names: map[string]schema.ID{},
		blobs: map[schema.ID]*memBlob{}, watchers: map[int]*memWatcher{},
	}
	for _, m := range schema.DefaultMailboxes {
		mb := u.addMailbox(m.Name, m.SpecialUse, true)
		if m.Name == schema.InboxName {
			mb.inbox = true
			u.inbox = mb.info.ID
		}
	}
	s.users[addr] = u
	return nil
}

// AddAppPassword gives a user an app password for the protocols of scope
// (nil for all). Unlike the production store, which generates app
// passwords, it takes the one a test chooses.
func (s *MemStore) AddAppPassword(address, password string, scope []string) error {
	scope, err := schema.CanonicalScope(scope)
	if err != nil {
		return err
	}
	return s.changeUser(address, "add app password", func(u *memUser) {
		u.appPasswords = append(u.appPasswords, memAppPassword{password: sha256.Sum256([]byte(password)), scope: scope})
	})
}

// SetMFA switches a user's MFA on or off: while it is on, only the
// user's app passwords log in, as in the production store.
func (s *MemStore) SetMFA(address string, on bool) error {
	return s.changeUser(address, "set MFA", func(u *memUser) { u.mfa = on })
}

// TakeMaildropLock gives a user's POP3 maildrop lock to another session
// than the one holding it, as happens when a holder's lock ran out while
// its node was cut off and another session took it: the maildrop stays
// locked, and the former holder's ConfirmMaildrop says schema.ErrInUse.
func (s *MemStore) TakeMaildropLock(address string) error {
	return s.changeUser(address, "take maildrop lock", func(u *memUser) {
		u.maildropLocked, u.maildropHolder = true, nil
	})
}

// changeUser runs change on the user of address under the store's lock;
// what names the change in the error for an unknown user.
func (s *MemStore) changeUser(address, what string, change func(*memUser)) error {
	addr, _, err := schema.CanonicalAddress(address)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[addr]
	if u == nil {
		return fmt.Errorf("%s: %w", what, schema.ErrNoSuchUser)
	}
	change(u)
	return nil
}

// Authenticate checks a login: the account password (unless the user has
// MFA on or cred.OnlyAppPassword is set) or an app password whose scope
// has cred.Protocol. Unknown users, malformed names, wrong passwords and
// refused credentials all give schema.ErrAuthFailed.
func (s *MemStore) Authenticate(ctx context.Context, cred schema.Credentials) (*MemAccount, error) {
	sum := sha256.Sum256([]byte(cred.Password))
	addr, _, err := schema.CanonicalAddress(cred.Username)
	s.mu.Lock()
	var u *memUser
	if err == nil {
		u = s.users[addr]
	}
	match := false
	if u == nil {
		subtle.ConstantTimeCompare(sum[:], s.dummy[:])
	} else {
		if !cred.OnlyAppPassword && !u.mfa && subtle.ConstantTimeCompare(sum[:], u.password[:]) == 1 {
			match = true
		}
		for _, ap := range u.appPasswords {
			if subtle.ConstantTimeCompare(sum[:], ap.password[:]) == 1 && schema.ScopeAllows(ap.scope, cred.Protocol) {
				match = true
			}
		}
	}
	s.mu.Unlock()
	if !match {
		return nil, schema.ErrAuthFailed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return &MemAccount{s: s, u: u}, nil
}

// LookupRecipient reports whether address is a local mailbox:
// schema.ErrNotLocal for a domain not served here, schema.ErrNoSuchUser
// for an unknown user of a served domain. An address with a "+detail"
// suffix reaches the base address when no account has the full one.
func (s *MemStore) LookupRecipient(ctx context.Context, address string) error {
	s.mu.Lock()
	_, err := s.resolveRecipient(address)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return ctx.Err()
}

// resolveRecipient finds the user mail to address goes to; s.mu must be
// held.
func (s *MemStore) resolveRecipient(address string) (*memUser, error) {
	addr, domain, err := schema.CanonicalAddress(address)
	if err != nil {
		return nil, err
	}
	if !s.domains[domain] {
		return nil, fmt.Errorf("recipient domain: %w", schema.ErrNotLocal)
	}
	if u := s.users[addr]; u != nil {
		return u, nil
	}
	local := addr[:strings.LastIndexByte(addr, '@')]
	if plus := strings.IndexByte(local, '+'); plus > 0 {
		if u := s.users[local[:plus]+"@"+domain]; u != nil {
			return u, nil
		}
	}
	return nil, fmt.Errorf("recipient: %w", schema.ErrNoSuchUser)
}

// Deliver stores a message in the inbox of every recipient (in the Junk
// mailbox for d.Junk, created if missing), one copy per user whatever
// aliases name it. It delivers to the recipients it can and
// returns the failures of the others joined.
func (s *MemStore) Deliver(ctx context.Context, d schema.Delivery) error {
	if len(d.Recipients) == 0 {
		return fmt.Errorf("deliver: no recipients: %w", schema.ErrInvalid)
	}
	msg := schema.NormalizeCRLF(d.Message)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[*memUser]bool{}
	var errs []error
	stored := 0
	for _, rcpt := range d.Recipients {
		u, err := s.resolveRecipient(rcpt)
		if err != nil {
			errs = append(errs, fmt.Errorf("deliver to recipient %d: %w", len(errs)+1, err))
			continue
		}
		if seen[u] {
			continue
		}
		seen[u] = true
		var mbox schema.ID // INBOX
		if d.Junk {
			mbox = s.junkMailbox(u)
		}
		if _, err := s.storeMessage(ctx, u, mbox, msg, nil, now); err != nil {
			errs = append(errs, fmt.Errorf("deliver: %w", err))
			continue
		}
		stored++
	}
	if stored > 0 && len(errs) > 0 {
		// As the cluster's store marks it.
		return fmt.Errorf("%w: %w", schema.ErrPartlyDelivered, errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// junkMailbox returns u's mailbox for spam, as the cluster's store picks
// it: the \Junk special use, else the name Junk, else a new one; s.mu must
// be held.
func (s *MemStore) junkMailbox(u *memUser) schema.ID {
	var named schema.ID
	for _, mb := range u.mailboxes {
		if mb.info.SpecialUse == schema.SpecialJunk {
			return mb.info.ID
		}
		if strings.EqualFold(mb.info.Name, "Junk") {
			named = mb.info.ID
		}
	}
	if !named.IsZero() {
		return named
	}
	return u.addMailbox("Junk", schema.SpecialJunk, false).info.ID
}

// storeMessage commits msg to a mailbox of u (its inbox when mbox is
// zero); s.mu must be held.
func (s *MemStore) storeMessage(ctx context.Context, u *memUser, mbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error) {
	msg = schema.NormalizeCRLF(msg)
	if len(msg) > s.maxSize {
		return schema.AppendResult{}, fmt.Errorf("message of %d bytes: %w", len(msg), schema.ErrTooLarge)
	}
	if date.IsZero() {
		date = time.Now()
	}
	c, err := s.begin(ctx, "append")
	if err != nil {
		return schema.AppendResult{}, fmt.Errorf("append: %w", err)
	}
	if mbox.IsZero() {
		mbox = u.inbox
	}
	mb := u.mailboxes[mbox]
	if mb == nil {
		return schema.AppendResult{}, fmt.Errorf("append: %w", schema.ErrNoSuchMailbox)
	}
	if mb.info.UIDNext == math.MaxUint32 {
		return schema.AppendResult{}, fmt.Errorf("append: mailbox out of UIDs: %w", schema.ErrInvalid)
	}
	if err := u.fits(uint64(len(msg)), 1); err != nil {
		return schema.AppendResult{}, fmt.Errorf("append: %w", err)
	}
	blob := schema.NewID()
	u.blobs[blob] = &memBlob{data: bytes.Clone(msg), refs: 1}
	if s.indexer != nil {
		u.blobs[blob].record = s.indexer(msg)
	}
	m := &schema.MessageInfo{
		ID: schema.NewID(), Blob: blob, Size: uint64(len(msg)), Flags: storedFlags(flags),
		// Production keeps the date as Unix nanoseconds and reads it
		// back in the local zone.
		InternalDate: time.Unix(0, date.UnixNano()),
	}
	mb.add(m)
	c.emit(u, schema.Change{Kind: schema.ChangeAdded, Mailbox: mbox, UID: m.UID, Message: m})
	return schema.AppendResult{UIDValidity: mb.info.UIDValidity, UID: m.UID}, nil
}

// nextUIDValidity returns a UIDVALIDITY greater than any the user had,
// derived from the clock so values also differ across users.
func (u *memUser) nextUIDValidity() uint32 {
	v := uint32(min(time.Now().Unix(), math.MaxUint32-1))
	if v <= u.lastUIDValidity {
		v = u.lastUIDValidity + 1
	}
	if v == 0 {
		v = 1
	}
	u.lastUIDValidity = v
	return v
}

// addMailbox creates a mailbox record under a name that is free.
func (u *memUser) addMailbox(name, specialUse string, subscribed bool) *memMailbox {
	mb := &memMailbox{info: schema.MailboxInfo{
		ID: schema.NewID(), Name: name, SpecialUse: specialUse, Subscribed: subscribed,
		UIDValidity: u.nextUIDValidity(), UIDNext: 1, HighestModSeq: 1,
	}}
	u.mailboxes[mb.info.ID] = mb
	u.names[name] = mb.info.ID
	return mb
}

// byName returns the mailbox with a canonical name, or nil.
func (u *memUser) byName(name string) *memMailbox {
	id, ok := u.names[name]
	if !ok {
		return nil
	}
	return u.mailboxes[id]
}

// releaseBlob drops one reference and the blob with the last one.
func (u *memUser) releaseBlob(id schema.ID) {
	b := u.blobs[id]
	if b == nil {
		return
	}
	if b.refs--; b.refs <= 0 {
		delete(u.blobs, id)
	}
}

// find returns the position of uid in mb.msgs and whether it is there.
func (mb *memMailbox) find(uid schema.UID) (int, bool) {
	return slices.BinarySearchFunc(mb.msgs, uid, func(m *schema.MessageInfo, uid schema.UID) int {
		switch {
		case m.UID < uid:
			return -1
		case m.UID > uid:
			return 1
		}
		return 0
	})
}

// message returns the message with uid, or nil.
func (mb *memMailbox) message(uid schema.UID) *schema.MessageInfo {
	if i, ok := mb.find(uid); ok {
		return mb.msgs[i]
	}
	return nil
}

// add gives m the next UID and MODSEQ and adds it.
func (mb *memMailbox) add(m *schema.MessageInfo) {
	m.UID = mb.info.UIDNext
	mb.info.UIDNext++
	mb.info.HighestModSeq++
	m.ModSeq = mb.info.HighestModSeq
	mb.info.Messages++
	mb.info.Size += m.Size
	mb.msgs = append(mb.msgs, m)
}

// remove takes the message with uid out of the mailbox, counting a
// MODSEQ, and returns it (nil if there is none).
func (mb *memMailbox) remove(uid schema.UID) *schema.MessageInfo {
	i, ok := mb.find(uid)
	if !ok {
		return nil
	}
	m := mb.msgs[i]
	mb.msgs = slices.Delete(mb.msgs, i, i+1)
	mb.info.Messages--
	mb.info.Size -= m.Size
	mb.info.HighestModSeq++
	return m
}

func cloneMessage(m *schema.MessageInfo) *schema.MessageInfo {
	c := *m
	c.Flags = storedFlags(m.Flags)
	return &c
}

// CheckConsistency verifies the store's invariants: names and mailboxes
// agree, every user has one INBOX, UIDs grow and stay below UIDNEXT,
// MODSEQs stay at or below HIGHESTMODSEQ, counters match the messages,
// and every blob is referenced exactly by its reference count.
func (s *MemStore) CheckConsistency() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	bad := func(u *memUser, format string, args ...any) {
		errs = append(errs, fmt.Errorf("user %s: %s", u.address, fmt.Sprintf(format, args...)))
	}
	for addr, u := range s.users {
		if addr != u.address {
			bad(u, "listed as %s", addr)
		}
		if len(u.names) != len(u.mailboxes) {
			bad(u, "%d names for %d mailboxes", len(u.names), len(u.mailboxes))
		}
		inbox := u.mailboxes[u.inbox]
		if inbox == nil || !inbox.inbox || inbox.info.Name != schema.InboxName {
			bad(u, "no INBOX")
		}
		refs := map[schema.ID]int{}
		validities := map[uint32]bool{}
		for id, mb := range u.mailboxes {
			name := mb.info.Name
			if id != mb.info.ID || u.names[name] != id {
				bad(u, "mailbox %q is not found by its name or id", name)
			}
			if mb.inbox != (id == u.inbox) {
				bad(u, "mailbox %q: inbox mark", name)
			}
			if validities[mb.info.UIDValidity] || mb.info.UIDValidity == 0 || mb.info.UIDValidity > u.lastUIDValidity {
				bad(u, "mailbox %q: UIDVALIDITY %d", name, mb.info.UIDValidity)
			}
			validities[mb.info.UIDValidity] = true
			var size uint64
			for i, m := range mb.msgs {
				if m.UID == 0 || m.UID >= mb.info.UIDNext || (i > 0 && m.UID <= mb.msgs[i-1].UID) {
					bad(u, "mailbox %q: UID %d out of order or at or above UIDNEXT %d", name, m.UID, mb.info.UIDNext)
				}
				if m.ModSeq == 0 || m.ModSeq > mb.info.HighestModSeq {
					bad(u, "mailbox %q: UID %d has MODSEQ %d above %d", name, m.UID, m.ModSeq, mb.info.HighestModSeq)
				}
				if b := u.blobs[m.Blob]; b == nil || uint64(len(b.data)) != m.Size {
					bad(u, "mailbox %q: UID %d has no blob of its size", name, m.UID)
				}
				size += m.Size
				refs[m.Blob]++
			}
			if int(mb.info.Messages) != len(mb.msgs) || mb.info.Size != size {
				bad(u, "mailbox %q: counts %d messages of %d bytes, holds %d of %d", name, mb.info.Messages, mb.info.Size, len(mb.msgs), size)
			}
		}
		for id, b := range u.blobs {
			if b.refs != refs[id] {
				bad(u, "blob %s: %d references counted, %d found", id, b.refs, refs[id])
			}
		}
	}
	return errors.Join(errs...)
}
