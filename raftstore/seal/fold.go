package seal

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
)

// Folding base64 before compression. Mail carries its attachments in
// base64, in lines of 76 characters (RFC 2045 section 6.8): a third more
// bytes than the attachment, and in a form zstd compresses badly, since
// a repeat in the attachment is a repeat in base64 only when it falls on
// the same 3-byte alignment. Random data (images, archives) compresses to
// its entropy, 6 bits a character, after zstd has looked for matches in
// vain. So Seal folds, in values of compressHarderFrom bytes and more,
// every run of full 76-character base64 lines ending in CRLF into the 57
// bytes each line stands for, and compresses that instead. A full line
// without padding decodes to exactly one 57-byte string and encodes back
// to exactly the same characters (each group of four characters stands
// for its three bytes and no other), so folding loses nothing.
//
// The folded form is a sequence of pieces, each a tag byte and a length:
//
//	foldRaw,  uvarint n, then n bytes as they were
//	foldRun,  uvarint n, then n*57 bytes: n base64 lines with CRLF
const (
	foldRaw = 0
	foldRun = 1

	foldLineChars = 76                      // base64 characters on a full line
	foldLineBytes = foldLineChars / 4 * 3   // the bytes a full line stands for
	foldLine      = foldLineChars + 2       // a full line with CRLF
	foldMinRun    = 4                       // shorter runs are left as they are
	foldLineLimit = MaxPlaintext / foldLine // the most lines a value can hold
)

// fold appends the folded form of p to dst[:0] and returns it, or false
// when p has too little base64 in it to gain from folding (a quarter of
// its size at least); either way the result keeps dst's memory, grown,
// for the caller to use again.
//
// At the start of each line, startsRun looks at the next foldMinRun
// lines; when they are base64, appendRun folds the run, line by line
// until a line is not. The decoder checks the characters: a line decodes
// to 57 bytes only when all 76 are in the alphabet, since it skips CR
// and LF and stops at padding. So a folded line always encodes back to
// the characters it came from, and unfold(fold(p)) is p (FuzzFold).
// Every line is looked at a bounded number of times, whatever the text
// (BenchmarkFoldQuotedPrintable).
func fold(dst, p []byte) ([]byte, bool) {
	out := slices.Grow(dst[:0], len(p)-len(p)/5)
	rawStart := 0 // start of the bytes not yet written out
	folded := 0   // base64 bytes folded
	i := 0
	for i < len(p) {
		// i is at the start of a line.
		if startsRun(p[i:]) {
			var n int
			out, n = appendRun(out, p, rawStart, i)
			i += n * foldLine
			folded += n * foldLine
			rawStart = i
			continue
		}
		nl := bytes.IndexByte(p[i:], '\n')
		if nl < 0 {
			break
		}
		i += nl + 1
	}
	if folded < len(p)/4 {
		return out, false
	}
	if rawStart < len(p) {
		out = appendPiece(out, foldRaw, p[rawStart:])
	}
	return out, true
}

// decodeLine decodes the line at the start of p into dst (57 bytes) and
// reports whether it is a full base64 line: 76 characters of the
// alphabet, then CRLF.
func decodeLine(dst, p []byte) bool {
	if len(p) < foldLine || p[foldLineChars] != '\r' || p[foldLineChars+1] != '\n' {
		return false
	}
	n, err := base64.StdEncoding.Decode(dst, p[:foldLineChars])
	return err == nil && n == foldLineBytes
}

// startsRun reports whether the first foldMinRun lines of p are full
// base64 lines.
func startsRun(p []byte) bool {
	var line [foldLineBytes]byte
	for k := range foldMinRun {
		if !decodeLine(line[:], p[min(k*foldLine, len(p)):]) {
			return false
		}
	}
	return true
}

// appendRun appends to out the raw piece p[rawStart:i] and the run of
// base64 lines at p[i:] (startsRun holds there), and returns the grown
// out and how many lines the run folded.
func appendRun(out, p []byte, rawStart, i int) ([]byte, int) {
	if i > rawStart {
		out = appendPiece(out, foldRaw, p[rawStart:i])
	}
	limit := min(foldLineLimit, (len(p)-i)/foldLine)
	head := len(out)
	reserved := 1 + uvarintLen(uint64(limit))
	out = slices.Grow(out, reserved)
	body := head + reserved
	end := body
	n := 0
	for n < limit {
		// out's capacity (four fifths of p to begin with) grows only
		// when the run needs it.
		out = slices.Grow(out[:end], foldLineBytes)
		if !decodeLine(out[end:end+foldLineBytes], p[i+n*foldLine:]) {
			break
		}
		end += foldLineBytes
		n++
	}
	out = out[:end]
	if h := 1 + uvarintLen(uint64(n)); h < reserved {
		// The count takes fewer bytes than the longest run could have.
		copy(out[head+h:], out[body:end])
		out = out[:end-(reserved-h)]
	}
	out[head] = foldRun
	binary.PutUvarint(out[head+1:], uint64(n))
	return out, n
}

// uvarintLen is the length of v's uvarint encoding.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// appendPiece appends a raw piece.
func appendPiece(out []byte, tag byte, b []byte) []byte {
	out = append(out, tag)
	out = binary.AppendUvarint(out, uint64(len(b)))
	return append(out, b...)
}

// unfold returns the plaintext of a folded form, or ErrMalformed.
func unfold(f []byte) ([]byte, error) {
	return unfoldAppend(nil, f)
}

// unfoldAppend appends the plaintext of a folded form to dst, or returns
// nil and ErrMalformed.
func unfoldAppend(dst, f []byte) ([]byte, error) {
	size, err := unfoldedSize(f)
	if err != nil {
		return nil, err
	}
	out := dst
	if cap(out)-len(out) < size {
		out = make([]byte, len(dst), len(dst)+size)
		copy(out, dst)
	}
	err = walkFold(f, func(p []byte) bool {
		out = append(out, p...)
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// unfoldedSize returns the size of the plaintext of the folded form f,
// read from its pieces' headers, or ErrMalformed where walkFold would
// find f malformed. (A run's 57 bytes a line become 78: an estimate
// from f's size alone that falls short makes the output grow, and copy,
// at its last lines.)
func unfoldedSize(f []byte) (int, error) {
	var total uint64
	for len(f) > 0 {
		tag := f[0]
		n, k := binary.Uvarint(f[1:])
		if k <= 0 {
			return 0, ErrMalformed
		}
		f = f[1+k:]
		switch tag {
		case foldRaw:
			if n > uint64(len(f)) || total+n > MaxPlaintext {
				return 0, ErrMalformed
			}
			total += n
			f = f[n:]
		case foldRun:
			if n > uint64(len(f)/foldLineBytes) || total+n*foldLine > MaxPlaintext {
				return 0, ErrMalformed
			}
			total += n * foldLine
			f = f[n*foldLineBytes:]
		default:
			return 0, ErrMalformed
		}
	}
	return int(total), nil
}

// walkFold hands the plaintext of the folded form f to emit piece by
// piece, in order (a slice emit must not keep); it returns ErrMalformed
// for a form unfold would refuse, or errStopped when emit returned
// false.
func walkFold(f []byte, emit func([]byte) bool) error {
	var line [foldLine]byte
	line[foldLineChars], line[foldLineChars+1] = '\r', '\n'
	var total uint64
	for len(f) > 0 {
		tag := f[0]
		n, k := binary.Uvarint(f[1:])
		if k <= 0 {
			return ErrMalformed
		}
		f = f[1+k:]
		switch tag {
		case foldRaw:
			if n > uint64(len(f)) || total+n > MaxPlaintext {
				return ErrMalformed
			}
			total += n
			if !emit(f[:n]) {
				return errStopped
			}
			f = f[n:]
		case foldRun:
			if n > uint64(len(f)/foldLineBytes) || total+n*foldLine > MaxPlaintext {
				return ErrMalformed
			}
			total += n * foldLine
			for range n {
				// 57 bytes always encode to 76 characters.
				base64.StdEncoding.Encode(line[:foldLineChars], f[:foldLineBytes])
				if !emit(line[:]) {
					return errStopped
				}
				f = f[foldLineBytes:]
			}
		default:
			return ErrMalformed
		}
	}
	return nil
}

// errStopped ends walkFold when its caller has seen enough.
var errStopped = errors.New("seal: unfold stopped")
