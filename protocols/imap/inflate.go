package imap

import (
	"errors"
	"io"
)

// inflater decodes the raw DEFLATE stream (RFC 1951) a COMPRESS client
// sends, for an interactive protocol: it reads its input a byte at a
// time and only when the next bit is needed, and it hands on what it has
// decoded before it would wait for input. A client may end a burst with
// any flush: zlib's Z_SYNC_FLUSH (an empty stored block) or
// Z_PARTIAL_FLUSH (the block ends, then an empty fixed-code block whose
// last bits zlib keeps until its next output), as mbsync does. The
// standard library's inflater returns a block's bytes only at a stored
// block, so a partial flush left the command unread; klauspost/compress's
// reads ten bits past a dynamic block's end, which a partial flush does
// not send. Decoding is bit by bit, as zlib's puff does: slower than a
// table decoder, ample for a client's commands and uploads.
//
// It holds its 32 KiB window and two code tables, about 35 KiB.
type inflater struct {
	src inflateSource

	bits  uint32 // input bits not yet used, the next one lowest
	nbits uint

	window [windowSize]byte
	wpos   int   // where the next byte goes in window
	total  int64 // bytes written so far (a distance may not reach past the start)

	inBlock bool
	final   bool // the current (or last) block is the final one
	stored  int  // bytes left of a stored block
	huffman bool // in a fixed- or dynamic-code block
	lit     huffmanCode
	dist    huffmanCode
	copyLen int // bytes left of a back-reference being copied
	copyDst int // its distance

	err error
}

// inflateSource is the compressed input: bytes, and how many can be read
// without waiting (a *bufio.Reader over the connection).
type inflateSource interface {
	io.ByteReader
	Buffered() int
}

const (
	windowSize   = 1 << 15
	maxCodeBits  = 15
	maxLitCodes  = 288
	maxDistCodes = 30
)

// errCorrupt is returned for input that is not valid DEFLATE.
var errCorrupt = errors.New("inflate: corrupt deflate stream")

// newInflater returns an inflater reading src.
func newInflater(src inflateSource) *inflater { return &inflater{src: src} }

// huffmanCode is a canonical Huffman code as puff keeps it: how many
// codes there are of each length, and the symbols in code order.
type huffmanCode struct {
	count  [maxCodeBits + 1]uint16
	symbol [maxLitCodes]uint16
}

// build sets the code from the code lengths of its symbols. It fails
// for an over-subscribed set of lengths, and for an incomplete one unless
// incompleteOK (a code of one symbol, which RFC 1951 allows) or it is a
// single one-bit code (which the standard library's inflater accepts in
// every table).
func (h *huffmanCode) build(lengths []uint8, incompleteOK bool) error {
	h.count = [maxCodeBits + 1]uint16{}
	for _, l := range lengths {
		h.count[l]++
	}
	if int(h.count[0]) == len(lengths) {
		if incompleteOK {
			return nil
		}
		return errCorrupt
	}
	left := 1
	for l := 1; l <= maxCodeBits; l++ {
		left <<= 1
		left -= int(h.count[l])
		if left < 0 {
			return errCorrupt
		}
	}
	singleOneBit := h.count[1] == 1 && int(h.count[0]) == len(lengths)-1
	if left > 0 && !incompleteOK && !singleOneBit {
		return errCorrupt
	}
	var offs [maxCodeBits + 1]uint16
	for l := 1; l < maxCodeBits; l++ {
		offs[l+1] = offs[l] + h.count[l]
	}
	for sym, l := range lengths {
		if l != 0 {
			h.symbol[offs[l]] = uint16(sym)
			offs[l]++
		}
	}
	return nil
}

// Read decodes into p. It returns what it has as soon as going on would
// mean waiting for input, and io.EOF after the final block.
func (f *inflater) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if f.err != nil {
			break
		}
		if f.copyLen > 0 {
			b := f.window[(f.wpos-f.copyDst)&(windowSize-1)]
			f.put(b)
			p[n] = b
			n++
			f.copyLen--
			continue
		}
		// Everything below may read input: return what there is first
		// when the input has nothing buffered (and the bits held may not
		// be enough).
		if n > 0 && f.src.Buffered() == 0 {
			break
		}
		if err := f.step(p, &n); err != nil {
			f.err = err
		}
	}
	if n > 0 {
		return n, nil
	}
	return 0, f.err
}

// step decodes one thing: a block header, a stored byte or a code's
// symbol, writing any literal byte to p[*n].
func (f *inflater) step(p []byte, n *int) error {
	switch {
	case !f.inBlock:
		if f.final {
			return io.EOF
		}
		return f.header()
	case f.stored > 0:
		b, err := f.src.ReadByte()
		if err != nil {
			return noEOF(err)
		}
		f.put(b)
		p[*n] = b
		*n++
		f.stored--
		if f.stored == 0 {
			f.inBlock = false
		}
		return nil
	case f.huffman:
		sym, err := f.decode(&f.lit)
		if err != nil {
			return err
		}
		switch {
		case sym < 256:
			f.put(byte(sym))
			p[*n] = byte(sym)
			*n++
		case sym == 256:
			f.inBlock = false
		default:
			return f.backReference(sym)
		}
		return nil
	default:
		f.inBlock = false // an empty stored block
		return nil
	}
}

// header reads a block header, and a dynamic block's code tables.
func (f *inflater) header() error {
	v, err := f.need(3)
	if err != nil {
		return err
	}
	f.final = v&1 == 1
	f.inBlock = true
	switch v >> 1 {
	case 0:
		// Stored: the rest of this byte is padding, then LEN and NLEN.
		f.bits, f.nbits = 0, 0
		var b [4]byte
		for i := range b {
			c, err := f.src.ReadByte()
			if err != nil {
				return noEOF(err)
			}
			b[i] = c
		}
		length := int(b[0]) | int(b[1])<<8
		if length != ^(int(b[2])|int(b[3])<<8)&0xffff {
			return errCorrupt
		}
		f.huffman, f.stored = false, length
		return nil
	case 1:
		f.fixedCodes()
		f.huffman = true
		return nil
	case 2:
		f.huffman = true
		return f.dynamicCodes()
	default:
		return errCorrupt
	}
}

// fixedCodes sets the fixed codes of RFC 1951 section 3.2.6.
func (f *inflater) fixedCodes() {
	var lengths [maxLitCodes]uint8
	for i := range lengths {
		switch {
		case i < 144:
			lengths[i] = 8
		case i < 256:
			lengths[i] = 9
		case i < 280:
			lengths[i] = 7
		default:
			lengths[i] = 8
		}
	}
	_ = f.lit.build(lengths[:], false) // complete by construction
	var dist [maxDistCodes]uint8
	for i := range dist {
		dist[i] = 5
	}
	_ = f.dist.build(dist[:], true) // 30 of 32 codes: incomplete by design
}

// codeLengthOrder is the order of the code length code's lengths.
var codeLengthOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// dynamicCodes reads a dynamic block's code tables (RFC 1951 3.2.7).
func (f *inflater) dynamicCodes() error {
	v, err := f.need(14)
	if err != nil {
		return err
	}
	nlen, ndist, ncode := int(v&0x1f)+257, int(v>>5&0x1f)+1, int(v>>10)+4
	if nlen > 286 || ndist > maxDistCodes {
		return errCorrupt
	}
	var clen [19]uint8
	for i := 0; i < ncode; i++ {
		b, err := f.need(3)
		if err != nil {
			return err
		}
		clen[codeLengthOrder[i]] = uint8(b)
	}
	var lencode huffmanCode
	if err := lencode.build(clen[:], false); err != nil {
		return err
	}
	var lengths [286 + maxDistCodes]uint8
	for i := 0; i < nlen+ndist; {
		sym, err := f.decode(&lencode)
		if err != nil {
			return err
		}
		if sym < 16 {
			lengths[i] = uint8(sym)
			i++
			continue
		}
		var repeat int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return errCorrupt
			}
			val = lengths[i-1]
			b, err := f.need(2)
			if err != nil {
				return err
			}
			repeat = 3 + int(b)
		case 17:
			b, err := f.need(3)
			if err != nil {
				return err
			}
			repeat = 3 + int(b)
		default:
			b, err := f.need(7)
			if err != nil {
				return err
			}
			repeat = 11 + int(b)
		}
		if i+repeat > nlen+ndist {
			return errCorrupt
		}
		for ; repeat > 0; repeat-- {
			lengths[i] = val
			i++
		}
	}
	if lengths[256] == 0 {
		return errCorrupt // no end-of-block code
	}
	// The literal/length code must be complete unless it has a single
	// code; so may the distance code (RFC 1951 3.2.7).
	lit := lengths[:nlen]
	if err := f.lit.build(lit, nonZero(lit) == 1); err != nil {
		return err
	}
	dist := lengths[nlen : nlen+ndist]
	return f.dist.build(dist, nonZero(dist) <= 1)
}

// nonZero counts the lengths that are not zero.
func nonZero(lengths []uint8) int {
	n := 0
	for _, l := range lengths {
		if l != 0 {
			n++
		}
	}
	return n
}

// Bases and extra bits of the length (257-285) and distance codes.
var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
)

// backReference reads a length code's extra bits and its distance, and
// starts the copy.
func (f *inflater) backReference(sym int) error {
	sym -= 257
	if sym >= len(lengthBase) {
		return errCorrupt
	}
	extra, err := f.need(uint(lengthExtra[sym]))
	if err != nil {
		return err
	}
	length := int(lengthBase[sym]) + int(extra)
	d, err := f.decode(&f.dist)
	if err != nil {
		return err
	}
	if d >= len(distBase) {
		return errCorrupt
	}
	extra, err = f.need(uint(distExtra[d]))
	if err != nil {
		return err
	}
	dist := int(distBase[d]) + int(extra)
	if int64(dist) > f.total {
		return errCorrupt // reaches before the start of the stream
	}
	f.copyLen, f.copyDst = length, dist
	return nil
}

// put appends a decoded byte to the window.
func (f *inflater) put(b byte) {
	f.window[f.wpos] = b
	f.wpos = (f.wpos + 1) & (windowSize - 1)
	f.total++
}

// need returns the next n bits (n <= 16), reading only the bytes they
// take.
func (f *inflater) need(n uint) (uint32, error) {
	for f.nbits < n {
		b, err := f.src.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		f.bits |= uint32(b) << f.nbits
		f.nbits += 8
	}
	v := f.bits & (1<<n - 1)
	f.bits >>= n
	f.nbits -= n
	return v, nil
}

// decode reads one symbol of h, a bit at a time (codes are sent most
// significant bit first).
func (f *inflater) decode(h *huffmanCode) (int, error) {
	code, first, index := 0, 0, 0
	for l := 1; l <= maxCodeBits; l++ {
		b, err := f.need(1)
		if err != nil {
			return 0, err
		}
		code |= int(b)
		count := int(h.count[l])
		if code-first < count {
			return int(h.symbol[index+code-first]), nil
		}
		index += count
		first = (first + count) << 1
		code <<= 1
	}
	return 0, errCorrupt // no such code (an incomplete code's gap)
}

// noEOF turns the end of the input inside the stream into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
