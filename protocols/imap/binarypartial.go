package imap

import (
	"bytes"
	"strconv"
	"strings"
)

// Partial BINARY items. RFC 3516 section 4.2 and RFC 9051 section
// 7.5.2 answer BINARY[section]<origin> with the offset the client asked
// for, as BODY[section]<origin> is answered; the library writes
// BINARY[section] alone (its grammar in both RFCs has no origin either,
// but the text, Dovecot and the clients that ask for a range go by the
// offset). So the front notes the offsets of a FETCH's partial BINARY
// items and the relay writes them into the library's answer. It also
// takes an origin without a length (BINARY.PEEK[1]<40>: from 40 to the
// end), as Dovecot does, by asking the library for the most a literal
// can hold from there.

// maxPartialLength is the length given to a partial without one: the
// largest nz-number (RFC 9051 section 9).
const maxPartialLength = "4294967295"

// binaryItems collects the partial BINARY items of one FETCH.
type binaryItems struct {
	byPart map[string]uint64
	// mixed are the parts asked for more than once with different
	// ranges: their answers cannot be told apart, so they get no offset.
	mixed map[string]bool
}

// add looks at one item of a FETCH. For an item BINARY[part]<origin>
// or BINARY[part]<origin.length> (.PEEK or not) it notes the origin,
// and for one without a length it returns the item to forward instead.
// A BINARY item without a range is noted too, so that a part asked for
// both whole and in part is left alone.
func (b *binaryItems) add(item []byte) (string, bool) {
	s := string(item)
	var rest string
	switch {
	case hasPrefixFold(s, "BINARY["):
		rest = s[len("BINARY["):]
	case hasPrefixFold(s, "BINARY.PEEK["):
		rest = s[len("BINARY.PEEK["):]
	default:
		return "", false
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return "", false
	}
	part, ok := normalPart(rest[:end])
	if !ok {
		return "", false
	}
	rng := rest[end+1:]
	if rng == "" {
		b.note(part, -1)
		return "", false
	}
	if len(rng) < 3 || rng[0] != '<' || rng[len(rng)-1] != '>' {
		return "", false // the library answers the syntax error
	}
	origin, length, hasLength := strings.Cut(rng[1:len(rng)-1], ".")
	off, err := strconv.ParseUint(origin, 10, 32)
	if err != nil || hasLength && !isDigits(length) {
		return "", false
	}
	b.note(part, int64(off))
	if hasLength {
		return "", false
	}
	return s[:len(s)-1] + "." + maxPartialLength + ">", true
}

// note records the origin of part (-1: the whole part).
func (b *binaryItems) note(part string, origin int64) {
	if b.byPart == nil {
		b.byPart = make(map[string]uint64)
		b.mixed = make(map[string]bool)
	}
	if b.mixed[part] {
		return
	}
	if prev, seen := b.byPart[part]; origin < 0 || seen && prev != uint64(origin) {
		// Asked for whole, or at another origin: no answer of this
		// part gets an origin.
		b.mixed[part] = true
		delete(b.byPart, part)
		return
	}
	b.byPart[part] = uint64(origin)
}

// offsets returns the origins to write, by part; nil when none.
func (b *binaryItems) offsets() map[string]uint64 {
	if len(b.byPart) == 0 {
		return nil
	}
	return b.byPart
}

// normalPart returns a section part ("", "1", "2.1") as the library
// writes it back: numbers without leading zeros. False for anything
// else (specifiers such as HEADER, which BINARY does not take).
func normalPart(p string) (string, bool) {
	if p == "" {
		return "", true
	}
	nums := strings.Split(p, ".")
	for i, n := range nums {
		v, err := strconv.ParseUint(n, 10, 32)
		if err != nil || v == 0 {
			return "", false
		}
		nums[i] = strconv.FormatUint(v, 10)
	}
	return strings.Join(nums, "."), true
}

// hasPrefixFold reports whether s starts with the ASCII prefix p, in
// any case.
func hasPrefixFold(s, p string) bool {
	return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// withBinaryOffset writes the origin into a piece of the library's
// FETCH answer that ends with a partial BINARY item's literal (see
// withBinaryOrigin), when the running command asked for one.
func (f *frontConn) withBinaryOffset(frag []byte) []byte {
	if !bytes.HasSuffix(frag, []byte("}\r\n")) {
		return frag
	}
	offsets := f.commandExt().binaryOffsets
	if len(offsets) == 0 {
		return frag
	}
	return withBinaryOrigin(frag, offsets)
}

// withBinaryOrigin returns frag with the origin of the BINARY item whose
// literal ends it, if its part is in offsets: "BINARY[1] ~{7}" becomes
// "BINARY[1]<10> ~{7}". A piece is a whole line, or what follows a
// literal up to the end of the line or the next literal, so a BINARY
// item with its literal always ends one.
func withBinaryOrigin(frag []byte, offsets map[string]uint64) []byte {
	if !bytes.HasSuffix(frag, []byte("}\r\n")) {
		return frag
	}
	line := frag[:len(frag)-len("}\r\n")]
	open := bytes.LastIndex(line, []byte(" ~{"))
	if open < 0 || !isDigits(string(line[open+len(" ~{"):])) {
		return frag
	}
	head := line[:open] // "... BINARY[part]"
	if len(head) == 0 || head[len(head)-1] != ']' {
		return frag
	}
	start := bytes.LastIndex(head, []byte("BINARY["))
	if start < 0 || start > 0 && head[start-1] != ' ' && head[start-1] != '(' {
		return frag
	}
	off, ok := offsets[string(head[start+len("BINARY["):len(head)-1])]
	if !ok {
		return frag
	}
	ins := "<" + strconv.FormatUint(off, 10) + ">"
	out := make([]byte, 0, len(frag)+len(ins))
	out = append(out, frag[:open]...)
	out = append(out, ins...)
	return append(out, frag[open:]...)
}
