package imap

import (
	"bytes"
	"strings"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// The arguments of CONDSTORE and QRESYNC (RFC 7162) that the front
// takes out of the commands it forwards (condstore.go).

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
	// partial is the PARTIAL modifier (RFC 9394 section 3.3), or nil.
	partial *partialRange
	// binaryOffsets are the offsets of the partial BINARY items, by
	// section part (binarypartial.go).
	binaryOffsets map[string]uint64
	// wire is the command to forward.
	wire []byte
}

// parseFetchExt reads FETCH's MODSEQ item and its modifiers (RFC 4466:
// a list after the items): CHANGEDSINCE, VANISHED and PARTIAL.
func parseFetchExt(cmd *imapwire.Command) (*fetchExt, error) {
	toks := cmd.Args
	fe := &fetchExt{wire: cmd.Wire}
	if len(toks) < 2 || toks[0].Kind != imapwire.KindAtom {
		return fe, nil // the library answers the syntax error
	}
	// The items: one list, or one item whose section brackets may
	// hold a list (BODY[HEADER.FIELDS (FROM)]).
	var modseqToks []int
	var items []int // the items' tokens that may be partial BINARY items
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
			if toks[j].Depth == 1 {
				items = append(items, j)
			}
		}
		i = end + 1
	} else {
		if isAtom(toks[1], "MODSEQ") {
			modseqToks = append(modseqToks, 1)
		}
		items = append(items, 1)
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
			case isAtom(toks[j], "PARTIAL") && fe.partial == nil:
				if j+1 >= end {
					return nil, errExt("PARTIAL takes a range")
				}
				r, err := parsePartialRange(toks[j+1])
				if err != nil {
					return nil, errExt(err.Error())
				}
				fe.partial = &r
				j++
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
	// Replacements of item tokens, in the order of the tokens; the
	// offsets before the cuts above are unchanged, and they are made
	// from the last one back.
	type replacement struct {
		tok  int
		text string
	}
	var repl []replacement
	var binary binaryItems
	for _, j := range items {
		if text, ok := binary.add(toks[j].Value); ok {
			repl = append(repl, replacement{j, text})
		}
		if len(modseqToks) > 0 && modseqToks[0] == j {
			// Replace MODSEQ with UID (every FETCH may answer UID), so
			// that an item list of MODSEQ alone stays non-empty.
			fe.modSeq = true
			repl = append(repl, replacement{j, "UID"})
			modseqToks = modseqToks[1:]
		}
	}
	for k := len(repl) - 1; k >= 0; k-- {
		t := toks[repl[k].tok]
		wire = append(append(append([]byte(nil), wire[:t.Start]...), repl[k].text...), wire[t.End:]...)
	}
	fe.binaryOffsets = binary.offsets()
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
