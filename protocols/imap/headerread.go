package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/emersion/go-message/textproto"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// readHeader reads a header section from br as textproto.ReadHeader
// does, leaving br at the start of the body, but passes over lines that
// are neither a field nor a field's continuation (no colon, such as a
// stray "From " line or a broken one in spam). go-message stops at the
// first such line: every field after it was lost, and its body was taken
// to start there, so ENVELOPE, SEARCH and BODYSTRUCTURE saw another
// message than the one stored. Dovecot reads past them too.
func readHeader(br *bufio.Reader) (textproto.Header, error) {
	var clean, line []byte
	for {
		part, err := br.ReadSlice('\n')
		line = append(line, part...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // a line longer than br's buffer: read on
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return textproto.Header{}, err
		}
		if len(line) > 0 {
			if blank := bytes.TrimRight(line, "\r\n"); len(blank) == 0 {
				clean = append(clean, line...)
				break
			}
			if isHeaderLine(line) {
				clean = append(clean, line...)
			}
		}
		if err != nil {
			break // the message ends within its header
		}
		line = line[:0]
	}
	return headerOf(clean)
}

// isHeaderLine reports whether line (a line of a header section, with
// its line end) is a field, a name of printable characters before a
// colon as go-message wants it, or a field's continuation.
func isHeaderLine(line []byte) bool {
	if line[0] == ' ' || line[0] == '\t' {
		return true
	}
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// withoutBrokenHeaderLines returns msg with the lines of its header
// section that isHeaderLine refuses left out, for parsers that stop at
// them (the library's BODYSTRUCTURE); msg itself when it has none. Only
// the header changes, so the sizes of the body and its parts stay.
func withoutBrokenHeaderLines(msg []byte) []byte {
	hl := schema.HeaderLength(msg)
	var out []byte // made at the first broken line
	kept := 0      // msg[kept:i] is still to be copied
	for i := 0; i < hl; {
		end := hl
		if j := bytes.IndexByte(msg[i:hl], '\n'); j >= 0 {
			end = i + j + 1
		}
		if line := msg[i:end]; len(bytes.TrimRight(line, "\r\n")) > 0 && !isHeaderLine(line) {
			if out == nil {
				out = make([]byte, 0, len(msg))
			}
			out = append(out, msg[kept:i]...)
			kept = end
		}
		i = end
	}
	if out == nil {
		return msg
	}
	return append(out, msg[kept:]...)
}

// parseHeaderSection parses the header section of b (a message, or a
// header section alone) as readHeader does; a header with no broken line
// is parsed where it lies, without a copy.
func parseHeaderSection(b []byte) (textproto.Header, error) {
	return headerOf(withoutBrokenHeaderLines(b))
}

// headerReaders holds the readers headerOf parses through: FETCH and
// SEARCH parse a header for nearly every message they answer, and a
// fresh reader's 4 KiB buffer was most of what that allocated.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

// headerOf parses the header section at the start of b with go-message,
// which copies every field out of its reader.
func headerOf(b []byte) (textproto.Header, error) {
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(bytes.NewReader(b))
	h, err := textproto.ReadHeader(br)
	br.Reset(nil)
	headerReaders.Put(br)
	return h, err
}
