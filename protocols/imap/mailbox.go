package imap

import (
	"errors"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Limits on flags accepted from clients.
const (
	maxFlagsPerCmd = 64
	maxFlagLen     = 128
)

// useAttrCode is RFC 6154's response code for an unsupported special use.
const useAttrCode imap.ResponseCode = "USEATTR"

func noError(code imap.ResponseCode, text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
}

func badError(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: text}
}

// checkMailboxName answers a name the store's grammar refuses
// (schema.CheckMailboxName) with NO [CANNOT], or NO [LIMIT] for a name
// too long or too deep.
func checkMailboxName(name string) error {
	var bad *schema.MailboxNameError
	if err := schema.CheckMailboxName(name); errors.As(err, &bad) {
		code := imap.ResponseCodeCannot
		if bad.Limit {
			code = imap.ResponseCodeLimit
		}
		return noError(code, "Mailbox name "+bad.Reason)
	} else if err != nil {
		return err
	}
	return nil
}

// specialUse maps CREATE's USE list onto the store's single attribute.
func specialUse(attrs []imap.MailboxAttr) (string, error) {
	if len(attrs) == 0 {
		return schema.SpecialNone, nil
	}
	if len(attrs) > 1 {
		return "", noError(useAttrCode, "Only one special-use attribute per mailbox")
	}
	for _, known := range []string{schema.SpecialSent, schema.SpecialDrafts, schema.SpecialTrash, schema.SpecialJunk, schema.SpecialArchive} {
		if strings.EqualFold(string(attrs[0]), known) {
			return known, nil
		}
	}
	return "", noError(useAttrCode, "Unsupported special-use attribute")
}

// specialUseAttrs is the LIST attribute list for a special use.
func specialUseAttrs(use string) []imap.MailboxAttr {
	if use == "" {
		return nil
	}
	return []imap.MailboxAttr{imap.MailboxAttr(use)}
}

// Create creates a mailbox and any missing parents. A trailing delimiter
// only declares the intent to create children (RFC 3501 section 6.3.3).
func (s *session) Create(name string, options *imap.CreateOptions) error {
	acct, err := s.account()
	if err != nil {
		return err
	}
	name = normalizeInbox(strings.TrimSuffix(name, delim))
	if err := checkMailboxName(name); err != nil {
		return err
	}
	if name == schema.InboxName {
		return noError(imap.ResponseCodeAlreadyExists, "INBOX always exists")
	}
	var use string
	if options != nil {
		if use, err = specialUse(options.SpecialUse); err != nil {
			return err
		}
	}
	// The store creates missing parents (RFC 3501 section 6.3.3).
	ctx, cancel := s.opContext()
	defer cancel()
	return s.storeError("create", acct.CreateMailbox(ctx, name, use))
}

// Delete deletes a mailbox; INBOX cannot be deleted.
func (s *session) Delete(name string) error {
	acct, err := s.account()
	if err != nil {
		return err
	}
	name = normalizeInbox(name)
	if name == schema.InboxName {
		return noError(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	}
	ctx, cancel := s.opContext()
	defer cancel()
	return s.storeError("delete", acct.DeleteMailbox(ctx, name))
}

// Rename renames a mailbox with its children; renaming INBOX moves its
// messages (handled by the store).
func (s *session) Rename(oldName, newName string, _ *imap.RenameOptions) error {
	acct, err := s.account()
	if err != nil {
		return err
	}
	oldName = normalizeInbox(oldName)
	newName = normalizeInbox(strings.TrimSuffix(newName, delim))
	if err := checkMailboxName(newName); err != nil {
		return err
	}
	if newName == schema.InboxName {
		return noError(imap.ResponseCodeAlreadyExists, "INBOX always exists")
	}
	if oldName == newName {
		return noError(imap.ResponseCodeAlreadyExists, "Source and destination are the same mailbox")
	}
	if strings.HasPrefix(newName, oldName+delim) {
		return noError(imap.ResponseCodeCannot, "Cannot rename a mailbox into itself")
	}
	ctx, cancel := s.opContext()
	defer cancel()
	return s.storeError("rename", acct.RenameMailbox(ctx, oldName, newName))
}

// Subscribe adds a mailbox to the subscription list.
func (s *session) Subscribe(name string) error { return s.setSubscribed(name, true) }

// Unsubscribe removes a mailbox from the subscription list.
func (s *session) Unsubscribe(name string) error { return s.setSubscribed(name, false) }

func (s *session) setSubscribed(name string, on bool) error {
	acct, err := s.account()
	if err != nil {
		return err
	}
	ctx, cancel := s.opContext()
	defer cancel()
	return s.storeError("subscribe", acct.SetSubscribed(ctx, normalizeInbox(name), on))
}

// Status reports a mailbox's counters. Counting unseen, deleted or recent
// messages needs the messages, so only those items read a snapshot.
func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	acct, err := s.account()
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext()
	defer cancel()
	mbox, err := acct.Mailbox(ctx, normalizeInbox(name))
	if err != nil {
		return nil, s.storeError("status", err)
	}
	data, err := s.statusData(mbox, options)
	if err != nil {
		return nil, err
	}
	// Echo the name as the client sent it: clients match the response to
	// their command by name.
	data.Mailbox = name
	return data, nil
}

func (s *session) statusData(mbox schema.MailboxInfo, options *imap.StatusOptions) (*imap.StatusData, error) {
	data := &imap.StatusData{
		Mailbox:     mbox.Name,
		UIDNext:     imap.UID(mbox.UIDNext),
		UIDValidity: mbox.UIDValidity,
		// HIGHESTMODSEQ (RFC 7162) is answered by the front, which
		// reads it here.
		HighestModSeq: mbox.HighestModSeq,
	}
	// The library's encoder dereferences every requested item, so fill
	// all of them.
	num := mbox.Messages
	size := int64(mbox.Size)
	var recent, unseen, deleted uint32
	var deletedSize int64
	limit := s.srv.appendLimit()
	if options.NumUnseen || options.NumDeleted || options.DeletedStorage || options.NumRecent {
		ctx, cancel := s.opContext()
		snap, err := s.acct.Snapshot(ctx, mbox.ID)
		var claimed schema.UID
		if err == nil && options.NumRecent {
			// \Recent for a session that selects the mailbox next: the
			// messages no session has claimed yet.
			claimed, err = s.acct.ClaimRecent(ctx, mbox.ID, 0)
		}
		cancel()
		if err != nil {
			return nil, s.storeError("status", err)
		}
		if v := s.view; options.NumRecent && v != nil && v.id == mbox.ID {
			// Those this session claimed are \Recent in it.
			recent = v.numRecent()
		}
		num = uint32(len(snap.Messages))
		data.UIDNext = imap.UID(snap.Mailbox.UIDNext)
		data.UIDValidity = snap.Mailbox.UIDValidity
		data.HighestModSeq = snap.Mailbox.HighestModSeq
		size = int64(snap.Mailbox.Size)
		for i := range snap.Messages {
			m := &snap.Messages[i]
			if options.NumRecent && m.UID > claimed {
				recent++
			}
			if !m.HasFlag(schema.FlagSeen) {
				unseen++
			}
			if m.HasFlag(schema.FlagDeleted) {
				deleted++
				deletedSize += int64(m.Size)
			}
		}
	}
	data.NumMessages = &num
	data.NumRecent = &recent
	data.NumUnseen = &unseen
	data.NumDeleted = &deleted
	data.Size = &size
	data.AppendLimit = &limit
	data.DeletedStorage = &deletedSize
	return data, nil
}

// listEntry is one name in the mailbox hierarchy: an existing mailbox, a
// missing parent of one, or (for the SUBSCRIBED selection) a subscribed
// name without a mailbox.
type listEntry struct {
	name       string
	info       *schema.MailboxInfo // nil when no mailbox has the name
	children   bool                // some mailbox (or subscribed name) is below it
	subscribed bool
	// hiddenSubscribed: a subscribed name below it matches no pattern,
	// so only this entry can tell the client of it (RFC 3501 section
	// 6.3.9, RFC 5258 section 3.5).
	hiddenSubscribed bool
}

// List answers LIST and LSUB, with the LIST-EXTENDED selection and return
// options, LIST-STATUS, SPECIAL-USE and CHILDREN attributes.
//
// The library hands LSUB over as LIST (SUBSCRIBED), and the two cannot be
// told apart here. Both get LSUB's answer where they differ: a name that
// is not subscribed but has subscribed names below it that the patterns
// miss is returned with \Noselect (RFC 3501 section 6.3.9), where RFC
// 5258 would leave it out of LIST (SUBSCRIBED) without RECURSIVEMATCH.
// With RECURSIVEMATCH it is returned with CHILDINFO ("SUBSCRIBED"), as RFC
// 5258 asks.
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	acct, err := s.account()
	if err != nil {
		return err
	}
	if len(patterns) == 0 {
		// An empty pattern asks for the delimiter and the root.
		return w.WriteList(&imap.ListData{
			Attrs:   []imap.MailboxAttr{imap.MailboxAttrNoSelect},
			Delim:   protocols.MailboxDelimiter,
			Mailbox: listRoot(ref),
		})
	}
	if len(patterns) > maxListPatterns {
		return noError(imap.ResponseCodeLimit, "Too many patterns")
	}
	if len(ref) > maxListPatternLen {
		return noError(imap.ResponseCodeLimit, "Reference too long")
	}
	for _, p := range patterns {
		if len(p) > maxListPatternLen {
			return noError(imap.ResponseCodeLimit, "Pattern too long")
		}
	}
	if options == nil {
		options = &imap.ListOptions{}
	}

	ctx, cancel := s.opContext()
	boxes, err := acct.Mailboxes(ctx)
	var subs []string
	if err == nil && (options.SelectSubscribed || options.ReturnSubscribed) {
		subs, err = acct.Subscriptions(ctx)
	}
	cancel()
	if err != nil {
		return s.storeError("list", err)
	}
	matches := func(name string) bool {
		for _, p := range patterns {
			if listMatch(name, ref, p) {
				return true
			}
		}
		return false
	}
	entries := make(map[string]*listEntry, len(boxes))
	get := func(name string) *listEntry {
		e := entries[name]
		if e == nil {
			e = &listEntry{name: name}
			entries[name] = e
		}
		return e
	}
	addParents := func(name string, visit func(*listEntry)) {
		for parent := name; ; {
			cut := strings.LastIndex(parent, delim)
			if cut <= 0 {
				return
			}
			parent = parent[:cut]
			visit(get(parent))
		}
	}
	for i := range boxes {
		b := &boxes[i]
		get(b.Name).info = b
		addParents(b.Name, func(p *listEntry) { p.children = true })
	}
	for _, name := range subs {
		if _, ok := entries[name]; !ok && !options.SelectSubscribed {
			continue // only LIST (SUBSCRIBED) lists names without a mailbox
		}
		get(name).subscribed = true
		hidden := !matches(name)
		addParents(name, func(p *listEntry) {
			p.children = true
			if hidden {
				p.hiddenSubscribed = true
			}
		})
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		if (a == schema.InboxName) != (b == schema.InboxName) {
			return a == schema.InboxName
		}
		return a < b
	})

	for _, name := range names {
		if !matches(name) {
			continue
		}
		data, ok, err := s.listData(entries[name], options)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// listData builds the LIST response for one matched entry, or reports
// that the selection options exclude it.
func (s *session) listData(e *listEntry, options *imap.ListOptions) (*imap.ListData, bool, error) {
	exists := e.info != nil
	data := &imap.ListData{Mailbox: e.name, Delim: protocols.MailboxDelimiter}
	switch {
	case options.SelectSubscribed:
		switch {
		case e.subscribed && !exists:
			// RFC 5258 section 3: a subscribed name whose mailbox is
			// gone (\NonExistent implies \Noselect).
			data.Attrs = append(data.Attrs, imap.MailboxAttrNonExistent)
		case e.subscribed:
		case !e.hiddenSubscribed:
			return nil, false, nil
		case options.SelectRecursiveMatch:
			if !exists {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNonExistent)
			}
		default:
			// LSUB's parent of subscribed names the pattern misses.
			data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
		}
		if e.hiddenSubscribed && options.SelectRecursiveMatch {
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
	case options.SelectSpecialUse:
		if !exists || e.info.SpecialUse == "" {
			return nil, false, nil
		}
		fallthrough
	default:
		if !exists {
			// A missing parent of existing mailboxes.
			data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
		}
	}
	if e.children {
		data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
	} else {
		data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
	}
	if e.subscribed && (options.ReturnSubscribed || options.SelectSubscribed) {
		data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
	}
	if exists {
		data.Attrs = append(data.Attrs, specialUseAttrs(e.info.SpecialUse)...)
		if options.ReturnStatus != nil {
			status, err := s.statusData(*e.info, options.ReturnStatus)
			if err != nil {
				return nil, false, err
			}
			data.Status = status
			if s.front != nil && s.cmdExt().listHighestModSeq {
				// HIGHESTMODSEQ, which the library cannot write,
				// goes in through the front (condstore.go).
				s.front.statusWritten(status.HighestModSeq)
			}
		}
	}
	return data, true, nil
}

// storeFlags validates and normalises flags from STORE or APPEND: system
// flags get their canonical case, \Recent is dropped (RFC 3501: it cannot
// be set by a client), unknown system flags are refused, and the number
// and length of flags are bounded.
func storeFlags(flags []imap.Flag) ([]string, error) {
	if len(flags) > maxFlagsPerCmd {
		return nil, noError(imap.ResponseCodeLimit, "Too many flags")
	}
	system := []string{schema.FlagSeen, schema.FlagAnswered, schema.FlagFlagged, schema.FlagDeleted, schema.FlagDraft}
	seen := make(map[string]bool, len(flags))
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		s := string(f)
		if len(s) > maxFlagLen {
			return nil, noError(imap.ResponseCodeLimit, "Flag too long")
		}
		if strings.HasPrefix(s, `\`) {
			if strings.EqualFold(s, `\Recent`) {
				continue
			}
			known := false
			for _, sf := range system {
				if strings.EqualFold(s, sf) {
					s, known = sf, true
					break
				}
			}
			if !known {
				return nil, badError("Unknown system flag")
			}
		}
		if key := strings.ToLower(s); !seen[key] {
			seen[key] = true
			out = append(out, s)
		}
	}
	return out, nil
}

// appendTarget resolves the mailbox an APPEND names. INBOX keeps its ID
// for the account's life (it is never deleted, and RENAME moves its
// messages out, not the mailbox), so with INBOX selected its ID comes
// from the view, without a read on the shard's leader.
func (s *session) appendTarget(acct protocols.Account, name string) (schema.MailboxInfo, error) {
	if v := s.view; name == schema.InboxName && v != nil && !v.gone && v.name == schema.InboxName {
		return schema.MailboxInfo{ID: v.id, Name: v.name}, nil
	}
	ctx, cancel := s.opContext()
	defer cancel()
	return acct.Mailbox(ctx, name)
}

// Append stores a message in a mailbox. The literal is read whole (it is
// bounded by the APPENDLIMIT the library enforces) before the store call,
// and APPENDUID is returned once the store has committed it.
func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	acct, err := s.account()
	if err != nil {
		return nil, err
	}
	size := r.Size()
	if size > int64(s.srv.appendLimit()) {
		return nil, noError(imap.ResponseCodeTooBig, "Message too large")
	}
	if size == 0 {
		return nil, noError(imap.ResponseCodeCannot, "Empty message")
	}
	var flags []string
	date := time.Now()
	if options != nil {
		if flags, err = storeFlags(options.Flags); err != nil {
			return nil, err
		}
		if !options.Time.IsZero() {
			date = options.Time
		}
	}
	mbox, err := s.appendTarget(acct, normalizeInbox(name))
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		return nil, noError(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if err != nil {
		return nil, s.storeError("append", err)
	}
	msg := make([]byte, size)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext()
	defer cancel()
	// Into the mailbox this session has selected read-write, the commit
	// also claims the message as \Recent here: the EXISTS that follows
	// needs no claim of its own.
	v := s.view
	claim := v != nil && v.id == mbox.ID && !v.readOnly && !v.gone
	var res schema.AppendResult
	if claim {
		res, err = acct.AppendClaimingRecent(ctx, mbox.ID, msg, flags, date)
	} else {
		res, err = acct.Append(ctx, mbox.ID, msg, flags, date)
	}
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		return nil, noError(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if err != nil {
		return nil, s.storeError("append", err)
	}
	if claim && res.RecentClaimed {
		v.noteOwnClaim(res.RecentBefore, res.UID)
	}
	return &imap.AppendData{UID: imap.UID(res.UID), UIDValidity: res.UIDValidity}, nil
}
