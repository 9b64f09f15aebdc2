package imap

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The front's part of the commands with CONDSTORE and QRESYNC
// arguments (condstore.go): what it forwards, and what it answers alone.

// prepareExt takes the CONDSTORE and QRESYNC arguments out of SELECT,
// EXAMINE, FETCH and STORE and returns the command to forward. Those
// arguments are CONDSTORE enabling (RFC 7162 section 3.1) and are
// handed to the session for the command.
func (f *frontConn) prepareExt(cmd *imapwire.Command) ([]byte, *imapwire.Error) {
	bad := func(err error) ([]byte, *imapwire.Error) {
		return nil, &imapwire.Error{Tag: cmd.Tag, Text: err.Error()}
	}
	var ext cmdExt
	wire := cmd.Wire
	switch cmd.Name {
	case "SELECT", "EXAMINE":
		se, err := parseSelectExt(cmd.Args)
		if err != nil {
			return bad(err)
		}
		if se.qresync != nil && !f.qresyncOn() {
			// RFC 7162 section 3.2.5.
			return bad(errExt("QRESYNC is not enabled"))
		}
		if se.cutEnd > 0 {
			wire = imapwire.Cut(wire, se.cutStart, se.cutEnd)
		}
		if se.condstore {
			f.enableCondstore()
		}
		ext.qresync = se.qresync
	case "FETCH", "UID FETCH":
		fe, err := parseFetchExt(cmd)
		if err != nil {
			return bad(err)
		}
		if fe.vanished && (cmd.Name != "UID FETCH" || !fe.hasChangedSince || !f.qresyncOn()) {
			// RFC 7162 section 3.2.6.
			return bad(errExt("VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled"))
		}
		if fe.modSeq || fe.hasChangedSince {
			f.enableCondstore()
		}
		wire = fe.wire
		if fe.partial != nil {
			if cmd.Name != "UID FETCH" {
				// RFC 9394 section 3.3: a modifier of UID FETCH.
				return bad(errExt("PARTIAL needs UID FETCH"))
			}
			set, err := f.fetchPartialSet(string(cmd.Args[0].Value), fe)
			if err != nil {
				return nil, &imapwire.Error{Tag: cmd.Tag, No: true, Code: "UNAVAILABLE", Text: "Temporary failure, try again later"}
			}
			// The set is the first argument: the cuts and
			// replacements above all lie after it.
			t := cmd.Args[0]
			wire = append(append(append([]byte(nil), wire[:t.Start]...), set...), wire[t.End:]...)
		}
		ext.changedSince, ext.hasChangedSince = fe.changedSince, fe.hasChangedSince
		ext.binaryOffsets = fe.binaryOffsets
		ext.fetchModSeq = fe.modSeq || fe.hasChangedSince
		if fe.vanished {
			if !f.vanishedEarlier(cmd) {
				return nil, nil
			}
		}
	case "LIST":
		if cuts := listStatusModSeq(cmd.Args); len(cuts) > 0 {
			for k := len(cuts) - 1; k >= 0; k-- {
				wire = imapwire.Cut(wire, cuts[k][0], cuts[k][1])
			}
			f.enableCondstore()
			ext.listHighestModSeq = true
		}
	case "STORE", "UID STORE":
		since, has, cs, ce, err := parseStoreExt(cmd.Args)
		if err != nil {
			return bad(err)
		}
		if has {
			wire = imapwire.Cut(wire, cs, ce)
			f.enableCondstore()
			ext.unchangedSince, ext.hasUnchangedSince = since, true
		}
	}
	f.setExt(ext)
	return wire, nil
}

// vanishedEarlier writes UID FETCH's VANISHED (EARLIER) response (RFC
// 7162 section 3.2.6) before the library answers the FETCH: the UIDs of
// the set that no longer exist. False means the connection failed.
func (f *frontConn) vanishedEarlier(cmd *imapwire.Command) bool {
	sess := f.selected()
	if sess == nil {
		return true // the library answers: not selected
	}
	set := string(cmd.Args[0].Value)
	var gone rangeSet
	err := sess.withView(func(v *view) error {
		v.drain()
		rs, err := v.uidRanges(set)
		if err != nil {
			return err
		}
		gone = v.vanishedIn(rs)
		return nil
	})
	if err != nil || len(gone) == 0 {
		return true // the library answers a bad set
	}
	for _, l := range vanishedEarlierLines(gone) {
		if f.writeLine(l) != nil {
			return false
		}
	}
	return true
}

// maxVanishedLine bounds the set of one VANISHED (EARLIER) response
// (RFC 7162 section 4 recommends lines of at most 8192 octets); a longer
// set goes out in several responses.
const maxVanishedLine = 8000

// vanishedEarlierLines writes a set of vanished UIDs as VANISHED
// (EARLIER) responses.
func vanishedEarlierLines(gone rangeSet) []string {
	var lines []string
	for len(gone) > 0 {
		n, size := 0, 0
		for n < len(gone) && (n == 0 || size+22 <= maxVanishedLine) {
			size += len(gone[n:n+1].wire()) + 1
			n++
		}
		lines = append(lines, "* VANISHED (EARLIER) "+gone[:n].wire())
		gone = gone[n:]
	}
	return lines
}

// wire writes the set in IMAP's sequence-set form.
func (rs rangeSet) wire() string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(r.lo), 10))
		if r.hi != r.lo {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(r.hi), 10))
		}
	}
	return b.String()
}

// enable answers ENABLE when it names CONDSTORE or QRESYNC (RFC 5161,
// RFC 7162 section 3.2.3: QRESYNC implies CONDSTORE). The other
// capabilities go to the library, whose ENABLED line the relay extends:
// answered false means forward wire; alive false ends the connection.
func (f *frontConn) enable(cmd *imapwire.Command) (wire []byte, answered, alive bool) {
	var ours []string
	var cuts [][2]int
	for _, t := range cmd.Args {
		if isAtom(t, "CONDSTORE") || isAtom(t, "QRESYNC") {
			ours = append(ours, strings.ToUpper(string(t.Value)))
			cuts = append(cuts, [2]int{t.Start, t.End})
		}
	}
	if len(ours) == 0 {
		return cmd.Wire, false, true
	}
	if len(cuts) == len(topArgs(cmd.Args)) {
		// Answered here: rated here (a forwarded one is rated by the
		// library's session).
		if ok, alive := f.rated(cmd.Tag); !ok {
			return nil, true, alive
		}
	}
	f.mu.Lock()
	authed := f.authenticated
	f.mu.Unlock()
	if !authed {
		// RFC 5161: after authentication (in the selected state too,
		// as the library allows for the others).
		return nil, true, f.writeLine(cmd.Tag+" BAD ENABLE is only valid in the authenticated state") == nil
	}
	f.enableCondstore()
	f.mu.Lock()
	for _, c := range ours {
		if c == "QRESYNC" {
			f.cs.qresync = true
		}
	}
	f.mu.Unlock()
	if len(cuts) < len(topArgs(cmd.Args)) {
		wire = cmd.Wire
		for k := len(cuts) - 1; k >= 0; k-- {
			wire = imapwire.Cut(wire, cuts[k][0], cuts[k][1])
		}
		f.mu.Lock()
		f.cs.enabled = ours
		f.mu.Unlock()
		return wire, false, true
	}
	start := time.Now()
	err := f.writeLine("* ENABLED " + strings.Join(ours, " "))
	if err == nil {
		err = f.writeLine(cmd.Tag + " OK ENABLE completed")
	}
	f.observe("ENABLE", err == nil, start)
	return nil, true, err == nil
}

// status answers STATUS when it asks for HIGHESTMODSEQ (RFC 7162
// section 3.1.2.2), which the library cannot parse.
func (f *frontConn) status(cmd *imapwire.Command) bool {
	start := time.Now()
	answer := func(status string) bool {
		f.observe("STATUS", strings.HasPrefix(status, "OK"), start)
		return f.writeLine(cmd.Tag+" "+status) == nil
	}
	top := topArgs(cmd.Args)
	if len(top) != 2 || !top[0].IsString() || top[1].Kind != imapwire.KindOpen || listEnd(cmd.Args, 1) != len(cmd.Args)-1 {
		return answer("BAD [CLIENTBUG] STATUS takes a mailbox and a list of items")
	}
	sess := f.selected()
	f.mu.Lock()
	authed := f.authenticated
	f.mu.Unlock()
	if sess == nil || !authed {
		return answer("BAD Not authenticated")
	}
	opts := &imap.StatusOptions{}
	var items []string
	for _, t := range cmd.Args[2 : len(cmd.Args)-1] {
		if t.Kind != imapwire.KindAtom {
			return answer("BAD [CLIENTBUG] Invalid STATUS item")
		}
		item := strings.ToUpper(string(t.Value))
		switch item {
		case "MESSAGES":
			opts.NumMessages = true
		case "UIDNEXT":
			opts.UIDNext = true
		case "UIDVALIDITY":
			opts.UIDValidity = true
		case "UNSEEN":
			opts.NumUnseen = true
		case "DELETED":
			opts.NumDeleted = true
		case "SIZE":
			opts.Size = true
		case "RECENT":
			opts.NumRecent = true
		case "DELETED-STORAGE":
			opts.DeletedStorage = true
		case "APPENDLIMIT":
			opts.AppendLimit = true
		case "HIGHESTMODSEQ":
			opts.HighestModSeq = true
		default:
			return answer("BAD [CLIENTBUG] Unknown STATUS item")
		}
		items = append(items, item)
	}
	f.enableCondstore()
	raw := cmd.Args[0].Value
	name, err := f.decodeName(raw)
	if err != nil {
		return answer("BAD [CLIENTBUG] Mailbox name " + imapwire.Reason(err))
	}
	data, err := sess.Status(name, opts)
	if err != nil {
		return answer(failedStatus(err))
	}
	var b strings.Builder
	b.WriteString("* STATUS ")
	b.WriteString(f.quoteName(raw))
	b.WriteString(" (")
	for i, item := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		var n uint64
		switch item {
		case "MESSAGES":
			n = uint64(*data.NumMessages)
		case "UIDNEXT":
			n = uint64(data.UIDNext)
		case "UIDVALIDITY":
			n = uint64(data.UIDValidity)
		case "UNSEEN":
			n = uint64(*data.NumUnseen)
		case "DELETED":
			n = uint64(*data.NumDeleted)
		case "SIZE":
			n = uint64(*data.Size)
		case "RECENT":
			n = uint64(*data.NumRecent)
		case "DELETED-STORAGE":
			n = uint64(*data.DeletedStorage)
		case "APPENDLIMIT":
			n = uint64(*data.AppendLimit)
		case "HIGHESTMODSEQ":
			n = data.HighestModSeq
		}
		fmt.Fprintf(&b, "%s %d", item, n)
	}
	b.WriteByte(')')
	if err := f.writeLine(b.String()); err != nil {
		return false
	}
	return answer("OK STATUS completed")
}

// quoted writes a string as an IMAP quoted string, or as a literal when
// it holds bytes a quoted string cannot (8-bit, as a UTF-8 name may).
func quoted(s []byte) string {
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return "{" + strconv.Itoa(len(s)) + "}\r\n" + string(s)
		}
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// searchCommand is a parsed SEARCH or UID SEARCH.
type searchCommand struct {
	uid     bool
	esearch bool
	returnOptions
	charsetKnown bool
	criteria     *imap.SearchCriteria
	smaller      []smallerKey
}

// parseSearch reads SEARCH's arguments: [RETURN (options)] [CHARSET
// charset] search-keys.
func parseSearch(cmd *imapwire.Command) (*searchCommand, error) {
	sc := &searchCommand{uid: cmd.Name == "UID SEARCH", charsetKnown: true}
	toks := cmd.Args
	i := 0
	if i < len(toks) && isAtom(toks[i], "RETURN") {
		if i+1 >= len(toks) || toks[i+1].Kind != imapwire.KindOpen {
			return nil, errSearchSyntax("RETURN takes a list")
		}
		end := listEnd(toks, i+1)
		if end < 0 {
			return nil, errSearchSyntax("Unbalanced parentheses")
		}
		sc.esearch = true
		var err error
		if sc.returnOptions, err = parseReturnOptions(toks[i+2:end], true); err != nil {
			return nil, err
		}
		i = end + 1
	}
	if i < len(toks) && isAtom(toks[i], "CHARSET") {
		if i+1 >= len(toks) || !toks[i+1].IsString() {
			return nil, errSearchSyntax("CHARSET takes a name")
		}
		switch strings.ToUpper(string(toks[i+1].Value)) {
		case "UTF-8", "US-ASCII":
		default:
			sc.charsetKnown = false
		}
		i += 2
	}
	var err error
	if sc.criteria, sc.smaller, err = readSearchKeys(toks[i:]); err != nil {
		return nil, err
	}
	return sc, nil
}

// hasModSeqKey reports whether criteria hold a MODSEQ key, at any depth.
func hasModSeqKey(c *imap.SearchCriteria) bool {
	if c == nil {
		return false
	}
	if c.ModSeq != nil {
		return true
	}
	for i := range c.Not {
		if hasModSeqKey(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if hasModSeqKey(&c.Or[i][0]) || hasModSeqKey(&c.Or[i][1]) {
			return true
		}
	}
	return false
}

// search answers SEARCH and UID SEARCH with a MODSEQ key (RFC 7162
// section 3.1.5) or a PARTIAL return option (RFC 9394), which the
// library cannot parse: with MODSEQ the result carries the highest
// MODSEQ of the messages found.
func (f *frontConn) search(cmd *imapwire.Command) bool {
	answer := f.answerer(cmd)
	sc, err := parseSearch(cmd)
	if err != nil {
		return answer("BAD [CLIENTBUG] " + err.Error())
	}
	sess, ok := f.searchSession(sc.charsetKnown, answer)
	if sess == nil {
		return ok
	}
	withModSeq := hasModSeqKey(sc.criteria)
	if withModSeq {
		f.enableCondstore()
	}
	var nums []uint32
	var uids []schema.UID
	var modSeqs []uint64
	var top uint64
	var lost bool
	err = sess.withView(func(v *view) error {
		var err error
		lost, err = sess.matchEach(v, sc.criteria, func(sm *searchMsg) error {
			uids = append(uids, sm.m.info.UID)
			n := sm.seq
			if sc.uid {
				n = uint32(sm.m.info.UID)
			}
			nums = append(nums, n)
			modSeqs = append(modSeqs, sm.m.info.ModSeq)
			top = max(top, sm.m.info.ModSeq)
			return nil
		})
		if sc.retSave {
			v.saveSearch(err, uids, sc.partial, sc.retMin, sc.retMax, sc.retAll || sc.retCount)
		}
		return err
	})
	if err != nil {
		return answer(failedStatus(err))
	}
	var b strings.Builder
	if !sc.esearch {
		b.WriteString("* SEARCH")
		for _, n := range nums {
			b.WriteByte(' ')
			b.WriteString(strconv.FormatUint(uint64(n), 10))
		}
		if len(nums) > 0 && withModSeq {
			fmt.Fprintf(&b, " (MODSEQ %d)", top)
		}
	} else {
		b.WriteString(`* ESEARCH (TAG "` + cmd.Tag + `")`)
		if sc.uid {
			b.WriteString(" UID")
		}
		if sc.retMin && len(nums) > 0 {
			fmt.Fprintf(&b, " MIN %d", nums[0])
		}
		if sc.retMax && len(nums) > 0 {
			fmt.Fprintf(&b, " MAX %d", nums[len(nums)-1])
		}
		if sc.retAll && len(nums) > 0 {
			b.WriteString(" ALL " + orderedSet(nums))
		}
		if sc.retCount {
			fmt.Fprintf(&b, " COUNT %d", len(nums))
		}
		if sc.partial != nil {
			b.WriteString(partialData(*sc.partial, pick(*sc.partial, nums)))
		}
		if len(nums) > 0 && withModSeq && (sc.retMin || sc.retMax || sc.retAll || sc.retCount || sc.partial != nil) {
			fmt.Fprintf(&b, " MODSEQ %d", esearchModSeq(sc.retMin, sc.retMax, sc.retAll || sc.retCount || sc.partial != nil, modSeqs, top))
		}
	}
	if sc.esearch && !(sc.retMin || sc.retMax || sc.retAll || sc.retCount || sc.partial != nil) {
		// RETURN (SAVE) alone: no ESEARCH response (RFC 5182 section 2.1).
	} else if err := f.writeLine(b.String()); err != nil {
		return false
	}
	return answer(okStatus("SEARCH completed", lost))
}

// esearchModSeq is the MODSEQ result option of an ESEARCH answer (RFC
// 7162 section 3.1.5): with MIN or MAX and no option that reports every
// match (ALL, COUNT, PARTIAL here), the MODSEQ of the message MIN or MAX
// names, the higher of the two with both; otherwise top, the highest of
// all the matches. modSeqs are the matches' in the answer's order, so
// MIN is the first and MAX the last; they are not empty.
func esearchModSeq(retMin, retMax, retEvery bool, modSeqs []uint64, top uint64) uint64 {
	if retEvery || !(retMin || retMax) {
		return top
	}
	var ms uint64
	if retMin {
		ms = modSeqs[0]
	}
	if retMax {
		ms = max(ms, modSeqs[len(modSeqs)-1])
	}
	return ms
}
