package schema

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// MaxFieldSize bounds any single length-prefixed field a decoder accepts.
// It is larger than the largest chunk a command carries and keeps a corrupt
// or hostile length from allocating unbounded memory.
const MaxFieldSize = 8 << 20

// MaxListLen bounds the number of elements of a decoded list.
const MaxListLen = 1 << 20

// writer appends the codec's primitive values to a byte slice.
type writer struct{ b []byte }

func (w *writer) u8(v uint8)       { w.b = append(w.b, v) }
func (w *writer) uvarint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *writer) varint(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *writer) u32(v uint32)     { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) id(v ID)          { w.b = append(w.b, v[:]...) }
func (w *writer) nameKey(v NameKey) {
	w.b = append(w.b, v[:]...)
}
func (w *writer) bytes(v []byte) {
	w.uvarint(uint64(len(v)))
	w.b = append(w.b, v...)
}

// chunks writes a list of byte strings, growing the buffer once for all
// of them: the chunks of a large message are most of its command, and
// growing by doubling as each is appended copies them again.
func (w *writer) chunks(cs [][]byte) {
	n := binary.MaxVarintLen64
	for _, c := range cs {
		n += len(c) + binary.MaxVarintLen64
	}
	w.b = slices.Grow(w.b, n)
	w.uvarint(uint64(len(cs)))
	for _, c := range cs {
		w.bytes(c)
	}
}
func (w *writer) str(v string) {
	w.uvarint(uint64(len(v)))
	w.b = append(w.b, v...)
}
func (w *writer) boolean(v bool) {
	if v {
		w.u8(1)
	} else {
		w.u8(0)
	}
}

// reader decodes what writer wrote. The first error sticks: later calls
// return zero values, and err reports the first failure.
type reader struct {
	b   []byte
	err error
	// shareChunks makes chunk return views of b instead of copies. A
	// message's chunks are most of a command's bytes and are only written
	// into the state file, which copies them at commit; the input of
	// DecodeCommand (a log entry, a request body) is not written again.
	shareChunks bool
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("decode: "+format+": %w", append(args, ErrInvalid)...)
	}
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("need %d bytes, have %d", n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	v := r.take(4)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (r *reader) id() ID {
	var id ID
	copy(id[:], r.take(len(id)))
	return id
}

func (r *reader) nameKey() NameKey {
	var k NameKey
	copy(k[:], r.take(len(k)))
	return k
}

// bytes reads a length-prefixed byte string as a copy; empty is nil.
func (r *reader) bytes() []byte {
	return bytes.Clone(r.view())
}

// view reads a length-prefixed byte string as a view of b, nil when empty.
func (r *reader) view() []byte {
	n := r.uvarint()
	if n > MaxFieldSize {
		r.fail("field of %d bytes exceeds limit", n)
		return nil
	}
	if v := r.take(int(n)); len(v) > 0 {
		return v
	}
	return nil
}

// chunk reads a byte string as bytes does, sharing b's memory when
// r.shareChunks is set.
func (r *reader) chunk() []byte {
	if r.shareChunks {
		return r.view()
	}
	return r.bytes()
}

func (r *reader) str() string {
	n := r.uvarint()
	if n > MaxFieldSize {
		r.fail("string of %d bytes exceeds limit", n)
		return ""
	}
	return string(r.take(int(n)))
}

func (r *reader) boolean() bool {
	switch r.u8() {
	case 0:
		return false
	case 1:
		return true
	default:
		r.fail("bad bool")
		return false
	}
}

// listLen reads a list length and checks it against MaxListLen and against
// the bytes left (each element takes at least minSize bytes).
func (r *reader) listLen(minSize int) int {
	n := r.uvarint()
	if n > MaxListLen || (minSize > 0 && n > uint64(len(r.b)/minSize)) {
		r.fail("list of %d elements is too long", n)
		return 0
	}
	if n > math.MaxInt32 {
		r.fail("list too long")
		return 0
	}
	return int(n)
}

// more reports whether bytes are left: an optional field added at the end
// of an encoding is read only when present.
func (r *reader) more() bool { return r.err == nil && len(r.b) > 0 }

// done fails if bytes are left over, then returns the sticky error.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}
