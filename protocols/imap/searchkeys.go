package imap

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// Search keys (RFC 3501 section 6.4.4, RFC 9051 section 6.4.4) read by
// the front from a command's tokens, for the commands it runs itself
// (SORT). They compile to the same imap.SearchCriteria the library hands
// to Session.Search, so both run search.go's matcher.

// errSearchSyntax is a malformed search key list; its text goes to the
// client after BAD.
type errSearchSyntax string

func (e errSearchSyntax) Error() string { return string(e) }

// keyParser walks a token list.
type keyParser struct {
	toks  []imapwire.Token
	pos   int
	depth int
	// smaller are the SMALLER keys read, for librarySearchWire.
	smaller []smallerKey
}

// smallerKey is one "SMALLER n" search key: the byte range in
// Command.Wire from the keyword to the end of the number, and n.
type smallerKey struct {
	start, end int
	n          int64
}

func (p *keyParser) more() bool { return p.pos < len(p.toks) }

func (p *keyParser) next() (imapwire.Token, error) {
	if !p.more() {
		return imapwire.Token{}, errSearchSyntax("Search key argument missing")
	}
	t := p.toks[p.pos]
	p.pos++
	return t, nil
}

// str reads a string argument (astring).
func (p *keyParser) str() (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	if !t.IsString() {
		return "", errSearchSyntax("Search key takes a string")
	}
	return string(t.Value), nil
}

// atom reads an atom argument.
func (p *keyParser) atom() (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	if t.Kind != imapwire.KindAtom {
		return "", errSearchSyntax("Search key takes an atom")
	}
	return string(t.Value), nil
}

// parseSearchKeys reads a list of search keys (at least one) that makes
// up the whole of toks.
func parseSearchKeys(toks []imapwire.Token) (*imap.SearchCriteria, error) {
	c, _, err := readSearchKeys(toks)
	return c, err
}

// readSearchKeys is parseSearchKeys that also returns the SMALLER keys
// it read.
func readSearchKeys(toks []imapwire.Token) (*imap.SearchCriteria, []smallerKey, error) {
	p := &keyParser{toks: toks}
	c := &imap.SearchCriteria{}
	if !p.more() {
		return nil, nil, errSearchSyntax("Search keys missing")
	}
	for p.more() {
		if err := p.key(c); err != nil {
			return nil, nil, err
		}
	}
	return c, p.smaller, nil
}

// andCriteria ANDs other into c. The library's SearchCriteria.And drops
// c's SMALLER bound when other has none (it keeps the smaller of the
// two values and takes 0, "no bound", for the smaller), so "SMALLER 100
// SINCE 1-Jan-2024" lost its SMALLER; the bound is kept here.
func andCriteria(c, other *imap.SearchCriteria) {
	smaller := c.Smaller
	if other.Smaller > 0 && (smaller == 0 || other.Smaller < smaller) {
		smaller = other.Smaller
	}
	c.And(other)
	c.Smaller = smaller
}

// librarySearchWire is the wire of a SEARCH or UID SEARCH the library
// runs, with every "SMALLER n" key written "NOT LARGER n-1" (RFC 3501
// section 6.4.4: SMALLER n is RFC822.SIZE < n, LARGER n-1 is > n-1).
// The library's parser ANDs the keys of a list with SearchCriteria.And,
// which forgets a SMALLER bound as soon as a later key (a date, LARGER,
// a sequence set) is ANDed in (see andCriteria); a NOT key is kept in a
// list of its own. A command that does not parse here, or has no
// SMALLER key, is forwarded as it came, to be answered by the library.
func librarySearchWire(cmd *imapwire.Command) []byte {
	sc, err := parseSearch(cmd)
	if err != nil || len(sc.smaller) == 0 {
		return cmd.Wire
	}
	var out []byte
	last := 0
	for _, k := range sc.smaller {
		if k.n == 0 || k.start < last || k.end > len(cmd.Wire) {
			continue // SMALLER 0 has no bound to lose
		}
		out = append(out, cmd.Wire[last:k.start]...)
		out = append(out, "NOT LARGER "...)
		out = strconv.AppendInt(out, k.n-1, 10)
		last = k.end
	}
	return append(out, cmd.Wire[last:]...)
}

// key reads one search key into c (keys in a list are ANDed).
func (p *keyParser) key(c *imap.SearchCriteria) error {
	t, err := p.next()
	if err != nil {
		return err
	}
	switch t.Kind {
	case imapwire.KindOpen:
		end := t.Depth
		if p.more() && p.toks[p.pos].Kind == imapwire.KindClose {
			return errSearchSyntax("Empty search key list")
		}
		for {
			if !p.more() {
				return errSearchSyntax("Unbalanced parentheses")
			}
			if n := p.toks[p.pos]; n.Kind == imapwire.KindClose && n.Depth == end {
				p.pos++
				return nil
			}
			if err := p.key(c); err != nil {
				return err
			}
		}
	case imapwire.KindAtom:
	default:
		return errSearchSyntax("Search key expected")
	}
	name := strings.ToUpper(string(t.Value))
	flag := func(f imap.Flag, set bool) {
		if set {
			c.Flag = append(c.Flag, f)
		} else {
			c.NotFlag = append(c.NotFlag, f)
		}
	}
	header := func(key string) error {
		v, err := p.str()
		if err == nil {
			c.Header = append(c.Header, imap.SearchCriteriaHeaderField{Key: key, Value: v})
		}
		return err
	}
	date := func() (time.Time, error) {
		s, err := p.str()
		if err != nil {
			return time.Time{}, err
		}
		return parseSearchDate(s)
	}
	number := func() (int64, error) {
		s, err := p.atom()
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0, errSearchSyntax("Search key takes a number")
		}
		return int64(n), nil
	}
	switch name {
	case "ALL":
	case "ANSWERED", "UNANSWERED":
		flag(imap.FlagAnswered, name == "ANSWERED")
	case "DELETED", "UNDELETED":
		flag(imap.FlagDeleted, name == "DELETED")
	case "DRAFT", "UNDRAFT":
		flag(imap.FlagDraft, name == "DRAFT")
	case "FLAGGED", "UNFLAGGED":
		flag(imap.FlagFlagged, name == "FLAGGED")
	case "SEEN", "UNSEEN":
		flag(imap.FlagSeen, name == "SEEN")
	case "RECENT":
		flag(flagRecent, true)
	case "OLD":
		flag(flagRecent, false)
	case "NEW":
		flag(flagRecent, true)
		flag(imap.FlagSeen, false)
	case "KEYWORD", "UNKEYWORD":
		k, err := p.atom()
		if err != nil {
			return err
		}
		flag(imap.Flag(k), name == "KEYWORD")
	case "BCC", "CC", "FROM", "SUBJECT", "TO":
		return header(strings.ToUpper(name[:1]) + strings.ToLower(name[1:]))
	case "HEADER":
		k, err := p.str()
		if err != nil {
			return err
		}
		return header(k)
	case "BODY", "TEXT":
		v, err := p.str()
		if err != nil {
			return err
		}
		if name == "BODY" {
			c.Body = append(c.Body, v)
		} else {
			c.Text = append(c.Text, v)
		}
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE":
		d, err := date()
		if err != nil {
			return err
		}
		and := &imap.SearchCriteria{}
		switch name {
		case "BEFORE":
			and.Before = d
		case "SINCE":
			and.Since = d
		case "ON":
			and.Since, and.Before = d, d.AddDate(0, 0, 1)
		case "SENTBEFORE":
			and.SentBefore = d
		case "SENTSINCE":
			and.SentSince = d
		case "SENTON":
			and.SentSince, and.SentBefore = d, d.AddDate(0, 0, 1)
		}
		andCriteria(c, and)
	case "LARGER", "SMALLER":
		n, err := number()
		if err != nil {
			return err
		}
		and := &imap.SearchCriteria{}
		if name == "LARGER" {
			and.Larger = n
		} else {
			and.Smaller = n
			p.smaller = append(p.smaller, smallerKey{start: t.Start, end: p.toks[p.pos-1].End, n: n})
		}
		andCriteria(c, and)
	case "MODSEQ":
		// RFC 7162 section 3.1.5: MODSEQ [entry-name entry-type-req]
		// mod-sequence-valzer. The entry names the flag whose MODSEQ
		// is meant; ours is kept per message, so it only must be well
		// formed.
		if p.more() && p.toks[p.pos].Kind == imapwire.KindQuoted {
			p.pos++
			typ, err := p.atom()
			if err != nil {
				return err
			}
			switch strings.ToLower(typ) {
			case "priv", "shared", "all":
			default:
				return errSearchSyntax("MODSEQ entry type must be priv, shared or all")
			}
		}
		s, err := p.atom()
		if err != nil {
			return err
		}
		n, err := parseModSeq(s, true)
		if err != nil {
			return err
		}
		if c.ModSeq != nil {
			// Two MODSEQ keys ANDed: the larger bound decides.
			n = max(n, c.ModSeq.ModSeq)
		}
		c.ModSeq = &imap.SearchCriteriaModSeq{ModSeq: n}
	case "UID":
		s, err := p.atom()
		if err != nil {
			return err
		}
		if s == "$" {
			c.UID = append(c.UID, imap.SearchRes())
			return nil
		}
		pairs, err := parseNumSet(s)
		if err != nil {
			return err
		}
		set := make(imap.UIDSet, len(pairs))
		for i, r := range pairs {
			set[i] = imap.UIDRange{Start: imap.UID(r[0]), Stop: imap.UID(r[1])}
		}
		c.UID = append(c.UID, set)
	case "NOT", "OR":
		if p.depth >= maxSearchNesting {
			return errSearchSyntax("Search too complex")
		}
		p.depth++
		defer func() { p.depth-- }()
		var a, b imap.SearchCriteria
		if err := p.key(&a); err != nil {
			return err
		}
		if name == "NOT" {
			c.Not = append(c.Not, a)
			return nil
		}
		if err := p.key(&b); err != nil {
			return err
		}
		c.Or = append(c.Or, [2]imap.SearchCriteria{a, b})
	case "$":
		c.UID = append(c.UID, imap.SearchRes())
	default:
		pairs, err := parseNumSet(string(t.Value))
		if err != nil {
			return errSearchSyntax("Unknown search key")
		}
		set := make(imap.SeqSet, len(pairs))
		for i, r := range pairs {
			set[i] = imap.SeqRange{Start: r[0], Stop: r[1]}
		}
		c.SeqNum = append(c.SeqNum, set)
	}
	return nil
}

// maxSetRanges bounds the ranges of one sequence set.
const maxSetRanges = 4096

// parseNumSet parses a sequence set ("1,3:5,7:*") into ranges; "*" is 0.
func parseNumSet(s string) ([][2]uint32, error) {
	if s == "" {
		return nil, errSearchSyntax("Empty sequence set")
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxSetRanges {
		return nil, errSearchSyntax("Sequence set too long")
	}
	out := make([][2]uint32, 0, len(parts))
	for _, part := range parts {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err := parseSeqNumber(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseSeqNumber(hi); err != nil {
				return nil, err
			}
		}
		out = append(out, [2]uint32{a, b})
	}
	return out, nil
}

// parseSeqNumber parses a non-zero 32-bit number, or "*" as 0.
func parseSeqNumber(s string) (uint32, error) {
	if s == "*" {
		return 0, nil
	}
	if s == "" || s[0] < '1' || s[0] > '9' {
		return 0, errSearchSyntax("Invalid sequence set")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errSearchSyntax("Invalid sequence set")
	}
	return uint32(n), nil
}

// maxModSeq is the largest mod-sequence value (RFC 7162: 63 bits).
const maxModSeq = 1<<63 - 1

// parseModSeq parses a mod-sequence value; zero is allowed only where
// the grammar says mod-sequence-valzer.
func parseModSeq(s string, zero bool) (uint64, error) {
	if s == "" || s[0] < '0' || s[0] > '9' || (len(s) > 1 && s[0] == '0') {
		return 0, errSearchSyntax("Invalid mod-sequence value")
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxModSeq || (n == 0 && !zero) {
		return 0, errSearchSyntax("Invalid mod-sequence value")
	}
	return n, nil
}

// parseSearchDate parses an IMAP date ("1-Feb-1994", the day with one or
// two digits).
func parseSearchDate(s string) (time.Time, error) {
	for _, layout := range []string{"2-Jan-2006", "02-Jan-2006"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errSearchSyntax("Invalid date")
}

// isSearchSyntax reports whether err is a syntax error of the keys.
func isSearchSyntax(err error) bool {
	var e errSearchSyntax
	return errors.As(err, &e)
}
