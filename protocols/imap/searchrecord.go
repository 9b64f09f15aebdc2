package imap

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	nettextproto "net/textproto"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// A search record is what SEARCH and SORT need of a message, so that
// they need not read (and open) the message itself: its header section,
// and the distinct lower-cased words of every text that BODY and TEXT
// compare a needle against (textPieces). The node that proposes a
// message builds it (BuildSearchRecord, given to the mail store), the
// store seals it with the user's key and keeps it beside the message,
// and this package reads it back through the account (Account.SearchRecords).
//
// Words are the runs between ASCII white space (space, tab, CR, LF). A
// needle without white space is in a text exactly when it is within one
// of its words, so the record answers such keys as reading the message
// would; for a needle with white space, every word of the needle must
// be within a word of the record (which rules most messages out), and
// the message is read to decide.
const (
	// searchRecordVersion is the first byte of a record; a record of
	// another version is ignored (the message is read instead).
	searchRecordVersion = 1
	// searchRecordDigitFree is the version of a record whose words are
	// kept without their digits (collectWords), for a message whose
	// words did not fit otherwise; it answers needles without digits.
	// Its own version keeps nodes that predate it from reading it as a
	// record of whole words: they read the message instead.
	searchRecordDigitFree = 2
	// maxRecordHeader mirrors the store's header chunk: the header
	// section a record keeps is the one Account.Header returns.
	maxRecordHeader = 1 << 20
	// maxRecordWords bounds the words a record keeps, in bytes; a message
	// with more text keeps none (flag recordNoWords) and its body keys
	// read the message.
	maxRecordWords = 256 << 10

	recordNoWords = 1

	// maxRecordForms bounds the header field names whose forms a record
	// keeps (a client searching many names parses the header again).
	maxRecordForms = 8
)

// wordSeparators split the texts of a record into words.
const wordSeparators = " \t\r\n"

// searchRecord is an opened search record.
type searchRecord struct {
	header []byte // the header section
	// body and text are the distinct words of the body texts and of the
	// header fields (TEXT only), each followed by '\n', so a needle
	// without white space is in a word exactly when it is in the string.
	body, text string
	noWords    bool // the words were left out; body keys read the message
	// digitFree: the words are kept without their digits, so a needle
	// holding a digit reads the message.
	digitFree bool
	// headerOnly marks a record kept from a header read for a search
	// (a message stored without a record): it has no words, and the
	// message's full record replaces it once the message is read.
	headerOnly bool
	// unasked: a header-only record FETCH kept (session.header)
	// before any search asked the store for the blob's own record.
	unasked bool

	// What is derived from the header, computed on first use and kept
	// with the record, so a repeated search or sort parses nothing.
	mu       sync.Mutex
	forms    map[string]fieldForms // by the search key's field name
	sentDone bool
	sent     time.Time
	sentOK   bool
	sortKeys *sortEntry
	thread   *threadMsg // readThreadMsg's fields, without an internal date
	env      *imap.Envelope
	routes   []envelopeRoute
	// fields: the header section parsed for FETCH's header sections
	// (headerSection), never modified once parsed.
	fieldsDone bool
	fields     textproto.Header
	fieldsErr  error
}

// envelope returns the ENVELOPE of the record's header section and the
// routes of its addresses (routedEnvelopeOf), parsed once. They are
// shared: callers must not modify them.
func (r *searchRecord) envelope() (*imap.Envelope, []envelopeRoute) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.env == nil {
		r.env, r.routes = routedEnvelopeOf(r.header)
	}
	return r.env, r.routes
}

// headerSection answers BODY[HEADER], BODY[HEADER.FIELDS (fields)] and
// BODY[HEADER.FIELDS.NOT (not)] of a whole message from the record's
// header section, parsed once: the bytes imapserver.ExtractBodySection
// writes for them, which parses the header again at every FETCH (a
// client lists the same page of headers again and again). ok is false
// when the header does not parse; the caller then extracts as before.
func (r *searchRecord) headerSection(fields, not []string) (b []byte, ok bool) {
	r.mu.Lock()
	if !r.fieldsDone {
		r.fields, r.fieldsErr = parseHeaderSection(r.header)
		r.fieldsDone = true
	}
	h, err := r.fields, r.fieldsErr
	r.mu.Unlock()
	if err != nil {
		return nil, false
	}
	// As ExtractBodySection: the names of HEADER.FIELDS compare lower
	// cased, those of HEADER.FIELDS.NOT in canonical form.
	keep := make([]string, len(fields))
	for i, k := range fields {
		keep[i] = strings.ToLower(k)
	}
	drop := make([]string, len(not))
	for i, k := range not {
		drop[i] = nettextproto.CanonicalMIMEHeaderKey(k)
	}
	wanted := func(key string) bool {
		if len(keep) > 0 && !slices.ContainsFunc(keep, func(k string) bool { return equalLowered(key, k) }) {
			return false
		}
		return !slices.Contains(drop, key)
	}
	// Sized first: HEADER.FIELDS of a page of messages lists a few
	// fields of each, a fraction of its header.
	size := 2
	for f := h.Fields(); f.Next(); {
		if wanted(f.Key()) {
			raw, err := f.Raw()
			if err != nil {
				return nil, false
			}
			size += len(raw)
		}
	}
	out := make([]byte, 0, size)
	for f := h.Fields(); f.Next(); {
		if wanted(f.Key()) {
			raw, _ := f.Raw()
			out = append(out, raw...)
		}
	}
	return append(out, '\r', '\n'), true
}

// equalLowered reports whether strings.ToLower(key) == lowered without
// lower-casing key into a new string: a field name is printable ASCII
// (go-message refuses others), which is mapped here byte by byte.
func equalLowered(key, lowered string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] >= utf8.RuneSelf {
			return strings.ToLower(key) == lowered
		}
	}
	if len(key) != len(lowered) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lowered[i] {
			return false
		}
	}
	return true
}

// parseHeader parses the record's header section as loadHeader does.
func (r *searchRecord) parseHeader() *mail.Header {
	h, _ := parseHeaderSection(r.header)
	return &mail.Header{Header: gomessage.Header{Header: h}}
}

// fieldForms returns the forms of the header fields named key
// (headerFieldForms).
func (r *searchRecord) fieldForms(key string) fieldForms {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ff, ok := r.forms[key]; ok {
		return ff
	}
	if r.forms == nil {
		r.forms = map[string]fieldForms{}
	}
	ff := headerFieldForms(r.parseHeader(), key)
	if len(r.forms) < maxRecordForms {
		r.forms[key] = ff
	}
	return ff
}

// sentDate returns the message's Date, ok false when it has no valid
// one.
func (r *searchRecord) sentDate() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.sentDone {
		t, err := r.parseHeader().Date()
		r.sent, r.sentOK, r.sentDone = t, err == nil && !t.IsZero(), true
	}
	return r.sent, r.sentOK
}

// threadFields fills tm's header-derived THREAD fields as
// readThreadMsg does, the internal date standing for a missing Date.
func (r *searchRecord) threadFields(tm *threadMsg, internal time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.thread == nil {
		var k threadMsg
		readThreadMsg(&k, r.parseHeader(), time.Time{})
		r.thread = &k
	}
	k := r.thread
	tm.date, tm.subject, tm.reply, tm.msgID = k.date, k.subject, k.reply, k.msgID
	if tm.date.IsZero() {
		tm.date = internal.UTC()
	}
	tm.refs = slices.Clone(k.refs)
}

// sortFields fills e's header-derived sort keys.
func (r *searchRecord) sortFields(e *sortEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sortKeys == nil {
		var k sortEntry
		k.fill(r.parseHeader())
		r.sortKeys = &k
	}
	k := r.sortKeys
	e.date, e.subject = k.date, k.subject
	e.from, e.to, e.cc, e.dispFrom, e.dispTo = k.from, k.to, k.cc, k.dispFrom, k.dispTo
}

// BuildSearchRecord builds the search record of a message (CRLF
// normalised, as the store keeps it). It is meant for the mail store's
// indexer (mailstore.Config.SearchIndexer) and never fails.
func BuildSearchRecord(msg []byte) []byte {
	sets := wordSetPool.Get().(*[2]wordSet)
	defer func() {
		if sets[0].reusable() && sets[1].reusable() {
			sets[0].reset()
			sets[1].reset()
			wordSetPool.Put(sets)
		}
	}()
	body, text := &sets[0], &sets[1]
	version := byte(searchRecordVersion)
	fits, digitFree := collectWords(msg, body, text)
	if digitFree {
		version = searchRecordDigitFree
	}
	header := msg[:min(schema.HeaderLength(msg), maxRecordHeader)]
	var flags byte
	var bodyWords, textWords []byte
	if !fits {
		flags |= recordNoWords
	} else {
		bodyWords, textWords = body.words, text.words
	}
	out := make([]byte, 0, 2+3*binary.MaxVarintLen32+len(header)+len(bodyWords)+len(textWords))
	out = append(out, version, flags)
	for _, part := range [][]byte{header, bodyWords, textWords} {
		out = binary.AppendUvarint(out, uint64(len(part)))
		out = append(out, part...)
	}
	return out
}

// collectWords adds the distinct words of msg's texts to body and of its
// header fields to text, and reports whether they fit in maxRecordWords
// and whether they had to be made digit-free to fit. Digit-free, a word
// holding ASCII digits is added as its runs without them: a needle
// without digits is within such a word exactly when it is within one of
// its runs. Tables of figures (CSV, logs) make a distinct word of nearly
// every line; without their digits they come down to a few.
//
// The words are collected as they are until they pass the bound; then
// the sets are rebuilt digit-free from the words they hold and the walk
// goes on digit-free, so a message is read once whatever it holds (its
// texts decoded from base64 or quoted-printable cost more than the
// words). It stops at the first word that does not fit digit-free.
func collectWords(msg []byte, body, text *wordSet) (fits, digitFree bool) {
	size := 0
	add := func(set *wordSet, w []byte) (full bool) {
		if len(w) > 0 && set.add(w) {
			size += len(w) + 1
		}
		return size > maxRecordWords
	}
	addWord := func(set *wordSet, w []byte) (full bool) {
		if !digitFree || !hasDigit(w) {
			return add(set, w)
		}
		for len(w) > 0 {
			k := 0
			for k < len(w) && !isDigit(w[k]) {
				k++
			}
			if add(set, w[:k]) {
				return true
			}
			for k < len(w) && isDigit(w[k]) {
				k++
			}
			w = w[k:]
		}
		return false
	}
	var held []byte
	toDigitFree := func() (full bool) {
		digitFree, size = true, 0
		for _, set := range []*wordSet{body, text} {
			held = append(held[:0], set.words...)
			set.reset()
			for w := range bytes.SplitSeq(held, []byte{'\n'}) {
				if addWord(set, w) {
					return true
				}
			}
		}
		return false
	}
	full := textPieces(msg, true, func(piece []byte, header bool) bool {
		set := body
		if header {
			set = text
		}
		for i := 0; i < len(piece); {
			for i < len(piece) && isWordSeparator(piece[i]) {
				i++
			}
			j := i
			for j < len(piece) && !isWordSeparator(piece[j]) {
				j++
			}
			w := piece[i:j]
			i = j
			if addWord(set, w) && (digitFree || toDigitFree()) {
				return true
			}
		}
		return false
	})
	return !full, digitFree
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func hasDigit[T string | []byte](w T) bool {
	for i := 0; i < len(w); i++ {
		if isDigit(w[i]) {
			return true
		}
	}
	return false
}

// isWordSeparator reports whether c is one of wordSeparators.
func isWordSeparator(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

// wordSet collects distinct words without a string or map entry per
// word: words holds each once, followed by '\n', in the order first
// seen (the record's form; its reader only looks for substrings, so the
// order does not matter); slots is an open-addressing hash table over
// it, each slot the word's hash (high 32 bits) and its offset + 1 (low
// 32 bits; 0 marks an empty slot).
type wordSet struct {
	words []byte
	slots []uint64
	n     int
}

// wordSeed seeds the word hash; the record does not depend on it.
var wordSeed = maphash.MakeSeed()

// maxPooledWords bounds the word sets kept for reuse: a set that
// reached the record's bound is kept (it holds that much and one word),
// one grown by a longer word is not.
const maxPooledWords = 2 * maxRecordWords

var wordSetPool = sync.Pool{New: func() any { return new([2]wordSet) }}

func (s *wordSet) reusable() bool {
	return cap(s.words) <= maxPooledWords && len(s.slots) <= maxPooledWords/8
}

func (s *wordSet) reset() {
	s.words = s.words[:0]
	clear(s.slots)
	s.n = 0
}

// add adds w (without separators) and reports whether it was new.
func (s *wordSet) add(w []byte) bool {
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	h := uint32(maphash.Bytes(wordSeed, w))
	mask := uint32(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		slot := s.slots[i]
		if slot == 0 {
			s.slots[i] = uint64(h)<<32 | uint64(len(s.words)+1)
			s.words = append(s.words, w...)
			s.words = append(s.words, '\n')
			s.n++
			return true
		}
		if uint32(slot>>32) == h {
			off := int(uint32(slot)) - 1
			if end := off + len(w); end < len(s.words) && s.words[end] == '\n' && bytes.Equal(s.words[off:end], w) {
				return false
			}
		}
	}
}

// grow doubles the table (from 256 slots), placing the slots again by
// their kept hashes.
func (s *wordSet) grow() {
	old := s.slots
	s.slots = make([]uint64, max(256, 2*len(old)))
	mask := uint32(len(s.slots) - 1)
	for _, slot := range old {
		if slot == 0 {
			continue
		}
		i := uint32(slot>>32) & mask
		for s.slots[i] != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = slot
	}
}

// openSearchRecord decodes a record; nil when it is not one this version
// reads.
func openSearchRecord(b []byte) *searchRecord {
	if len(b) < 2 || (b[0] != searchRecordVersion && b[0] != searchRecordDigitFree) {
		return nil
	}
	r := &searchRecord{noWords: b[1]&recordNoWords != 0, digitFree: b[0] == searchRecordDigitFree}
	b = b[2:]
	var parts [3][]byte
	for i := range parts {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil
		}
		parts[i] = b[k : k+int(n)]
		b = b[k+int(n):]
	}
	if len(b) != 0 {
		return nil
	}
	r.header = bytes.Clone(parts[0])
	r.body, r.text = string(parts[1]), string(parts[2])
	return r
}

// contains answers a BODY key (withHeaders false) or a TEXT key with a
// lower-cased needle from the record; decided is false when the record
// cannot tell and the message must be read.
func (r *searchRecord) contains(needle string, withHeaders bool) (found, decided bool) {
	if needle == "" {
		return true, true
	}
	if r.noWords || (r.digitFree && hasDigit(needle)) {
		return false, false
	}
	in := func(w string) bool {
		return strings.Contains(r.body, w) || (withHeaders && strings.Contains(r.text, w))
	}
	if !strings.ContainsAny(needle, wordSeparators) {
		return in(needle), true
	}
	for _, w := range strings.FieldsFunc(needle, func(r rune) bool { return strings.ContainsRune(wordSeparators, r) }) {
		if !in(w) {
			return false, true
		}
	}
	return false, false
}

// size estimates the memory an opened record holds, with what it may
// derive from its header later: the envelope, sort and search forms
// (once more the header, at most) and the parsed fields FETCH writes
// from (once more again).
func (r *searchRecord) size() int64 {
	return int64(3*len(r.header)+len(r.body)+len(r.text)) + 512
}
