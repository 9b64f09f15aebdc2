package imap

import (
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// maxSearchTerms bounds the criteria of one SEARCH, so a command cannot
// cost more than that many tests per message.
const maxSearchTerms = 1000

// numRange is a static inclusive range of sequence numbers or UIDs.
type numRange struct{ lo, hi uint32 }

// rangeSet is a sorted, merged list of ranges.
type rangeSet []numRange

func (rs rangeSet) contains(n uint32) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi >= n })
	return i < len(rs) && rs[i].lo <= n
}

// staticRanges resolves "*" (encoded as 0) to max and sorts and merges the
// ranges.
func staticRanges(pairs [][2]uint32, max uint32) rangeSet {
	rs := make(rangeSet, 0, len(pairs))
	for _, p := range pairs {
		lo, hi := p[0], p[1]
		if lo == 0 {
			lo = max
		}
		if hi == 0 {
			hi = max
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if hi == 0 {
			continue
		}
		rs = append(rs, numRange{lo, hi})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo < rs[j].lo })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.lo <= out[n-1].hi+1 && out[n-1].hi != ^uint32(0) {
			if r.hi > out[n-1].hi {
				out[n-1].hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

type headerTerm struct{ key, value string }

// searchNode is a compiled imap.SearchCriteria: every dynamic set made
// static, every string lower-cased.
type searchNode struct {
	seqs, uids                           []rangeSet
	since, before, sentSince, sentBefore time.Time
	headers                              []headerTerm
	bodies, texts                        []string
	flags, notFlags                      []string
	larger, smaller                      int64
	modSeq                               uint64 // MODSEQ: at least this; 0 none
	not                                  []*searchNode
	or                                   [][2]*searchNode
}

// compileSearch compiles criteria against the view; terms counts the
// criteria seen so far.
func (v *view) compileSearch(c *imap.SearchCriteria, terms *int) (*searchNode, error) {
	*terms += 1 + len(c.SeqNum) + len(c.UID) + len(c.Header) + len(c.Body) + len(c.Text) + len(c.Flag) + len(c.NotFlag)
	if *terms > maxSearchTerms {
		return nil, noError(imap.ResponseCodeLimit, "Search too complex")
	}
	n := &searchNode{
		since: c.Since, before: c.Before, sentSince: c.SentSince, sentBefore: c.SentBefore,
		larger: c.Larger, smaller: c.Smaller,
	}
	if c.ModSeq != nil {
		n.modSeq = max(c.ModSeq.ModSeq, 1)
	}
	var maxUID uint32
	if len(v.msgs) > 0 {
		maxUID = uint32(v.msgs[len(v.msgs)-1].info.UID)
	}
	for _, set := range c.SeqNum {
		pairs := make([][2]uint32, len(set))
		for i, r := range set {
			pairs[i] = [2]uint32{r.Start, r.Stop}
		}
		n.seqs = append(n.seqs, staticRanges(pairs, uint32(len(v.msgs))))
	}
	for _, set := range c.UID {
		if imap.IsSearchRes(set) {
			set = uidSetOf(v.searchRes)
		}
		pairs := make([][2]uint32, len(set))
		for i, r := range set {
			pairs[i] = [2]uint32{uint32(r.Start), uint32(r.Stop)}
		}
		n.uids = append(n.uids, staticRanges(pairs, maxUID))
	}
	for _, h := range c.Header {
		n.headers = append(n.headers, headerTerm{key: h.Key, value: strings.ToLower(h.Value)})
	}
	for _, b := range c.Body {
		n.bodies = append(n.bodies, strings.ToLower(b))
	}
	for _, t := range c.Text {
		n.texts = append(n.texts, strings.ToLower(t))
	}
	for _, f := range c.Flag {
		n.flags = append(n.flags, string(f))
	}
	for _, f := range c.NotFlag {
		n.notFlags = append(n.notFlags, string(f))
	}
	for i := range c.Not {
		sub, err := v.compileSearch(&c.Not[i], terms)
		if err != nil {
			return nil, err
		}
		n.not = append(n.not, sub)
	}
	for i := range c.Or {
		a, err := v.compileSearch(&c.Or[i][0], terms)
		if err != nil {
			return nil, err
		}
		b, err := v.compileSearch(&c.Or[i][1], terms)
		if err != nil {
			return nil, err
		}
		n.or = append(n.or, [2]*searchNode{a, b})
	}
	return n, nil
}

// searchMsg is one message under test, with its header and body loaded
// from the store at most once, and only if a criterion needs them.
type searchMsg struct {
	s   *session
	seq uint32
	m   *viewMsg
	// recs holds the pass's search records, m being its message idx;
	// a record saves reading the message (searchrecord.go).
	recs *recordSet
	idx  int

	header       *mail.Header
	headerLoaded bool
	body         []byte
	bodyLoaded   bool
	err          error
	// gone: the message is expunged in the store, only its metadata
	// is left; loading its header or body fails without asking.
	gone bool
}

func (sm *searchMsg) loadHeader() *mail.Header {
	if sm.headerLoaded {
		return sm.header
	}
	sm.headerLoaded = true
	if sm.gone {
		sm.err = schema.ErrNoSuchMessage
		return nil
	}
	src := sm.body
	if rec := sm.recs.get(sm.idx); rec != nil && !sm.bodyLoaded {
		src = rec.header
	} else if !sm.bodyLoaded {
		ctx, cancel := sm.s.opContext()
		var err error
		src, err = sm.s.acct.Header(ctx, sm.m.info.Blob)
		cancel()
		if err != nil {
			sm.err = err
			return nil
		}
		sm.recs.learnHeader(sm.idx, src)
	}
	h, _ := parseHeaderSection(src)
	sm.header = &mail.Header{Header: gomessage.Header{Header: h}}
	return sm.header
}

func (sm *searchMsg) loadBody() []byte {
	if sm.bodyLoaded {
		return sm.body
	}
	sm.bodyLoaded = true
	if sm.gone {
		sm.err = schema.ErrNoSuchMessage
		return nil
	}
	ctx, cancel := sm.s.opContext()
	body, err := sm.s.acct.Body(ctx, sm.m.info.Blob)
	cancel()
	if err != nil {
		sm.err = err
		return nil
	}
	sm.body = body
	if rec := sm.recs.get(sm.idx); rec == nil || rec.headerOnly {
		sm.recs.learn(sm.idx, body)
	}
	return body
}

// headerRecord returns the message's search record when header keys are
// to be answered from it (the message was not read meanwhile).
func (sm *searchMsg) headerRecord() *searchRecord {
	if sm.bodyLoaded {
		return nil
	}
	return sm.recs.get(sm.idx)
}

// recordContains answers a BODY or TEXT key from the message's search
// record; decided is false when there is none or it cannot tell.
func (sm *searchMsg) recordContains(needle string, withHeaders bool) (found, decided bool) {
	if sm.bodyLoaded {
		return false, false
	}
	rec := sm.recs.get(sm.idx)
	if rec == nil {
		return false, false
	}
	return rec.contains(needle, withHeaders)
}

// dateOnly keeps the calendar date of t in its own zone (RFC 3501 section
// 6.4.4: dates compare "disregarding time and timezone").
func dateOnly(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func inDateRange(t, since, before time.Time) bool {
	d := dateOnly(t)
	if !since.IsZero() && d.Before(since) {
		return false
	}
	if !before.IsZero() && !d.Before(before) {
		return false
	}
	return true
}

// match evaluates the node, cheapest tests first so that header and body
// are only read when the metadata did not already decide.
func (n *searchNode) match(sm *searchMsg) bool {
	info := &sm.m.info
	for _, rs := range n.seqs {
		if !rs.contains(sm.seq) {
			return false
		}
	}
	for _, rs := range n.uids {
		if !rs.contains(uint32(info.UID)) {
			return false
		}
	}
	if !inDateRange(info.InternalDate, n.since, n.before) {
		return false
	}
	hasFlag := func(f string) bool {
		if strings.EqualFold(f, string(flagRecent)) {
			// RECENT, NEW (RECENT UNSEEN) and OLD (NOT RECENT).
			return sm.m.recent
		}
		return info.HasFlag(f)
	}
	for _, f := range n.flags {
		if !hasFlag(f) {
			return false
		}
	}
	for _, f := range n.notFlags {
		if hasFlag(f) {
			return false
		}
	}
	if info.ModSeq < n.modSeq {
		return false
	}
	if n.larger > 0 && int64(info.Size) <= n.larger {
		return false
	}
	if n.smaller > 0 && int64(info.Size) >= n.smaller {
		return false
	}
	if (len(n.headers) > 0 || !n.sentSince.IsZero() || !n.sentBefore.IsZero()) && !n.matchHeader(sm) {
		return false
	}
	for _, b := range n.bodies {
		if found, ok := sm.recordContains(b, false); ok {
			if !found {
				return false
			}
			continue
		}
		body := sm.loadBody()
		if body == nil || !containsText(body, b, false) {
			return false
		}
	}
	for _, t := range n.texts {
		if found, ok := sm.recordContains(t, true); ok {
			if !found {
				return false
			}
			continue
		}
		body := sm.loadBody()
		if body == nil || !containsText(body, t, true) {
			return false
		}
	}
	for _, sub := range n.not {
		if sub.match(sm) || sm.err != nil {
			return false
		}
	}
	for _, pair := range n.or {
		if !pair[0].match(sm) && !pair[1].match(sm) {
			return false
		}
	}
	return true
}

// matchHeader evaluates the node's header keys and sent dates, from the
// message's search record when it has one.
func (n *searchNode) matchHeader(sm *searchMsg) bool {
	sent := !n.sentSince.IsZero() || !n.sentBefore.IsZero()
	if rec := sm.headerRecord(); rec != nil {
		for _, term := range n.headers {
			if !fieldFormsContain(rec.fieldForms(term.key), term.value) {
				return false
			}
		}
		if sent {
			t, ok := rec.sentDate()
			return ok && inDateRange(t, n.sentSince, n.sentBefore)
		}
		return true
	}
	h := sm.loadHeader()
	if h == nil {
		return false
	}
	for _, term := range n.headers {
		if !headerFieldContains(h, term) {
			return false
		}
	}
	if sent {
		t, err := h.Date()
		if err != nil || t.IsZero() || !inDateRange(t, n.sentSince, n.sentBefore) {
			return false
		}
	}
	return true
}

// headerFieldContains implements SEARCH HEADER (and FROM, TO, CC, BCC,
// SUBJECT): a field named key whose value contains the search value, case
// and runs of white space (folding included) ignored; an empty value
// matches any message with the field. Every field of that name counts.
// A value matches as it is stored, with its RFC 2047 encoded words
// decoded, and, for address fields, in the normal form of its addresses
// ("Name <local@domain>", "group: a@b, c@d;"), so that a search for an
// address finds it whatever comments, quoting or encoding the field has,
// as Dovecot's does.
func headerFieldContains(h *mail.Header, term headerTerm) bool {
	return fieldFormsContain(headerFieldForms(h, term.key), term.value)
}

// fieldForms are the forms a header key's value is matched in: present
// says whether the header has such a field, forms are every field's
// forms lower-cased with runs of white space made one space.
type fieldForms struct {
	present bool
	forms   []string
}

// headerFieldForms returns the forms of the fields named key: as stored,
// decoded, and for address fields in normal form.
func headerFieldForms(h *mail.Header, key string) fieldForms {
	fields := h.FieldsByKey(key)
	ff := fieldForms{present: fields.Len() > 0}
	norm := func(s string) string { return compressSpace(strings.ToLower(s)) }
	address := isAddressField(key)
	for fields.Next() {
		raw := fields.Value()
		ff.forms = append(ff.forms, norm(raw))
		if text, err := fields.Text(); err == nil {
			ff.forms = append(ff.forms, norm(text))
		}
		if address {
			ff.forms = append(ff.forms, norm(normalAddresses(raw)))
		}
	}
	return ff
}

// fieldFormsContain reports whether a form contains value (lower case);
// an empty value matches any field.
func fieldFormsContain(ff fieldForms, value string) bool {
	if value == "" {
		return ff.present
	}
	needle := compressSpace(value)
	for _, f := range ff.forms {
		if strings.Contains(f, needle) {
			return true
		}
	}
	return false
}

// isAddressField reports whether a header field holds an address list.
func isAddressField(key string) bool {
	switch strings.ToLower(key) {
	case "from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc":
		return true
	}
	return false
}

// normalAddresses writes an address list in normal form: each mailbox as
// "Name <local@domain>" (or "local@domain") with its display name
// decoded, groups as "name: members;", entries separated by ", ".
// Comments and quoting are gone; what does not parse is left out.
func normalAddresses(value string) string {
	var entries, members []string
	group := ""
	inGroup := false
	endGroup := func() {
		entries = append(entries, group+": "+strings.Join(members, ", ")+";")
		members, inGroup = nil, false
	}
	for _, item := range splitAddressList(value) {
		switch item.kind {
		case itemGroupStart:
			if inGroup {
				endGroup()
			}
			group, inGroup = groupName(item.text), true
		case itemGroupEnd:
			if inGroup {
				endGroup()
			}
		case itemMailbox:
			a, ok := envelopeMailbox(item.text)
			if !ok {
				continue
			}
			s := a.Mailbox + "@" + a.Host
			if a.Name != "" {
				s = a.Name + " <" + s + ">"
			}
			if inGroup {
				members = append(members, s)
			} else {
				entries = append(entries, s)
			}
		}
	}
	if inGroup {
		endGroup()
	}
	return strings.Join(entries, ", ")
}

// compressSpace replaces every run of white space (line breaks included)
// with one space.
func compressSpace(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// Search answers SEARCH and UID SEARCH, with ESEARCH return options and
// the SEARCHRES saved result.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	v, err := s.selected()
	if err != nil {
		return nil, err
	}
	if options == nil {
		options = &imap.SearchOptions{ReturnAll: true}
	}
	data, uids, lost, err := s.search(v, kind, criteria)
	if options.ReturnSave {
		v.saveSearch(err, uids, nil, options.ReturnMin, options.ReturnMax, options.ReturnAll || options.ReturnCount)
	}
	if err != nil {
		return nil, err
	}
	if lost {
		s.expungeIssued()
	}
	return data, nil
}

// expungeIssued puts EXPUNGEISSUED into the tagged OK of the command the
// library runs (RFC 5530 section 3): the answer leaves out a message the
// client still has a sequence number for, because another session
// expunged it (RFC 2180 section 4.1). Commands the front runs itself put
// the code into their own answer.
func (s *session) expungeIssued() {
	if s.front != nil {
		s.front.taggedCode(codeExpungeIssued)
	}
}

// codeExpungeIssued is the response code of RFC 5530 section 3, for an
// answer that leaves out messages expunged by someone else.
const codeExpungeIssued = "EXPUNGEISSUED"

// okStatus is the tagged OK text of a command the front runs itself,
// with EXPUNGEISSUED when lost (see expungeIssued).
func okStatus(text string, lost bool) string {
	if lost {
		return "OK [" + codeExpungeIssued + "] " + text
	}
	return "OK " + text
}

// search runs the criteria over the announced, live messages and returns
// the result with the matching UIDs in order; lost as matchEach says.
func (s *session) search(v *view, kind imapserver.NumKind, criteria *imap.SearchCriteria) (*imap.SearchData, []schema.UID, bool, error) {
	var uids []schema.UID
	var seqs []uint32
	lost, err := s.matchEach(v, criteria, func(sm *searchMsg) error {
		uids = append(uids, sm.m.info.UID)
		seqs = append(seqs, sm.seq)
		return nil
	})
	if err != nil {
		return nil, nil, false, err
	}
	data := &imap.SearchData{Count: uint32(len(uids))}
	nums := seqs
	if kind == imapserver.NumKindUID {
		nums = make([]uint32, len(uids))
		for i, u := range uids {
			nums[i] = uint32(u)
		}
		data.All = uidSetOf(uids)
	} else {
		data.All = seqSetOf(seqs)
	}
	if len(nums) > 0 {
		data.Min, data.Max = nums[0], nums[len(nums)-1]
	}
	return data, uids, lost, nil
}

// matchEach runs the criteria over the announced, live messages and
// calls fn for each match, in sequence order, with its header and body
// as far as the match loaded them.
//
// A message the client still sees but another session expunged is left
// out (RFC 2180 section 4.1). lost reports that one was left out that
// might have matched: the criteria did not rule it out on what the view
// still knows of it, or it went from the store while being read. The
// tagged OK then carries EXPUNGEISSUED (RFC 5530 section 3), which tells
// the client the answer is short of it.
func (s *session) matchEach(v *view, criteria *imap.SearchCriteria, fn func(*searchMsg) error) (lost bool, err error) {
	v.drain()
	terms := 0
	root, err := v.compileSearch(criteria, &terms)
	if err != nil {
		return false, err
	}
	recs := newRecordSet(s, v.msgs)
	for i, m := range v.msgs {
		if m.expunged {
			if !lost {
				// Decided on the metadata alone: the store is not asked
				// for what it no longer has.
				gm := &searchMsg{s: s, seq: uint32(i + 1), m: m, idx: i, gone: true}
				lost = root.match(gm) || gm.err != nil
			}
			continue
		}
		sm := &searchMsg{s: s, seq: uint32(i + 1), m: m, recs: recs, idx: i}
		ok := root.match(sm)
		if ok && sm.err == nil {
			if err := fn(sm); err != nil {
				return false, err
			}
		}
		if sm.err != nil {
			if errors.Is(sm.err, schema.ErrNoSuchMessage) {
				lost = true
				continue // expunged meanwhile
			}
			return false, s.storeError("search", sm.err)
		}
	}
	return lost, nil
}

// seqSetOf builds a sequence set from ascending sequence numbers.
func seqSetOf(seqs []uint32) imap.SeqSet {
	set := imap.SeqSet{}
	for _, n := range seqs {
		if k := len(set); k > 0 && set[k-1].Stop+1 == n {
			set[k-1].Stop = n
			continue
		}
		set = append(set, imap.SeqRange{Start: n, Stop: n})
	}
	return set
}
