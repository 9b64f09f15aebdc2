package imap

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The session's and the view's part of CONDSTORE and QRESYNC
// (condstore.go).

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

// uidRanges reads a UID set argument as a set: "$" is the saved search
// result (RFC 5182), "*" the highest UID the client may know.
func (v *view) uidRanges(set string) (rangeSet, error) {
	if set == "$" {
		return v.searchResRanges(), nil
	}
	pairs, err := parseNumSet(set)
	if err != nil {
		return nil, err
	}
	return staticRanges(pairs, uint32(v.maxUID())), nil
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
// failed search empties it, MIN and/or MAX alone save only those, PARTIAL
// its page.
func (v *view) saveSearch(err error, uids []schema.UID, partial *partialRange, retMin, retMax, more bool) {
	switch {
	case err != nil || len(uids) == 0:
		v.searchRes = nil
	case partial != nil && !more:
		// RFC 9394 section 3.2: the page, with the MIN and MAX
		// messages when asked for (COUNT saves every message found).
		saved := append([]schema.UID(nil), pick(*partial, uids)...)
		if retMin {
			saved = append(saved, uids[0])
		}
		if retMax {
			saved = append(saved, uids[len(uids)-1])
		}
		slices.Sort(saved)
		v.searchRes = slices.Compact(saved)
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
