package imap

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// viewMsg is one message of the selected mailbox as one session sees it.
type viewMsg struct {
	info     schema.MessageInfo // latest known state
	told     []string           // the flags the client was last told
	dirty    bool               // info.Flags differ from told: FETCH FLAGS pending
	expunged bool               // gone from the store, EXPUNGE not sent yet
	recent   bool               // \Recent in this session (RFC 3501 section 2.3.2)
}

// view is a session's picture of its selected mailbox. Sequence numbers
// are positions in msgs; they change only when this session writes
// EXPUNGE responses, never behind the client's back.
type view struct {
	acct        protocols.Account
	id          schema.ID
	name        string
	uidValidity uint32
	uidNext     schema.UID // as of the snapshot the view was opened from
	// highestModSeq is the mailbox's HIGHESTMODSEQ as of that snapshot.
	highestModSeq uint64
	readOnly      bool
	// notes, if set, is told of each FETCH and EXPUNGE response the
	// view has written, for CONDSTORE and QRESYNC (condstore.go).
	notes viewNotes
	// hideRecent leaves \Recent out of FETCH FLAGS: the session speaks
	// IMAP4rev2, which has no \Recent (RFC 9051 appendix E).
	hideRecent bool

	msgs  []*viewMsg // announced messages, in sequence (= UID) order
	fresh []*viewMsg // added in the store, not announced yet (EXISTS pending)
	byUID map[schema.UID]*viewMsg

	changes <-chan schema.Change
	stop    func()
	index   uint64 // changes at or below this Raft index are in the view
	resync  bool   // reload from a snapshot at the next flush
	gone    bool   // the mailbox was deleted

	searchRes []schema.UID // the saved SEARCH result (RFC 5182)

	// ownClaims are the \Recent claims this session made in the commits
	// of its own APPENDs to the mailbox (noteOwnClaim), in UID order, kept
	// until their messages are announced: those messages need no claim.
	ownClaims []recentClaim

	// keywords are the keywords the client has been told in the mailbox's
	// FLAGS (RFC 3501 section 7.2.6), by lower-case name; newKeywords
	// those seen on messages since, not told yet. A keyword goes out in
	// FLAGS before any FETCH shows it, so FETCH responses written where
	// FLAGS cannot be leave new keywords out until the next flush.
	keywords    map[string]string
	newKeywords map[string]string
}

// openView starts watching a mailbox and loads it. Watching starts
// before the snapshot is read, so no change falls between the two; the
// changes already in the snapshot are recognised by their Raft index. A
// read-write view claims the mailbox's messages as \Recent; a read-only
// one only learns which are (RFC 3501 section 6.3.2: EXAMINE never takes
// \Recent away).
func openView(ctx context.Context, acct protocols.Account, mbox schema.MailboxInfo, readOnly bool) (*view, error) {
	changes, stop := acct.Watch(mbox.ID)
	snap, err := acct.Snapshot(ctx, mbox.ID)
	if err != nil {
		stop()
		return nil, err
	}
	v := &view{
		acct:          acct,
		id:            mbox.ID,
		name:          mbox.Name,
		uidValidity:   snap.Mailbox.UIDValidity,
		uidNext:       snap.Mailbox.UIDNext,
		highestModSeq: snap.Mailbox.HighestModSeq,
		readOnly:      readOnly,
		byUID:         make(map[schema.UID]*viewMsg, len(snap.Messages)),
		changes:       changes,
		stop:          stop,
		index:         snap.Index,
	}
	if snap.Mailbox.Name != "" {
		v.name = snap.Mailbox.Name
	}
	v.msgs = make([]*viewMsg, 0, len(snap.Messages))
	for _, m := range snap.Messages {
		if _, dup := v.byUID[m.UID]; dup {
			continue
		}
		vm := &viewMsg{info: m, told: m.Flags}
		v.msgs = append(v.msgs, vm)
		v.byUID[m.UID] = vm
		v.learn(m.Flags)
	}
	sort.Slice(v.msgs, func(i, j int) bool { return v.msgs[i].info.UID < v.msgs[j].info.UID })
	// SELECT's FLAGS response tells every keyword in use.
	v.announceKeywords()
	if err := v.claimRecent(ctx, v.msgs); err != nil {
		stop()
		return nil, err
	}
	return v, nil
}

// close stops the watcher.
func (v *view) close() {
	if v.stop != nil {
		v.stop()
		v.stop = nil
	}
	v.changes = nil
}

// drain applies every change already queued, without blocking and without
// writing anything to the client.
func (v *view) drain() {
	for v.changes != nil {
		select {
		case ch, ok := <-v.changes:
			if !ok {
				v.changes = nil
				return
			}
			v.apply(ch)
		default:
			return
		}
	}
}

// apply records one change in the view.
func (v *view) apply(ch schema.Change) {
	if ch.Kind == schema.ChangeResync {
		v.resync = true
		return
	}
	if v.resync {
		// Changes were lost before this one (the watcher fell behind, or
		// the view found itself off). The reload the resync brings reads
		// the mailbox from the shard's leader, after this change was
		// committed, so it holds this change too. Applying it now would
		// put messages after the lost ones among the fresh, and a lost
		// message must never come after a later one in the view.
		return
	}
	if ch.Index != 0 && ch.Index <= v.index {
		return // already in the snapshot
	}
	if !ch.Mailbox.IsZero() && ch.Mailbox != v.id {
		return
	}
	switch ch.Kind {
	case schema.ChangeAdded:
		if ch.Message == nil {
			v.resync = true
			return
		}
		if _, ok := v.byUID[ch.UID]; ok {
			return
		}
		if ch.UID <= v.lastUID() {
			// UIDs only grow; an older one means the view is off.
			v.resync = true
			return
		}
		m := &viewMsg{info: *ch.Message, told: ch.Message.Flags}
		m.info.UID = ch.UID
		v.fresh = append(v.fresh, m)
		v.byUID[ch.UID] = m
		v.learn(m.info.Flags)
	case schema.ChangeFlags:
		m := v.byUID[ch.UID]
		if m == nil || m.expunged || ch.Message == nil || ch.Message.ModSeq < m.info.ModSeq {
			return
		}
		m.info = *ch.Message
		m.info.UID = ch.UID
		m.dirty = !sameFlags(m.info.Flags, m.told)
		v.learn(m.info.Flags)
	case schema.ChangeExpunged:
		m := v.byUID[ch.UID]
		if m == nil {
			return
		}
		for i, f := range v.fresh {
			if f == m {
				// Never announced: drop it silently.
				v.fresh = append(v.fresh[:i], v.fresh[i+1:]...)
				delete(v.byUID, ch.UID)
				return
			}
		}
		m.expunged = true
	case schema.ChangeMailbox:
		v.resync = true
	}
}

// lastUID is the highest UID the view knows.
func (v *view) lastUID() schema.UID {
	if n := len(v.fresh); n > 0 {
		return v.fresh[n-1].info.UID
	}
	if n := len(v.msgs); n > 0 {
		return v.msgs[n-1].info.UID
	}
	return 0
}

// reload reconciles the view with a fresh snapshot after events were
// lost: vanished messages become pending expunges, new ones pending
// EXISTS, changed flags pending FETCH.
func (v *view) reload(ctx context.Context) error {
	snap, err := v.acct.Snapshot(ctx, v.id)
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		v.gone = true
		for _, m := range v.msgs {
			m.expunged = true
		}
		for _, m := range v.fresh {
			delete(v.byUID, m.info.UID)
		}
		v.fresh = nil
		v.resync = false
		return nil
	}
	if err != nil {
		return err
	}
	present := make(map[schema.UID]*schema.MessageInfo, len(snap.Messages))
	for i := range snap.Messages {
		present[snap.Messages[i].UID] = &snap.Messages[i]
	}
	update := func(m *viewMsg, p *schema.MessageInfo) {
		if p.ModSeq >= m.info.ModSeq {
			m.info = *p
			m.dirty = !sameFlags(m.info.Flags, m.told)
			v.learn(m.info.Flags)
		}
	}
	for _, m := range v.msgs {
		if p := present[m.info.UID]; p == nil {
			m.expunged = true
		} else if !m.expunged {
			update(m, p)
		}
	}
	// A message the view does not hold is new if it comes after every
	// message announced; the fresh ones are not announced yet, so the
	// lost ones may fall among them (they are sorted below).
	var announced schema.UID
	if n := len(v.msgs); n > 0 {
		announced = v.msgs[n-1].info.UID
	}
	fresh := v.fresh[:0]
	for _, m := range v.fresh {
		if p := present[m.info.UID]; p != nil {
			update(m, p)
			m.told = m.info.Flags
			fresh = append(fresh, m)
		} else {
			delete(v.byUID, m.info.UID)
		}
	}
	v.fresh = fresh
	for i := range snap.Messages {
		p := &snap.Messages[i]
		if _, held := v.byUID[p.UID]; !held && p.UID > announced {
			m := &viewMsg{info: *p, told: p.Flags}
			v.fresh = append(v.fresh, m)
			v.byUID[p.UID] = m
			v.learn(p.Flags)
		}
	}
	sort.Slice(v.fresh, func(i, j int) bool { return v.fresh[i].info.UID < v.fresh[j].info.UID })
	v.index = snap.Index
	v.highestModSeq = snap.Mailbox.HighestModSeq
	v.resync = false
	return nil
}

// recentClaim is a \Recent claim: the messages above before, up to upTo,
// are \Recent for the session that made it.
type recentClaim struct{ before, upTo schema.UID }

// noteOwnClaim records the claim an APPEND of this session made in its
// own commit (Account.AppendClaimingRecent) for its message uid.
func (v *view) noteOwnClaim(before, uid schema.UID) {
	if n := len(v.ownClaims); n > 0 && v.ownClaims[n-1].upTo == before {
		v.ownClaims[n-1].upTo = uid // nobody claimed in between
		return
	}
	v.ownClaims = append(v.ownClaims, recentClaim{before: before, upTo: uid})
}

// ownClaimed reports whether this session's own claims made uid \Recent.
func (v *view) ownClaimed(uid schema.UID) bool {
	for _, c := range v.ownClaims {
		if uid > c.before && uid <= c.upTo {
			return true
		}
	}
	return false
}

// claimRecent marks which of msgs, the newest messages of the view in UID
// order, are \Recent for this session: those above the highest UID
// claimed before. A read-write view claims them, so that no other session
// sees them as \Recent; a read-only view only reads the claim. Messages
// up to this session's own claims (ownClaims) are settled by those, with
// no store call: the claim only ever rises, so a message below the
// highest own claim and outside every own claim was someone else's.
func (v *view) claimRecent(ctx context.Context, msgs []*viewMsg) error {
	if n := len(v.ownClaims); n > 0 && len(msgs) > 0 {
		covered := v.ownClaims[n-1].upTo
		rest := msgs[:0:0]
		for _, m := range msgs {
			if m.info.UID > covered {
				rest = append(rest, m)
			} else {
				m.recent = v.ownClaimed(m.info.UID)
			}
		}
		if last := msgs[len(msgs)-1].info.UID; last >= covered {
			v.ownClaims = v.ownClaims[:0] // every message they cover is settled
		}
		msgs = rest
	}
	if len(msgs) == 0 {
		return nil
	}
	upTo := msgs[len(msgs)-1].info.UID
	if v.readOnly {
		upTo = 0
	}
	prev, err := v.acct.ClaimRecent(ctx, v.id, upTo)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		m.recent = m.info.UID > prev
	}
	return nil
}

// numRecent counts the announced messages that are \Recent here.
func (v *view) numRecent() uint32 {
	var n uint32
	for _, m := range v.msgs {
		if m.recent {
			n++
		}
	}
	return n
}

// fetchFlags is the FLAGS item of a FETCH response for m: flags, and
// \Recent when m is recent in this session.
func (v *view) fetchFlags(m *viewMsg, flags []string) []imap.Flag {
	out := imapFlags(flags)
	if m.recent && !v.hideRecent {
		out = append(out, flagRecent)
	}
	return out
}

// flagRecent is the session flag \Recent (RFC 3501 section 2.3.2).
const flagRecent imap.Flag = `\Recent`

// expungeWriter is what the library's ExpungeWriter, MoveWriter and
// UpdateWriter have in common.
type expungeWriter interface {
	WriteExpunge(seqNum uint32) error
}

// updateWriter is the part of imapserver.UpdateWriter the view uses.
type updateWriter interface {
	expungeWriter
	WriteNumMessages(n uint32) error
	WriteNumRecent(n uint32) error
	WriteMailboxFlags(flags []imap.Flag) error
	WriteMessageFlags(seqNum uint32, uid imap.UID, flags []imap.Flag) error
}

// flush brings the client up to date: EXPUNGE for removed messages (only
// when allowExpunge), FLAGS when keywords came into use, EXISTS and
// RECENT for new messages (\Recent here if no other session saw them
// first), FETCH FLAGS for flag changes made elsewhere and for those a
// FETCH or STORE response held back until FLAGS. A reload that fails is
// retried at the next flush, and a failed \Recent claim leaves the new
// messages not recent here; both are storeErr. writeErr means the
// connection is broken. It first has the account catch up with what the
// user's other sessions wrote (polled: the client asked for news, so
// with what any node wrote; protocols.Account.Refresh).
func (v *view) flush(ctx context.Context, w updateWriter, allowExpunge, polled bool) (storeErr, writeErr error) {
	if v.changes != nil {
		v.acct.Refresh(ctx, v.id, polled)
	}
	v.drain()
	if v.resync {
		storeErr = v.reload(ctx)
	}
	if allowExpunge {
		if err := v.remove(func(m *viewMsg) bool { return m.expunged }, w); err != nil {
			return storeErr, err
		}
	}
	if len(v.newKeywords) > 0 {
		v.announceKeywords()
		if err := w.WriteMailboxFlags(v.mailboxFlags()); err != nil {
			return storeErr, err
		}
	}
	if len(v.fresh) > 0 {
		if err := v.claimRecent(ctx, v.fresh); err != nil && storeErr == nil {
			storeErr = err
		}
		// EXISTS announces them: the client fetches what it wants of
		// them, flags included, so a flag change made before it learnt
		// of them is no news (as reload has it). A FETCH FLAGS written
		// with the EXISTS would also give a client a message in an
		// answer that came before it existed for that client: imaptest
		// took one in a SEARCH answer that could not hold it as a
		// result the search missed.
		for _, m := range v.fresh {
			m.told, m.dirty = m.info.Flags, false
		}
		v.msgs = append(v.msgs, v.fresh...)
		v.fresh = nil
		if err := w.WriteNumMessages(uint32(len(v.msgs))); err != nil {
			return storeErr, err
		}
		if err := w.WriteNumRecent(v.numRecent()); err != nil {
			return storeErr, err
		}
	}
	for i, m := range v.msgs {
		if !m.dirty || m.expunged {
			continue
		}
		v.noteFetch(uint32(i+1), m.info.ModSeq)
		if err := w.WriteMessageFlags(uint32(i+1), imap.UID(m.info.UID), v.fetchFlags(m, m.info.Flags)); err != nil {
			return storeErr, err
		}
		m.told = m.info.Flags
		m.dirty = false
	}
	return storeErr, nil
}

// remove deletes the announced messages matching pred from the view and
// writes an EXPUNGE response for each, in the order that keeps the
// client's sequence numbers right.
func (v *view) remove(pred func(m *viewMsg) bool, w expungeWriter) error {
	var werr error
	removed := 0
	kept := v.msgs[:0]
	for i, m := range v.msgs {
		if !pred(m) {
			kept = append(kept, m)
			continue
		}
		if werr == nil {
			v.noteExpunge(uint32(i-removed+1), m.info.UID)
			werr = w.WriteExpunge(uint32(i - removed + 1))
		}
		delete(v.byUID, m.info.UID)
		removed++
	}
	for i := len(kept); i < len(v.msgs); i++ {
		v.msgs[i] = nil
	}
	v.msgs = kept
	return werr
}

// errBadSeq is the answer to a sequence number beyond the mailbox (RFC
// 9051 section 6.4.4: a client error).
var errBadSeq = &imap.Error{
	Type: imap.StatusResponseTypeBad,
	Code: imap.ResponseCodeClientBug,
	Text: "Message sequence number out of range",
}

// members returns, for each announced message, whether numSet names it.
// "*" means the last message (or the highest UID); "$" the saved SEARCH
// result. With strict, a sequence number beyond the mailbox is an error;
// UIDs that do not exist are always ignored. It runs in time linear in
// the size of the set plus the mailbox, whatever ranges the client sends.
func (v *view) members(numSet imap.NumSet, strict bool) ([]bool, error) {
	n := len(v.msgs)
	diff := make([]int32, n+1)
	mark := func(lo, hi int) {
		if lo < hi {
			diff[lo]++
			diff[hi]--
		}
	}
	switch set := numSet.(type) {
	case imap.SeqSet:
		for _, r := range set {
			start, stop := r.Start, r.Stop
			dynamic := start == 0 || stop == 0
			if start == 0 {
				start = uint32(n)
			}
			if stop == 0 {
				stop = uint32(n)
			}
			if start > stop {
				start, stop = stop, start
			}
			if start == 0 {
				continue // "*" in an empty mailbox
			}
			if stop > uint32(n) {
				if strict && !dynamic {
					return nil, errBadSeq
				}
				stop = uint32(n)
			}
			if start > stop {
				continue
			}
			mark(int(start)-1, int(stop))
		}
	case imap.UIDSet:
		if imap.IsSearchRes(set) {
			set = uidSetOf(v.searchRes)
		}
		if n == 0 {
			break
		}
		maxUID := v.msgs[n-1].info.UID
		for _, r := range set {
			start, stop := schema.UID(r.Start), schema.UID(r.Stop)
			if start == 0 {
				start = maxUID
			}
			if stop == 0 {
				stop = maxUID
			}
			if start > stop {
				start, stop = stop, start
			}
			lo := sort.Search(n, func(i int) bool { return v.msgs[i].info.UID >= start })
			hi := sort.Search(n, func(i int) bool { return v.msgs[i].info.UID > stop })
			mark(lo, hi)
		}
	}
	in := make([]bool, n)
	var sum int32
	for i := range in {
		sum += diff[i]
		in[i] = sum > 0
	}
	return in, nil
}

// selectNamed returns the announced messages numSet names, with their
// sequence numbers: live those still in the store, gone those expunged
// there whose EXPUNGE the client has not been sent yet.
func (v *view) selectNamed(numSet imap.NumSet) (live, gone []seqMsg, err error) {
	in, err := v.members(numSet, true)
	if err != nil {
		return nil, nil, err
	}
	for i, ok := range in {
		if !ok {
			continue
		}
		sm := seqMsg{seq: uint32(i + 1), m: v.msgs[i]}
		if v.msgs[i].expunged {
			gone = append(gone, sm)
		} else {
			live = append(live, sm)
		}
	}
	return live, gone, nil
}

// selectUIDs drains pending updates, then returns the UIDs of the live
// messages numSet names: what STORE, COPY and MOVE act on. gone says
// that it also names messages expunged elsewhere whose EXPUNGE the
// client has not been sent.
func (v *view) selectUIDs(numSet imap.NumSet) (msgs []seqMsg, uids []schema.UID, gone bool, err error) {
	v.drain()
	msgs, expunged, err := v.selectNamed(numSet)
	if err != nil {
		return nil, nil, false, err
	}
	uids = make([]schema.UID, len(msgs))
	for i, sm := range msgs {
		uids[i] = sm.m.info.UID
	}
	return msgs, uids, len(expunged) > 0, nil
}

// seqMsg is a message with its current sequence number.
type seqMsg struct {
	seq uint32
	m   *viewMsg
}

// selectData describes the freshly selected mailbox for SELECT/EXAMINE.
func (v *view) selectData() *imap.SelectData {
	var firstUnseen uint32
	for i, m := range v.msgs {
		if !m.info.HasFlag(schema.FlagSeen) {
			firstUnseen = uint32(i + 1)
			break
		}
	}
	flags := v.mailboxFlags()
	var permanent []imap.Flag
	if !v.readOnly {
		// \* tells clients they may create keywords (RFC 3501
		// section 7.1, PERMANENTFLAGS).
		permanent = append(append(permanent, flags...), imap.FlagWildcard)
	}
	return &imap.SelectData{
		Flags:             flags,
		PermanentFlags:    permanent,
		NumMessages:       uint32(len(v.msgs)),
		NumRecent:         v.numRecent(),
		FirstUnseenSeqNum: firstUnseen,
		UIDValidity:       v.uidValidity,
	}
}

// learn records the keywords among flags that the client has not been
// told in FLAGS yet.
func (v *view) learn(flags []string) {
	for _, f := range flags {
		if strings.HasPrefix(f, `\`) {
			continue
		}
		k := strings.ToLower(f)
		if _, ok := v.keywords[k]; ok {
			continue
		}
		if v.newKeywords == nil {
			v.newKeywords = map[string]string{}
		}
		if _, ok := v.newKeywords[k]; !ok {
			v.newKeywords[k] = f
		}
	}
}

// announceKeywords counts the new keywords as told; the caller tells
// them (SELECT's FLAGS, or flush).
func (v *view) announceKeywords() {
	if v.keywords == nil {
		v.keywords = make(map[string]string, len(v.newKeywords))
	}
	for k, f := range v.newKeywords {
		v.keywords[k] = f
	}
	v.newKeywords = nil
}

// unannounced reports whether flags hold a keyword not told in FLAGS yet.
func (v *view) unannounced(flags []string) bool {
	for _, f := range flags {
		if strings.HasPrefix(f, `\`) {
			continue
		}
		if _, ok := v.keywords[strings.ToLower(f)]; !ok {
			return true
		}
	}
	return false
}

// shown returns flags without the keywords not told in FLAGS yet: what a
// FETCH response written before the next flush may show.
func (v *view) shown(flags []string) []string {
	if !v.unannounced(flags) {
		return flags
	}
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if _, ok := v.keywords[strings.ToLower(f)]; ok || strings.HasPrefix(f, `\`) {
			out = append(out, f)
		}
	}
	return out
}

// mailboxFlags is the mailbox's FLAGS: the system flags and every keyword
// told so far, sorted.
func (v *view) mailboxFlags() []imap.Flag {
	flags := []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}
	kw := make([]string, 0, len(v.keywords))
	for _, f := range v.keywords {
		kw = append(kw, f)
	}
	sort.Strings(kw)
	for _, f := range kw {
		flags = append(flags, imap.Flag(f))
	}
	return flags
}

// uidSetOf builds a UID set from a list of UIDs.
func uidSetOf(uids []schema.UID) imap.UIDSet {
	sorted := append([]schema.UID(nil), uids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	set := imap.UIDSet{}
	for _, u := range sorted {
		if u == 0 {
			continue
		}
		if n := len(set); n > 0 && schema.UID(set[n-1].Stop)+1 >= u {
			if imap.UID(u) > set[n-1].Stop {
				set[n-1].Stop = imap.UID(u)
			}
			continue
		}
		set = append(set, imap.UIDRange{Start: imap.UID(u), Stop: imap.UID(u)})
	}
	return set
}

// imapFlags converts stored flags to the library's type.
func imapFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	return out
}

// sameFlags compares two flag lists as case-insensitive sets.
func sameFlags(a, b []string) bool {
	set := make(map[string]bool, len(a))
	for _, f := range a {
		set[strings.ToLower(f)] = true
	}
	other := make(map[string]bool, len(b))
	for _, f := range b {
		f = strings.ToLower(f)
		if !set[f] {
			return false
		}
		other[f] = true
	}
	return len(other) == len(set)
}
