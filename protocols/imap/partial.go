package imap

import (
	"errors"
	"strconv"
	"strings"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// PARTIAL (RFC 9394): a page of a SEARCH, SORT or UID FETCH result.
// SEARCH and UID SEARCH with RETURN (PARTIAL ...) are the front's (the
// library cannot parse the option), as are SORT's; UID FETCH's PARTIAL
// modifier is cut out by the front, which narrows the command's UID set
// to the page before forwarding it (prepareExt).

// partialRange is a PARTIAL argument: positions first to last (1-based,
// first <= last) in the result, counted from its end when fromEnd
// ("-1:-100" is the last 100).
type partialRange struct {
	first, last uint32
	fromEnd     bool
	// text is the range as the client gave it, echoed in the answer
	// (RFC 9394 section 3.1: the PARTIAL data carry the original range).
	text string
}

// parsePartialRange reads partial-range (RFC 9394 section 4):
// nz-number ":" nz-number, or "-" nz-number ":" "-" nz-number; the two
// ends in either order, never "*".
func parsePartialRange(t imapwire.Token) (partialRange, error) {
	if t.Kind != imapwire.KindAtom {
		return partialRange{}, errSearchSyntax("PARTIAL takes a range such as 1:100 or -1:-100")
	}
	s := string(t.Value)
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return partialRange{}, errSearchSyntax("PARTIAL takes a range such as 1:100 or -1:-100")
	}
	negA, negB := strings.HasPrefix(a, "-"), strings.HasPrefix(b, "-")
	if negA != negB {
		return partialRange{}, errSearchSyntax("PARTIAL range ends must have the same sign")
	}
	x, err := parseNZNumber(strings.TrimPrefix(a, "-"))
	if err != nil {
		return partialRange{}, err
	}
	y, err := parseNZNumber(strings.TrimPrefix(b, "-"))
	if err != nil {
		return partialRange{}, err
	}
	return partialRange{first: min(x, y), last: max(x, y), fromEnd: negA, text: s}, nil
}

// parseNZNumber parses a non-zero 32-bit number, digits only.
func parseNZNumber(s string) (uint32, error) {
	if s == "" || len(s) > 10 || s[0] == '0' {
		return 0, errSearchSyntax("Invalid PARTIAL range number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errSearchSyntax("Invalid PARTIAL range number")
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errSearchSyntax("Invalid PARTIAL range number")
	}
	return uint32(n), nil
}

// bounds returns the slice [lo, hi) of a result of n items the range
// covers (empty when it lies beyond the result).
func (r partialRange) bounds(n int) (lo, hi int) {
	first, last := int(r.first), int(r.last)
	if first > n {
		return 0, 0
	}
	last = min(last, n)
	if r.fromEnd {
		return n - last, n - first + 1
	}
	return first - 1, last
}

// pick returns the items of a result the range covers.
func pick[T any](r partialRange, items []T) []T {
	lo, hi := r.bounds(len(items))
	return items[lo:hi]
}

// partialData writes ESEARCH's PARTIAL return data: the client's range
// and the page, NIL when it is empty (RFC 9394 section 3.1). The page is
// written in the order given (mailbox order for SEARCH, sort order for
// SORT).
func partialData(r partialRange, page []uint32) string {
	set := "NIL"
	if len(page) > 0 {
		set = orderedSet(page)
	}
	return " PARTIAL (" + r.text + " " + set + ")"
}

// returnHasPartial reports whether a command's arguments open with a
// RETURN list holding PARTIAL (SEARCH's search return options).
func returnHasPartial(args []imapwire.Token) bool {
	if len(args) < 2 || !isAtom(args[0], "RETURN") || args[1].Kind != imapwire.KindOpen {
		return false
	}
	end := listEnd(args, 1)
	if end < 0 {
		return false
	}
	for _, t := range args[2:end] {
		if isAtom(t, "PARTIAL") {
			return true
		}
	}
	return false
}

// fetchPartialSet narrows a UID FETCH to the page its PARTIAL modifier
// asks for: the messages of the set (with CHANGEDSINCE, those changed
// since), in UID order, of which the range picks some (RFC 9394 section
// 3.3). It returns the UID set to forward in place of the client's;
// a page with no message becomes a UID no message has, so the library
// answers the command with no FETCH.
func (f *frontConn) fetchPartialSet(set string, fe *fetchExt) (string, error) {
	sess := f.selected()
	if sess == nil {
		return set, nil // the library answers: not selected
	}
	var uids []schema.UID
	var none schema.UID
	err := sess.withView(func(v *view) error {
		v.drain()
		rs, err := v.uidRanges(set)
		if err != nil {
			return err
		}
		for _, m := range v.msgs {
			if m.expunged || !rs.contains(uint32(m.info.UID)) {
				continue
			}
			if fe.hasChangedSince && m.info.ModSeq <= fe.changedSince {
				continue
			}
			uids = append(uids, m.info.UID)
		}
		none = v.maxUID() + 1
		return nil
	})
	var ie *imap.Error
	if err != nil {
		if isSearchSyntax(err) || errors.As(err, &ie) {
			// The library answers the bad set, or that no mailbox
			// is selected.
			return set, nil
		}
		return "", err
	}
	page := pick(*fe.partial, uids)
	if len(page) == 0 {
		if none == 0 {
			none = 1
		}
		return strconv.FormatUint(uint64(none), 10), nil
	}
	return uidSetOf(page).String(), nil
}
