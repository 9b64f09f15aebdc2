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
// to exactly the same characters, so folding loses nothing; Seal checks
// that unfolding gives the plaintext back before it uses a folded form.
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

// base64Char marks the characters of the standard base64 alphabet.
var base64Char = func() (t [256]bool) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range len(alphabet) {
		t[alphabet[i]] = true
	}
	return t
}()

// isBase64Line reports whether b starts with a full base64 line and CRLF.
func isBase64Line(b []byte) bool {
	if len(b) < foldLine || b[foldLineChars] != '\r' || b[foldLineChars+1] != '\n' {
		return false
	}
	for _, c := range b[:foldLineChars] {
		if !base64Char[c] {
			return false
		}
	}
	return true
}

// fold returns the folded form of p, or false when p has too little
// base64 in it to gain from folding (a quarter of its size at least).
func fold(p []byte) ([]byte, bool) {
	out := make([]byte, 0, len(p)-len(p)/5)
	rawStart := 0 // start of the bytes not yet written out
	folded := 0   // base64 bytes folded
	i := 0
	for i < len(p) {
		// i is at the start of a line.
		n := 0
		for j := i; n < foldLineLimit && isBase64Line(p[j:]); j += foldLine {
			n++
		}
		if n < foldMinRun {
			nl := bytes.IndexByte(p[i:], '\n')
			if nl < 0 {
				break
			}
			i += nl + 1
			continue
		}
		if i > rawStart {
			out = appendPiece(out, foldRaw, p[rawStart:i])
		}
		out = append(out, foldRun)
		out = binary.AppendUvarint(out, uint64(n))
		out = slices.Grow(out, n*foldLineBytes)
		for range n {
			out = out[:len(out)+foldLineBytes]
			if _, err := base64.StdEncoding.Decode(out[len(out)-foldLineBytes:], p[i:i+foldLineChars]); err != nil {
				return nil, false // cannot happen: every character was checked
			}
			i += foldLine
		}
		folded += n * foldLine
		rawStart = i
	}
	if folded < len(p)/4 {
		return nil, false
	}
	if rawStart < len(p) {
		out = appendPiece(out, foldRaw, p[rawStart:])
	}
	return out, true
}

// appendPiece appends a raw piece.
func appendPiece(out []byte, tag byte, b []byte) []byte {
	out = append(out, tag)
	out = binary.AppendUvarint(out, uint64(len(b)))
	return append(out, b...)
}

// unfold returns the plaintext of a folded form, or ErrMalformed.
func unfold(f []byte) ([]byte, error) {
	out := make([]byte, 0, len(f)+len(f)/3+len(f)/30)
	err := walkFold(f, func(p []byte) bool {
		out = append(out, p...)
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// unfoldsTo reports whether the folded form f unfolds to exactly
// plaintext, without building the unfolded copy.
func unfoldsTo(f, plaintext []byte) bool {
	rest := plaintext
	err := walkFold(f, func(p []byte) bool {
		if !bytes.HasPrefix(rest, p) {
			return false
		}
		rest = rest[len(p):]
		return true
	})
	return err == nil && len(rest) == 0
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
