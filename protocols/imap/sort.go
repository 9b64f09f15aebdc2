package imap

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-message/mail"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// SORT (RFC 5256) and ESORT (RFC 5267), run by the front on the
// session's selected mailbox: the library has no SORT. The front runs
// commands one at a time, so between two of the library's commands the
// session is idle and its view is the front's to read; session.frontRun
// also holds the session's IDLE lock, which keeps Close and Idle out.
// The search keys are read by searchkeys.go and matched by search.go,
// exactly as SEARCH matches them; the sort keys come from the stored
// header, read once per matching message.

// sortKey is one sort criterion.
type sortKey struct {
	name    string // ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, DISPLAYFROM, DISPLAYTO
	reverse bool
}

// sortCommand is a parsed SORT or UID SORT.
type sortCommand struct {
	uid      bool
	keys     []sortKey
	criteria *imap.SearchCriteria
	// esort is set when RETURN was given: the answer is ESEARCH with
	// the options below (RETURN () means ALL; a PARTIAL page is cut in
	// sort order, RFC 5267 section 4.4).
	esort bool
	returnOptions
	charsetKnown bool
}

// returnOptions are the RETURN options of SEARCH (RFC 4731, SAVE of RFC
// 5182) and SORT (RFC 5267), PARTIAL of RFC 9394 included.
type returnOptions struct {
	retMin, retMax, retAll, retCount, retSave bool
	// partial is RETURN (PARTIAL range), or nil.
	partial *partialRange
}

// parseReturnOptions reads the options inside RETURN's list; SAVE is
// taken only where save says so. An empty list means ALL.
func parseReturnOptions(opts []imapwire.Token, save bool) (returnOptions, error) {
	var r returnOptions
	for k := 0; k < len(opts); k++ {
		o := opts[k]
		if o.Kind != imapwire.KindAtom {
			return r, errSearchSyntax("Invalid RETURN option")
		}
		switch strings.ToUpper(string(o.Value)) {
		case "PARTIAL":
			if r.partial != nil || k+1 >= len(opts) {
				return r, errSearchSyntax("PARTIAL takes one range, once")
			}
			pr, err := parsePartialRange(opts[k+1])
			if err != nil {
				return r, err
			}
			r.partial = &pr
			k++
		case "MIN":
			r.retMin = true
		case "MAX":
			r.retMax = true
		case "ALL":
			r.retAll = true
		case "COUNT":
			r.retCount = true
		case "SAVE":
			if !save {
				return r, errSearchSyntax("Unknown RETURN option")
			}
			r.retSave = true
		default:
			return r, errSearchSyntax("Unknown RETURN option")
		}
	}
	if len(opts) == 0 {
		r.retAll = true
	}
	if r.partial != nil && r.retAll {
		// RFC 9394 section 3.1: one PARTIAL or one ALL.
		return r, errSearchSyntax("PARTIAL and ALL cannot be combined")
	}
	return r, nil
}

// sortCharsets are the charsets SORT accepts (RFC 5256 section 3: at
// least US-ASCII and UTF-8).
const sortCharsets = "(UTF-8 US-ASCII)"

// parseSort reads SORT's arguments: [RETURN (options)] (criteria)
// charset search-keys.
func parseSort(cmd *imapwire.Command) (*sortCommand, error) {
	sc := &sortCommand{uid: cmd.Name == "UID SORT"}
	toks := cmd.Args
	i := 0
	list := func(what string) ([]imapwire.Token, error) {
		if i >= len(toks) || toks[i].Kind != imapwire.KindOpen {
			return nil, errSearchSyntax(what + " list expected")
		}
		depth := toks[i].Depth
		start := i + 1
		for j := start; j < len(toks); j++ {
			if toks[j].Kind == imapwire.KindClose && toks[j].Depth == depth {
				i = j + 1
				return toks[start:j], nil
			}
		}
		return nil, errSearchSyntax("Unbalanced parentheses")
	}
	if i < len(toks) && toks[i].Kind == imapwire.KindAtom && strings.EqualFold(string(toks[i].Value), "RETURN") {
		i++
		opts, err := list("RETURN option")
		if err != nil {
			return nil, err
		}
		sc.esort = true
		if sc.returnOptions, err = parseReturnOptions(opts, false); err != nil {
			return nil, err
		}
	}
	crit, err := list("Sort criteria")
	if err != nil {
		return nil, err
	}
	reverse := false
	for _, t := range crit {
		if t.Kind != imapwire.KindAtom {
			return nil, errSearchSyntax("Invalid sort criterion")
		}
		name := strings.ToUpper(string(t.Value))
		switch name {
		case "REVERSE":
			if reverse {
				return nil, errSearchSyntax("REVERSE twice")
			}
			reverse = true
			continue
		case "ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO":
		default:
			return nil, errSearchSyntax("Unknown sort criterion")
		}
		sc.keys = append(sc.keys, sortKey{name: name, reverse: reverse})
		reverse = false
	}
	if reverse || len(sc.keys) == 0 {
		return nil, errSearchSyntax("Sort criterion expected")
	}
	if i >= len(toks) || !toks[i].IsString() || toks[i].Depth != 0 {
		return nil, errSearchSyntax("Charset expected")
	}
	switch strings.ToUpper(string(toks[i].Value)) {
	case "UTF-8", "US-ASCII":
		sc.charsetKnown = true
	}
	i++
	if sc.criteria, err = parseSearchKeys(toks[i:]); err != nil {
		return nil, err
	}
	return sc, nil
}

// sortEntry is one matching message with the sort keys SORT asked for.
type sortEntry struct {
	seq              uint32
	uid              schema.UID
	modSeq           uint64
	size             uint64
	arrival, date    time.Time
	from, to, cc     string
	dispFrom, dispTo string
	subject          string
}

// needsHeader reports whether a key is read from the header.
func (k sortKey) needsHeader() bool {
	switch k.name {
	case "ARRIVAL", "SIZE":
		return false
	}
	return true
}

// runSort matches and sorts; the result is in sort order, lost as
// matchEach says.
func (s *session) runSort(v *view, sc *sortCommand) ([]sortEntry, bool, error) {
	header := false
	for _, k := range sc.keys {
		header = header || k.needsHeader()
	}
	var entries []sortEntry
	lost, err := s.matchEach(v, sc.criteria, func(sm *searchMsg) error {
		e := sortEntry{seq: sm.seq, uid: sm.m.info.UID, size: sm.m.info.Size, arrival: sm.m.info.InternalDate, modSeq: sm.m.info.ModSeq}
		if header {
			if rec := sm.headerRecord(); rec != nil {
				rec.sortFields(&e)
			} else if h := sm.loadHeader(); h != nil {
				e.fill(h)
			} else {
				return nil // sm.err says why
			}
			if e.date.IsZero() {
				// RFC 5256 section 3: no valid Date, the internal date.
				e.date = e.arrival
			}
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	sort.SliceStable(entries, func(i, j int) bool {
		a, b := &entries[i], &entries[j]
		for _, k := range sc.keys {
			c := compareSortKey(k.name, a, b)
			if k.reverse {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		// Ties: sequence order (RFC 5256 section 3); the input is in it.
		return false
	})
	return entries, lost, nil
}

// fill reads the header-based sort keys.
func (e *sortEntry) fill(h *mail.Header) {
	env := envelopeOfHeader(h.Header.Header)
	e.date = env.Date.UTC()
	if env.Date.IsZero() {
		e.date = time.Time{}
	}
	e.subject = asciiCasemap(baseSubject(env.Subject))
	from, to, cc := firstAddress(env.From), firstAddress(env.To), firstAddress(env.Cc)
	e.from, e.to, e.cc = asciiCasemap(from.Mailbox), asciiCasemap(to.Mailbox), asciiCasemap(cc.Mailbox)
	e.dispFrom, e.dispTo = asciiCasemap(displayName(from)), asciiCasemap(displayName(to))
}

// asciiCasemap is the sort key of the i;ascii-casemap collation SORT and
// THREAD compare with (RFC 5256 section 2.1, RFC 4790 section 9.2):
// a-z become A-Z and every other octet stays, so the keys compare as
// octets. Lower-casing instead would put "[", "\", "]", "^", "_" and "`"
// before the letters rather than after them.
func asciiCasemap(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'a' <= c && c <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// firstAddress is the first address of an ENVELOPE list, which RFC 5256
// section 3 sorts FROM, TO and CC by: for a list that starts with a
// group, its start marker, whose addr-mailbox is the group's name.
func firstAddress(list []imap.Address) imap.Address {
	if len(list) == 0 {
		return imap.Address{}
	}
	return list[0]
}

// displayName is RFC 5957's display name of an address: its decoded
// phrase, or without one the address itself; for a group start marker
// (no host) its addr-mailbox, the group's name, and for an address
// written without a domain its mailbox alone.
func displayName(a imap.Address) string {
	if n := strings.TrimSpace(a.Name); n != "" {
		return n
	}
	if a.Host == "" || a.Host == missingDomain {
		return a.Mailbox
	}
	return a.Mailbox + "@" + a.Host
}

func compareSortKey(name string, a, b *sortEntry) int {
	switch name {
	case "ARRIVAL":
		return a.arrival.Compare(b.arrival)
	case "DATE":
		return a.date.Compare(b.date)
	case "SIZE":
		switch {
		case a.size < b.size:
			return -1
		case a.size > b.size:
			return 1
		}
		return 0
	case "FROM":
		return strings.Compare(a.from, b.from)
	case "TO":
		return strings.Compare(a.to, b.to)
	case "CC":
		return strings.Compare(a.cc, b.cc)
	case "DISPLAYFROM":
		return strings.Compare(a.dispFrom, b.dispFrom)
	case "DISPLAYTO":
		return strings.Compare(a.dispTo, b.dispTo)
	case "SUBJECT":
		return strings.Compare(a.subject, b.subject)
	}
	return 0
}

// baseSubject extracts the base subject (RFC 5256 section 2.1) from a
// decoded subject: white space compressed, then "(fwd)" trailers,
// "Re:", "Fw:", "Fwd:" leaders and "[blob]"s removed, and "[fwd: ...]"
// unwrapped, until nothing changes.
func baseSubject(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	for {
		// (2) trailers.
		for {
			t := strings.TrimRight(s, " ")
			if len(t) >= 5 && strings.EqualFold(t[len(t)-5:], "(fwd)") {
				s = t[:len(t)-5]
				continue
			}
			s = t
			break
		}
		// (3)-(5) leaders and blobs.
		for {
			if r, ok := cutSubjLeader(s); ok {
				s = r
				continue
			}
			if r, ok := cutSubjBlob(s); ok && r != "" {
				s = r
				continue
			}
			break
		}
		// (6) "[fwd:" subject "]".
		if len(s) >= 6 && strings.EqualFold(s[:5], "[fwd:") && s[len(s)-1] == ']' {
			s = s[5 : len(s)-1]
			continue
		}
		return s
	}
}

// cutSubjBlob removes one subj-blob ("[" *BLOBCHAR "]" *WSP) from the
// start of s.
func cutSubjBlob(s string) (string, bool) {
	if !strings.HasPrefix(s, "[") {
		return s, false
	}
	end := strings.IndexAny(s[1:], "[]")
	if end < 0 || s[1+end] != ']' {
		return s, false
	}
	return strings.TrimLeft(s[end+2:], " "), true
}

// cutSubjLeader removes one subj-leader ((*subj-blob subj-refwd) / WSP)
// from the start of s.
func cutSubjLeader(s string) (string, bool) {
	if strings.HasPrefix(s, " ") {
		return s[1:], true
	}
	r := s
	for {
		n, ok := cutSubjBlob(r)
		if !ok {
			break
		}
		r = n
	}
	lower := strings.ToLower(r)
	switch {
	case strings.HasPrefix(lower, "re"):
		r = r[2:]
	case strings.HasPrefix(lower, "fwd"):
		r = r[3:]
	case strings.HasPrefix(lower, "fw"):
		r = r[2:]
	default:
		return s, false
	}
	r = strings.TrimLeft(r, " ")
	if n, ok := cutSubjBlob(r); ok {
		r = n
	}
	if !strings.HasPrefix(r, ":") {
		return s, false
	}
	return r[1:], true
}

// sortResponse writes the untagged answer: "* SORT ..." or, for ESORT,
// "* ESEARCH (TAG ...) ...".
func sortResponse(tag string, sc *sortCommand, entries []sortEntry) string {
	nums := make([]uint32, len(entries))
	for i, e := range entries {
		nums[i] = e.seq
		if sc.uid {
			nums[i] = uint32(e.uid)
		}
	}
	// RFC 7162 section 3.1.5: with a MODSEQ key, the highest MODSEQ
	// of the result.
	var top uint64
	if hasModSeqKey(sc.criteria) {
		for _, e := range entries {
			top = max(top, e.modSeq)
		}
	}
	var b bytes.Buffer
	if !sc.esort {
		b.WriteString("* SORT")
		for _, n := range nums {
			b.WriteByte(' ')
			b.WriteString(strconv.FormatUint(uint64(n), 10))
		}
		if top > 0 {
			fmt.Fprintf(&b, " (MODSEQ %d)", top)
		}
		return b.String()
	}
	b.WriteString(`* ESEARCH (TAG "`)
	b.WriteString(tag)
	b.WriteString(`")`)
	if sc.uid {
		b.WriteString(" UID")
	}
	// RFC 5267 section 3.2: MIN and MAX are the first and last in sort
	// order, ALL is in sort order.
	if sc.retMin && len(nums) > 0 {
		fmt.Fprintf(&b, " MIN %d", nums[0])
	}
	if sc.retMax && len(nums) > 0 {
		fmt.Fprintf(&b, " MAX %d", nums[len(nums)-1])
	}
	if sc.retCount {
		fmt.Fprintf(&b, " COUNT %d", len(nums))
	}
	if sc.retAll && len(nums) > 0 {
		b.WriteString(" ALL ")
		b.WriteString(orderedSet(nums))
	}
	if sc.partial != nil {
		b.WriteString(partialData(*sc.partial, pick(*sc.partial, nums)))
	}
	if top > 0 && len(entries) > 0 {
		modSeqs := make([]uint64, len(entries))
		for i, e := range entries {
			modSeqs[i] = e.modSeq
		}
		fmt.Fprintf(&b, " MODSEQ %d", esearchModSeq(sc.retMin, sc.retMax, sc.retAll || sc.retCount || sc.partial != nil, modSeqs, top))
	}
	return b.String()
}

// orderedSet writes numbers as a sequence set in their order, ascending
// runs as ranges.
func orderedSet(nums []uint32) string {
	var b strings.Builder
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(nums[i]), 10))
		if j > i {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(nums[j]), 10))
		}
		i = j + 1
	}
	return b.String()
}

// errNotSelected is the answer to SORT outside the selected state.
var errNotSelected = &imap.Error{Type: imap.StatusResponseTypeBad, Text: "No mailbox selected"}

// withView runs fn with the selected mailbox's view, for a command the
// front answers itself while the library is idle (SORT, THREAD).
func (s *session) withView(fn func(v *view) error) error {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if s.closed || s.acct == nil || s.view == nil {
		return errNotSelected
	}
	return fn(s.view)
}

// selected is the session of a front connection with a mailbox, or nil.
func (f *frontConn) selected() *session {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sess
}

// failedStatus is the tagged status text of a front command that failed
// with err: its IMAP answer, or a temporary failure.
func failedStatus(err error) string {
	var ie *imap.Error
	if !errors.As(err, &ie) {
		ie = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Temporary failure, try again later"}
	}
	st := string(ie.Type)
	if ie.Code != "" {
		st += " [" + string(ie.Code) + "]"
	}
	return st + " " + ie.Text
}

// answerer returns what ends a command the front runs itself: its
// tagged status line, written and observed (command metrics and log).
func (f *frontConn) answerer(cmd *imapwire.Command) func(status string) bool {
	start := time.Now()
	return func(status string) bool {
		f.observe(cmd.Name, strings.HasPrefix(status, "OK"), start)
		return f.writeLine(cmd.Tag+" "+status) == nil
	}
}

// searchSession checks what SEARCH, SORT and THREAD run by the front
// need: a charset they know and a selected mailbox. It returns the
// session, or nil once it has refused the command (ok: the answer was
// written).
func (f *frontConn) searchSession(charsetKnown bool, answer func(string) bool) (sess *session, ok bool) {
	if !charsetKnown {
		return nil, answer("NO [BADCHARSET " + sortCharsets + "] Unsupported charset")
	}
	if sess = f.selected(); sess == nil {
		return nil, answer("BAD No mailbox selected")
	}
	return sess, true
}

// sort answers SORT and UID SORT.
func (f *frontConn) sort(cmd *imapwire.Command) bool {
	answer := f.answerer(cmd)
	sc, err := parseSort(cmd)
	if err != nil {
		return answer("BAD [CLIENTBUG] " + err.Error())
	}
	sess, ok := f.searchSession(sc.charsetKnown, answer)
	if sess == nil {
		return ok
	}
	var entries []sortEntry
	var lost bool
	err = sess.withView(func(v *view) (err error) {
		entries, lost, err = sess.runSort(v, sc)
		return err
	})
	if err != nil {
		return answer(failedStatus(err))
	}
	if err := f.writeLine(sortResponse(cmd.Tag, sc, entries)); err != nil {
		return false
	}
	return answer(okStatus("Sort completed", lost))
}
