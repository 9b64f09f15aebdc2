package imap

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// CONDSTORE and QRESYNC (RFC 7162). The library has neither: it rejects
// their arguments and cannot write MODSEQ, HIGHESTMODSEQ or VANISHED. The
// front lifts that in three ways (docs/architecture.md, "The front"):
//
//   - It reads the extensions' arguments itself (SELECT's CONDSTORE and
//     QRESYNC parameters, FETCH's MODSEQ item and CHANGEDSINCE and
//     VANISHED modifiers, STORE's UNCHANGEDSINCE), forwards the command
//     without them, and hands them to the session for that one command
//     (cmdExt), which acts on them: the library runs one command at a
//     time, so the session reads the front's state between two of them.
//   - The session writes FETCH and EXPUNGE responses through the
//     library, as before, and notes for each the MODSEQ (or, once
//     QRESYNC is on, the UID) the relay puts in: "* 3 FETCH (" becomes
//     "* 3 FETCH (MODSEQ (12) ", "* 3 EXPUNGE" becomes "* VANISHED 17".
//     The notes are taken in order; lines without one pass unchanged.
//     Untagged lines of the session's own (HIGHESTMODSEQ, QRESYNC's
//     VANISHED (EARLIER) and FETCH) and a tagged response code
//     (MODIFIED) go out with the command's tagged answer.
//   - It answers alone what the library cannot parse at all: ENABLE
//     CONDSTORE/QRESYNC, STATUS with HIGHESTMODSEQ, SEARCH with a
//     MODSEQ key (the MODSEQ of the result included).
//
// Every message's MODSEQ is kept by the store (it grows with each
// change, expunges included, per mailbox), so HIGHESTMODSEQ is on every
// SELECT and EXAMINE, and NOMODSEQ is never needed. The store keeps no
// record of expunged UIDs: VANISHED (EARLIER) reports every UID of the
// client's known range that no longer exists (RFC 7162 section 3.2.5.1
// allows it).

// cmdExt are the CONDSTORE and QRESYNC arguments of the running command,
// which the front took out before forwarding it.
type cmdExt struct {
	// qresync: SELECT/EXAMINE (QRESYNC (...)).
	qresync *qresyncParams
	// changedSince: FETCH (CHANGEDSINCE n).
	changedSince    uint64
	hasChangedSince bool
	// unchangedSince: STORE (UNCHANGEDSINCE n).
	unchangedSince    uint64
	hasUnchangedSince bool
	// listHighestModSeq: LIST ... RETURN (STATUS (... HIGHESTMODSEQ)).
	listHighestModSeq bool
}

// qresyncParams are the client's known state of a mailbox (RFC 7162
// section 3.2.5).
type qresyncParams struct {
	uidValidity uint32
	modSeq      uint64
	// known are the UIDs the client knows; nil means 1 to UIDNEXT-1.
	known rangeSet
}

// relayNote is what the relay puts into one FETCH, EXPUNGE or STATUS
// response of the library's.
type relayNote struct {
	kind noteKind
	seq  uint32 // the response's sequence number (0 for STATUS)
	val  uint64 // the FETCH's MODSEQ, the expunged UID, the HIGHESTMODSEQ
}

// noteKind says which response a note is for.
type noteKind uint8

const (
	noteFetch   noteKind = iota // MODSEQ into a FETCH
	noteExpunge                 // an EXPUNGE written as VANISHED
	noteStatus                  // HIGHESTMODSEQ into a LIST-STATUS STATUS
)

// condState is the front's CONDSTORE and QRESYNC state of one
// connection; frontConn.mu guards it.
type condState struct {
	condstore, qresync bool
	ext                cmdExt
	notes              []relayNote
	// before are untagged lines written before the running command's
	// tagged answer, code a response code put into it (when OK).
	before []string
	code   string
	// enabled are capabilities added to the library's ENABLED line.
	enabled []string
}

// maxNotes bounds the notes queued for the relay; beyond it (a client
// that does not read while the library writes) the oldest are dropped.
const maxNotes = 1 << 16

func (f *frontConn) condstoreOn() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cs.condstore
}

func (f *frontConn) qresyncOn() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cs.qresync
}

// enableCondstore turns CONDSTORE on: every FETCH response carries
// MODSEQ from now on (RFC 7162 section 3.1). Turned on with a mailbox
// selected, it tells the mailbox's HIGHESTMODSEQ, which the client had
// no reason to keep from SELECT (that of the view's last snapshot: never
// ahead of what the client was told). It runs while the library is
// idle.
func (f *frontConn) enableCondstore() {
	f.mu.Lock()
	was := f.cs.condstore
	f.cs.condstore = true
	sess := f.sess
	f.mu.Unlock()
	if was || sess == nil {
		return
	}
	var n uint64
	if sess.withView(func(v *view) error { n = v.highestModSeq; return nil }) == nil && n > 0 {
		_ = f.writeLine(fmt.Sprintf("* OK [HIGHESTMODSEQ %d] Highest", n))
	}
}

// commandExt returns the running command's extension arguments.
func (f *frontConn) commandExt() cmdExt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cs.ext
}

func (f *frontConn) setExt(e cmdExt) {
	f.mu.Lock()
	f.cs.ext = e
	f.mu.Unlock()
}

func (f *frontConn) note(n relayNote) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.kind == noteExpunge && !f.cs.qresync || n.kind == noteFetch && !f.cs.condstore {
		return
	}
	if len(f.cs.notes) >= maxNotes {
		f.cs.notes = f.cs.notes[1:]
	}
	f.cs.notes = append(f.cs.notes, n)
}

// fetched notes the MODSEQ of a FETCH response the library is about to
// write (viewNotes).
func (f *frontConn) fetched(seq uint32, modSeq uint64) {
	f.note(relayNote{kind: noteFetch, seq: seq, val: modSeq})
}

// expunged notes the UID of an EXPUNGE response the library is about to
// write (viewNotes).
func (f *frontConn) expunged(seq uint32, uid schema.UID) {
	f.note(relayNote{kind: noteExpunge, seq: seq, val: uint64(uid)})
}

// statusWritten notes the HIGHESTMODSEQ of a LIST-STATUS STATUS response
// the library is about to write.
func (f *frontConn) statusWritten(modSeq uint64) {
	f.note(relayNote{kind: noteStatus, val: modSeq})
}

// untaggedBefore queues a line for the running command's tagged answer.
func (f *frontConn) untaggedBefore(line string) {
	f.mu.Lock()
	f.cs.before = append(f.cs.before, line)
	f.mu.Unlock()
}

// taggedCode sets the response code of the running command's tagged OK.
func (f *frontConn) taggedCode(code string) {
	f.mu.Lock()
	f.cs.code = code
	f.mu.Unlock()
}

// takeNote returns the value of the oldest note of a kind for seq,
// dropping it and the older ones of that kind (their lines went by
// without being seen whole, which only a broken connection does).
func (f *frontConn) takeNote(kind noteKind, seq uint32) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, n := range f.cs.notes {
		if n.kind != kind || n.seq != seq {
			continue
		}
		kept := f.cs.notes[:0]
		for j, o := range f.cs.notes {
			if j > i || o.kind != kind {
				kept = append(kept, o)
			}
		}
		f.cs.notes = kept
		return n.val, true
	}
	return 0, false
}

// takeTagged returns and clears what goes with the running command's
// tagged answer; the command's notes are cleared too.
func (f *frontConn) takeTagged() (before []string, code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	before, code = f.cs.before, f.cs.code
	f.cs.before, f.cs.code, f.cs.notes = nil, "", nil
	return before, code
}

// annotate rewrites the start of a library response: MODSEQ into a
// FETCH, VANISHED for an EXPUNGE, as the session noted them.
func (f *frontConn) annotate(frag []byte) []byte {
	if bytes.HasPrefix(frag, []byte("* STATUS ")) {
		return f.annotateStatus(frag)
	}
	if len(frag) < 4 || frag[0] != '*' || frag[1] != ' ' || frag[2] < '0' || frag[2] > '9' {
		return frag
	}
	i := 2
	for i < len(frag) && frag[i] >= '0' && frag[i] <= '9' {
		i++
	}
	n, err := strconv.ParseUint(string(frag[2:i]), 10, 32)
	if err != nil {
		return frag
	}
	seq := uint32(n)
	rest := frag[i:]
	switch {
	case bytes.HasPrefix(rest, []byte(" FETCH (")):
		ms, ok := f.takeNote(noteFetch, seq)
		if !ok {
			return frag
		}
		at := i + len(" FETCH (")
		ins := "MODSEQ (" + strconv.FormatUint(ms, 10) + ")"
		if at < len(frag) && frag[at] != ')' {
			ins += " "
		}
		out := make([]byte, 0, len(frag)+len(ins))
		out = append(out, frag[:at]...)
		out = append(out, ins...)
		return append(out, frag[at:]...)
	case bytes.Equal(bytes.TrimRight(rest, "\r\n"), []byte(" EXPUNGE")):
		uid, ok := f.takeNote(noteExpunge, seq)
		if !ok {
			return frag
		}
		return []byte("* VANISHED " + strconv.FormatUint(uid, 10) + "\r\n")
	}
	return frag
}

// annotateStatus puts HIGHESTMODSEQ into a STATUS response of
// LIST-STATUS: "* STATUS name (MESSAGES 3)" becomes "* STATUS name
// (MESSAGES 3 HIGHESTMODSEQ 9)". A response whose name is a literal
// (never for a name the library can quote) is not seen whole here and
// goes without.
func (f *frontConn) annotateStatus(frag []byte) []byte {
	ms, ok := f.takeNote(noteStatus, 0)
	if !ok {
		return frag
	}
	line := bytes.TrimRight(frag, "\r\n")
	if len(line) == len(frag) || len(line) < 2 || line[len(line)-1] != ')' || line[len(line)-2] == '}' {
		return frag
	}
	ins := "HIGHESTMODSEQ " + strconv.FormatUint(ms, 10)
	if line[len(line)-2] != '(' {
		ins = " " + ins
	}
	out := make([]byte, 0, len(frag)+len(ins))
	out = append(out, line[:len(line)-1]...)
	out = append(out, ins...)
	out = append(out, ')')
	return append(out, frag[len(line):]...)
}

// withTagged adds what the session queued to the running command's
// tagged answer line.
func (f *frontConn) withTagged(line []byte, status string) []byte {
	before, code := f.takeTagged()
	if status != "OK" {
		return line
	}
	if code != "" {
		// "tag OK text" becomes "tag OK [code] text".
		if i := bytes.Index(line, []byte(" OK ")); i >= 0 && !bytes.HasPrefix(line[i+4:], []byte("[")) {
			at := i + 4
			line = append(append(append([]byte(nil), line[:at]...), "["+code+"] "...), line[at:]...)
		}
	}
	if len(before) == 0 {
		return line
	}
	var b bytes.Buffer
	for _, l := range before {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.Write(line)
	return b.Bytes()
}

// withEnabled adds the front's capabilities to the library's ENABLED
// response.
func (f *frontConn) withEnabled(line []byte) []byte {
	f.mu.Lock()
	extra := f.cs.enabled
	f.cs.enabled = nil
	f.mu.Unlock()
	if len(extra) == 0 {
		return line
	}
	body := bytes.TrimRight(line, "\r\n")
	return []byte(string(body) + " " + strings.Join(extra, " ") + "\r\n")
}

// Parsing the extensions' arguments.

// errExt is a malformed extension argument, answered BAD.
type errExt string

func (e errExt) Error() string { return string(e) }

// listEnd returns the index of the token closing the list opened at
// toks[i].
func listEnd(toks []imapwire.Token, i int) int {
	d := toks[i].Depth
	for j := i + 1; j < len(toks); j++ {
		if toks[j].Kind == imapwire.KindClose && toks[j].Depth == d {
			return j
		}
	}
	return -1
}

// isAtom reports whether t is the atom name (case-insensitively).
func isAtom(t imapwire.Token, name string) bool {
	return t.Kind == imapwire.KindAtom && strings.EqualFold(string(t.Value), name)
}

// selectExt is what SELECT and EXAMINE carry after the mailbox name.
type selectExt struct {
	condstore bool
	qresync   *qresyncParams
	// cut is the token range of the parameter list ([0, 0) when none).
	cutStart, cutEnd int
}

// parseSelectExt reads SELECT's parameters (RFC 4466): CONDSTORE and
// QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]]).
func parseSelectExt(toks []imapwire.Token) (*selectExt, error) {
	se := &selectExt{}
	if len(toks) < 2 {
		return se, nil
	}
	if toks[1].Kind != imapwire.KindOpen || toks[1].Depth != 0 {
		return nil, errExt("SELECT takes a mailbox and a parameter list")
	}
	end := listEnd(toks, 1)
	if end != len(toks)-1 {
		return nil, errExt("SELECT takes a mailbox and a parameter list")
	}
	se.cutStart, se.cutEnd = toks[1].Start, toks[end].End
	for i := 2; i < end; i++ {
		t := toks[i]
		switch {
		case isAtom(t, "CONDSTORE"):
			se.condstore = true
		case isAtom(t, "QRESYNC"):
			if se.qresync != nil || i+1 >= end || toks[i+1].Kind != imapwire.KindOpen {
				return nil, errExt("QRESYNC takes one list")
			}
			closeAt := listEnd(toks, i+1)
			q, err := parseQresync(toks[i+2 : closeAt])
			if err != nil {
				return nil, err
			}
			se.qresync = q
			i = closeAt
		default:
			return nil, errExt("Unknown SELECT parameter")
		}
	}
	return se, nil
}

// parseQresync reads QRESYNC's list: uidvalidity mod-sequence-value
// [known-uids [seq-match-data]]. The sequence match data are checked
// but not used: without expunge records, the known UIDs decide.
func parseQresync(toks []imapwire.Token) (*qresyncParams, error) {
	atom := func(i int) (string, bool) {
		if i >= len(toks) || toks[i].Kind != imapwire.KindAtom || toks[i].Depth != toks[0].Depth {
			return "", false
		}
		return string(toks[i].Value), true
	}
	s, ok := atom(0)
	if !ok {
		return nil, errExt("QRESYNC takes a UIDVALIDITY")
	}
	uv, err := parseSeqNumber(s)
	if err != nil || uv == 0 {
		return nil, errExt("Invalid QRESYNC UIDVALIDITY")
	}
	q := &qresyncParams{uidValidity: uv}
	s, ok = atom(1)
	if !ok {
		return nil, errExt("QRESYNC takes a mod-sequence value")
	}
	if q.modSeq, err = parseModSeq(s, false); err != nil {
		return nil, errExt("Invalid QRESYNC mod-sequence value")
	}
	i := 2
	if s, ok := atom(i); ok {
		pairs, err := parseNumSet(s)
		if err != nil || hasStar(pairs) {
			return nil, errExt("Invalid QRESYNC known UIDs")
		}
		q.known = staticRanges(pairs, 0)
		i++
	}
	if i < len(toks) {
		// (known-sequence-set known-uid-set)
		if toks[i].Kind != imapwire.KindOpen || listEnd(toks, i) != len(toks)-1 || len(toks)-i != 4 {
			return nil, errExt("Invalid QRESYNC sequence match data")
		}
		for _, t := range toks[i+1 : i+3] {
			pairs, err := parseNumSet(string(t.Value))
			if t.Kind != imapwire.KindAtom || err != nil || hasStar(pairs) {
				return nil, errExt("Invalid QRESYNC sequence match data")
			}
		}
	}
	return q, nil
}

// hasStar reports whether a parsed set uses "*" (not allowed in
// QRESYNC's sets).
func hasStar(pairs [][2]uint32) bool {
	for _, p := range pairs {
		if p[0] == 0 || p[1] == 0 {
			return true
		}
	}
	return false
}

// fetchExt is what the front takes of a FETCH.
type fetchExt struct {
	modSeq          bool // the MODSEQ item was asked for
	changedSince    uint64
	hasChangedSince bool
	vanished        bool
	// wire is the command to forward.
	wire []byte
}

// parseFetchExt reads FETCH's MODSEQ item and its modifiers (RFC 4466:
// a list after the items): CHANGEDSINCE and VANISHED.
func parseFetchExt(cmd *imapwire.Command) (*fetchExt, error) {
	toks := cmd.Args
	fe := &fetchExt{wire: cmd.Wire}
	if len(toks) < 2 || toks[0].Kind != imapwire.KindAtom {
		return fe, nil // the library answers the syntax error
	}
	// The items: one list, or one item whose section brackets may
	// hold a list (BODY[HEADER.FIELDS (FROM)]).
	var modseqToks []int
	i := 1
	if toks[1].Kind == imapwire.KindOpen {
		end := listEnd(toks, 1)
		if end < 0 {
			return fe, nil
		}
		for j := 2; j < end; j++ {
			if toks[j].Depth == 1 && isAtom(toks[j], "MODSEQ") {
				modseqToks = append(modseqToks, j)
			}
		}
		i = end + 1
	} else {
		if isAtom(toks[1], "MODSEQ") {
			modseqToks = append(modseqToks, 1)
		}
		balance := 0
		for i < len(toks) {
			t := toks[i]
			if t.Kind == imapwire.KindOpen {
				if balance <= 0 {
					break // the modifiers
				}
				if i = listEnd(toks, i); i < 0 {
					return fe, nil
				}
				i++
				continue
			}
			if t.Kind == imapwire.KindAtom {
				balance += bytes.Count(t.Value, []byte("[")) - bytes.Count(t.Value, []byte("]"))
			}
			i++
			if balance <= 0 {
				break
			}
		}
	}
	var cuts [][2]int
	if i < len(toks) {
		if toks[i].Kind != imapwire.KindOpen || toks[i].Depth != 0 || listEnd(toks, i) != len(toks)-1 {
			return fe, nil // not a modifier list: the library answers
		}
		end := len(toks) - 1
		for j := i + 1; j < end; j++ {
			switch {
			case isAtom(toks[j], "CHANGEDSINCE") && !fe.hasChangedSince:
				if j+1 >= end || toks[j+1].Kind != imapwire.KindAtom {
					return nil, errExt("CHANGEDSINCE takes a mod-sequence value")
				}
				n, err := parseModSeq(string(toks[j+1].Value), false)
				if err != nil {
					return nil, errExt("Invalid CHANGEDSINCE value")
				}
				fe.changedSince, fe.hasChangedSince = n, true
				j++
			case isAtom(toks[j], "VANISHED") && !fe.vanished:
				fe.vanished = true
			default:
				return nil, errExt("Unknown FETCH modifier")
			}
		}
		cuts = append(cuts, [2]int{toks[i].Start, toks[end].End})
	}
	wire := cmd.Wire
	for _, c := range cuts {
		wire = imapwire.Cut(wire, c[0], c[1])
	}
	if len(modseqToks) > 0 {
		fe.modSeq = true
		// Replace MODSEQ with UID (every FETCH may answer UID), so
		// that an item list of MODSEQ alone stays non-empty; the
		// offsets before the cuts above are unchanged.
		for k := len(modseqToks) - 1; k >= 0; k-- {
			t := toks[modseqToks[k]]
			wire = append(append(append([]byte(nil), wire[:t.Start]...), "UID"...), wire[t.End:]...)
		}
	}
	fe.wire = wire
	return fe, nil
}

// parseStoreExt reads STORE's modifier list (UNCHANGEDSINCE n), right
// after the sequence set. cut is its range, zero when none.
func parseStoreExt(toks []imapwire.Token) (since uint64, has bool, cutStart, cutEnd int, err error) {
	if len(toks) < 2 || toks[1].Kind != imapwire.KindOpen || toks[1].Depth != 0 {
		return 0, false, 0, 0, nil
	}
	end := listEnd(toks, 1)
	if end < 0 {
		return 0, false, 0, 0, nil
	}
	if end != 4 || !isAtom(toks[2], "UNCHANGEDSINCE") || toks[3].Kind != imapwire.KindAtom {
		return 0, false, 0, 0, errExt("Unknown STORE modifier")
	}
	n, perr := parseModSeq(string(toks[3].Value), true)
	if perr != nil {
		return 0, false, 0, 0, errExt("Invalid UNCHANGEDSINCE value")
	}
	return n, true, toks[1].Start, toks[end].End, nil
}

// listStatusModSeq returns the ranges of the HIGHESTMODSEQ items in
// LIST's RETURN (STATUS (...)) option (RFC 5819), which the library
// cannot parse.
func listStatusModSeq(toks []imapwire.Token) [][2]int {
	var cuts [][2]int
	for i := 0; i+1 < len(toks); i++ {
		if toks[i].Depth != 1 || !isAtom(toks[i], "STATUS") || toks[i+1].Kind != imapwire.KindOpen || !returnListHolds(toks, i) {
			continue
		}
		end := listEnd(toks, i+1)
		for j := i + 2; j < end; j++ {
			if isAtom(toks[j], "HIGHESTMODSEQ") {
				cuts = append(cuts, [2]int{toks[j].Start, toks[j].End})
			}
		}
	}
	return cuts
}

// returnListHolds reports whether toks[i] is inside the list that
// follows RETURN.
func returnListHolds(toks []imapwire.Token, i int) bool {
	for k := i - 1; k >= 1; k-- {
		if toks[k].Kind == imapwire.KindOpen && toks[k].Depth == 0 {
			return isAtom(toks[k-1], "RETURN")
		}
	}
	return false
}

// mentionsModSeq reports whether a command names MODSEQ or
// HIGHESTMODSEQ anywhere as an atom (SEARCH and STATUS go to the front
// then).
func mentionsModSeq(toks []imapwire.Token, name string) bool {
	for _, t := range toks {
		if isAtom(t, name) {
			return true
		}
	}
	return false
}

// The front's part of the commands.

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
		ext.changedSince, ext.hasChangedSince = fe.changedSince, fe.hasChangedSince
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
		var rs rangeSet
		if set == "$" {
			rs = v.searchResRanges()
		} else {
			pairs, err := parseNumSet(set)
			if err != nil {
				return err
			}
			rs = staticRanges(pairs, uint32(v.maxUID()))
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
	name, err := imapwire.DecodeMailbox(raw)
	if err != nil {
		return answer("BAD [CLIENTBUG] Mailbox name " + imapwire.Reason(err))
	}
	data, err := sess.Status(name, opts)
	if err != nil {
		return answer(failedStatus(err))
	}
	var b strings.Builder
	b.WriteString("* STATUS ")
	b.WriteString(quoted(raw))
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
	uid                            bool
	esearch                        bool
	retMin, retMax, retAll, retCnt bool
	retSave                        bool
	charsetKnown                   bool
	criteria                       *imap.SearchCriteria
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
		for _, o := range toks[i+2 : end] {
			if o.Kind != imapwire.KindAtom {
				return nil, errSearchSyntax("Invalid RETURN option")
			}
			switch strings.ToUpper(string(o.Value)) {
			case "MIN":
				sc.retMin = true
			case "MAX":
				sc.retMax = true
			case "ALL":
				sc.retAll = true
			case "COUNT":
				sc.retCnt = true
			case "SAVE":
				sc.retSave = true
			default:
				return nil, errSearchSyntax("Unknown RETURN option")
			}
		}
		if end == i+2 {
			sc.retAll = true
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
	if sc.criteria, err = parseSearchKeys(toks[i:]); err != nil {
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
// section 3.1.5), which the library cannot parse: the result carries
// the highest MODSEQ of the messages found.
func (f *frontConn) search(cmd *imapwire.Command) bool {
	start := time.Now()
	answer := func(status string) bool {
		f.observe(cmd.Name, strings.HasPrefix(status, "OK"), start)
		return f.writeLine(cmd.Tag+" "+status) == nil
	}
	sc, err := parseSearch(cmd)
	if err != nil {
		return answer("BAD [CLIENTBUG] " + err.Error())
	}
	if !sc.charsetKnown {
		return answer("NO [BADCHARSET " + sortCharsets + "] Unsupported charset")
	}
	sess := f.selected()
	if sess == nil {
		return answer("BAD No mailbox selected")
	}
	withModSeq := hasModSeqKey(sc.criteria)
	if withModSeq {
		f.enableCondstore()
	}
	var nums []uint32
	var uids []schema.UID
	var top uint64
	err = sess.withView(func(v *view) error {
		err := sess.matchEach(v, sc.criteria, func(sm *searchMsg) error {
			uids = append(uids, sm.m.info.UID)
			n := sm.seq
			if sc.uid {
				n = uint32(sm.m.info.UID)
			}
			nums = append(nums, n)
			top = max(top, sm.m.info.ModSeq)
			return nil
		})
		if sc.retSave {
			v.saveSearch(err, uids, sc.retMin, sc.retMax, sc.retAll || sc.retCnt)
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
		if sc.retCnt {
			fmt.Fprintf(&b, " COUNT %d", len(nums))
		}
		if len(nums) > 0 && withModSeq && (sc.retMin || sc.retMax || sc.retAll || sc.retCnt) {
			fmt.Fprintf(&b, " MODSEQ %d", top)
		}
	}
	if sc.esearch && !(sc.retMin || sc.retMax || sc.retAll || sc.retCnt) {
		// RETURN (SAVE) alone: no ESEARCH response (RFC 5182 section 2.1).
	} else if err := f.writeLine(b.String()); err != nil {
		return false
	}
	return answer("OK SEARCH completed")
}

// The session's and the view's part.

// viewNotes receives what the relay must add to the FETCH and EXPUNGE
// responses the view has the library write (the front, when there is
// one).
type viewNotes interface {
	fetched(seq uint32, modSeq uint64)
	expunged(seq uint32, uid schema.UID)
}

// noteFetch and noteExpunge tell the front about a response about to be
// written.
func (v *view) noteFetch(seq uint32, modSeq uint64) {
	if v.notes != nil {
		v.notes.fetched(seq, modSeq)
	}
}

func (v *view) noteExpunge(seq uint32, uid schema.UID) {
	if v.notes != nil {
		v.notes.expunged(seq, uid)
	}
}

// cmdExt returns the running command's CONDSTORE and QRESYNC arguments.
func (s *session) cmdExt() cmdExt {
	if s.front == nil {
		return cmdExt{}
	}
	return s.front.commandExt()
}

// condstore reports whether CONDSTORE is on for the connection.
func (s *session) condstore() bool {
	return s.front != nil && s.front.condstoreOn()
}

// tellHighestModSeq puts the mailbox's HIGHESTMODSEQ into the tagged OK
// of EXPUNGE, UID EXPUNGE and MOVE under QRESYNC (RFC 7162 sections
// 3.2.7 and 3.2.9: an expunge takes a MODSEQ that no response carries). The value
// must not run ahead of what the client is told, and the expunged
// messages' change events carry no MODSEQ: so the view is reloaded from
// a snapshot, whose changes the update after the command tells, and the
// snapshot's HIGHESTMODSEQ is given. A failed reload gives none.
func (s *session) tellHighestModSeq(v *view) {
	if s.front == nil || !s.front.qresyncOn() {
		return
	}
	ctx, cancel := s.opContext()
	err := v.reload(ctx)
	cancel()
	if err != nil || v.gone {
		v.resync = true // the update after the command tries again
		return
	}
	s.front.taggedCode(fmt.Sprintf("HIGHESTMODSEQ %d", v.highestModSeq))
}

// maxUID is the highest UID the client may know: UIDNEXT-1 of the
// selected mailbox.
func (v *view) maxUID() schema.UID {
	return max(v.uidNext-1, v.lastUID())
}

// searchResRanges is the saved search result as a set.
func (v *view) searchResRanges() rangeSet {
	pairs := make([][2]uint32, 0, len(v.searchRes))
	for _, u := range v.searchRes {
		pairs = append(pairs, [2]uint32{uint32(u), uint32(u)})
	}
	return staticRanges(pairs, 0)
}

// vanishedIn returns the UIDs of rs, up to UIDNEXT-1, that the view does
// not hold: expunged before the client could be told one by one. A
// message whose expunge is still to be told is held.
func (v *view) vanishedIn(rs rangeSet) rangeSet {
	held := make([]uint32, 0, len(v.msgs)+len(v.fresh))
	for _, m := range v.msgs {
		held = append(held, uint32(m.info.UID))
	}
	for _, m := range v.fresh {
		held = append(held, uint32(m.info.UID))
	}
	top := uint32(v.maxUID())
	var out rangeSet
	for _, r := range rs {
		lo, hi := max(r.lo, 1), min(r.hi, top)
		if lo > hi {
			continue
		}
		k := sort.Search(len(held), func(i int) bool { return held[i] >= lo })
		next := lo
		for ; k < len(held) && held[k] <= hi; k++ {
			if held[k] > next {
				out = append(out, numRange{next, held[k] - 1})
			}
			next = held[k] + 1
		}
		if next <= hi && next != 0 {
			out = append(out, numRange{next, hi})
		}
	}
	return out
}

// qresyncLines are SELECT's answer to QRESYNC (RFC 7162 section
// 3.2.5.1) when the UIDVALIDITY matches: VANISHED (EARLIER) with the
// known UIDs that are gone, then a FETCH of each known message changed
// since the client's MODSEQ, with its UID, FLAGS and MODSEQ.
func (v *view) qresyncLines(q *qresyncParams) []string {
	since := q.modSeq
	switch {
	case since == v.highestModSeq:
		// Nothing changed, nothing was expunged (an expunge takes a
		// MODSEQ too).
		return nil
	case since > v.highestModSeq:
		// The client knows a MODSEQ the mailbox never reached (a
		// restore from backup): every known message is news.
		since = 0
	}
	known := q.known
	if known == nil {
		known = rangeSet{{1, uint32(max(v.maxUID(), 1))}}
	}
	var lines []string
	if gone := v.vanishedIn(known); len(gone) > 0 {
		lines = append(lines, vanishedEarlierLines(gone)...)
	}
	for i, m := range v.msgs {
		if m.info.ModSeq <= since || !known.contains(uint32(m.info.UID)) {
			continue
		}
		lines = append(lines, fmt.Sprintf("* %d FETCH (UID %d FLAGS (%s) MODSEQ (%d))",
			i+1, m.info.UID, joinFlags(v.fetchFlags(m, m.info.Flags)), m.info.ModSeq))
		m.told = m.info.Flags
		m.dirty = false
	}
	return lines
}

// joinFlags writes a flag list's contents.
func joinFlags(flags []imap.Flag) string {
	s := make([]string, len(flags))
	for i, f := range flags {
		s[i] = string(f)
	}
	return strings.Join(s, " ")
}

// saveSearch records a SEARCH result for "$" (RFC 5182 section 2.1): a
// failed search empties it, MIN and/or MAX alone save only those.
func (v *view) saveSearch(err error, uids []schema.UID, retMin, retMax, more bool) {
	switch {
	case err != nil || len(uids) == 0:
		v.searchRes = nil
	case (retMin || retMax) && !more:
		var saved []schema.UID
		if retMin {
			saved = append(saved, uids[0])
		}
		if retMax && (len(saved) == 0 || uids[len(uids)-1] != saved[0]) {
			saved = append(saved, uids[len(uids)-1])
		}
		v.searchRes = saved
	default:
		v.searchRes = uids
	}
}
