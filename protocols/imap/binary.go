package imap

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime/quotedprintable"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
)

// errUnknownCTE answers BINARY on a part whose transfer encoding the
// server cannot decode (RFC 3516 section 4.3).
var errUnknownCTE = &imap.Error{
	Type: imap.StatusResponseTypeNo,
	Code: imap.ResponseCodeUnknownCTE,
	Text: "Unknown Content-Transfer-Encoding",
}

// binarySection is the content of BINARY[path] (RFC 3516 section 4.2):
// the part's body with its Content-Transfer-Encoding removed and nothing
// else changed - no charset conversion, unlike the library's
// ExtractBinarySection, which answers nothing at all for a text part in
// a charset it cannot convert. A part that does not exist, or is empty,
// is empty. BINARY[] is the whole message: as stored, or, when its own
// body is transfer-encoded, with the body decoded and the header saying
// "binary". An encoding the server does not know is errUnknownCTE.
func binarySection(msg []byte, path []int) ([]byte, error) {
	if !sectionPathOK(path) {
		return nil, nil
	}
	var header, body []byte
	if len(path) == 0 {
		header, body = splitMessage(msg)
	} else {
		parsed := withoutBrokenHeaderLines(msg)
		header = imapserver.ExtractBodySection(bytes.NewReader(parsed), &imap.FetchItemBodySection{Part: path, Specifier: imap.PartSpecifierMIME})
		body = imapserver.ExtractBodySection(bytes.NewReader(parsed), &imap.FetchItemBodySection{Part: path})
	}
	h, _ := parseHeaderSection(header)
	decoded, identity, err := decodeTransfer(h, body)
	switch {
	case err != nil:
		return nil, err
	case len(path) > 0:
		return decoded, nil
	case identity:
		return msg, nil
	}
	h.Set("Content-Transfer-Encoding", "binary")
	var buf bytes.Buffer
	if err := textproto.WriteHeader(&buf, h); err != nil {
		return nil, err
	}
	buf.Write(decoded)
	return buf.Bytes(), nil
}

// splitMessage cuts msg after the blank line that ends its header
// section; a message without one is all header.
func splitMessage(msg []byte) (header, body []byte) {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+4], msg[i+4:]
	}
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		return msg[:2], msg[2:]
	}
	return msg, nil
}

// decodeTransfer removes the Content-Transfer-Encoding of an entity's
// body; identity reports that there was none to remove. Multipart bodies
// are never decoded (RFC 2045 section 6.4 forbids encoding them).
func decodeTransfer(h textproto.Header, body []byte) (decoded []byte, identity bool, err error) {
	mediaType, _ := contentType(h)
	if strings.HasPrefix(mediaType, "multipart/") {
		return body, true, nil
	}
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "", "7bit", "8bit", "binary":
		return body, true, nil
	case "base64":
		return decodeBase64(body), false, nil
	case "quoted-printable":
		// On malformed input, what decoded up to it.
		b, _ := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		return b, false, nil
	}
	return nil, false, errUnknownCTE
}

// decodeBase64 decodes base64 leniently, as RFC 2045 section 6.8 asks:
// characters outside the alphabet are ignored, "=" ends the data,
// padding may be missing, and a dangling final character is dropped.
func decodeBase64(body []byte) []byte {
	return appendBase64(make([]byte, 0, len(body)/4*3+3), body)
}

// appendBase64 appends decodeBase64(body) to dst. Mail's base64 comes
// in lines of whole 4-character groups, so each such line of alphabet
// characters alone is decoded where it lies; any other line (padding,
// junk, a group split across lines) goes character by character
// through a buffer of what is not yet decoded, which gives what one
// decode of all the alphabet characters up to the first "=" would.
// Measured on a 1 MiB benchmark message's text attachment, the search
// record's decoding took a third of the time through go-message's
// decoding reader.
func appendBase64(dst, body []byte) []byte {
	var pending []byte // alphabet characters not yet decoded
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(pending) == 0 && len(line)%4 == 0 {
			// RawStdEncoding refuses "=" and skips CR and LF; a line
			// that decodes to its full length held neither.
			want := len(line) / 4 * 3
			dst = slices.Grow(dst, want)
			n, err := base64.RawStdEncoding.Decode(dst[len(dst):len(dst)+want], line)
			if err == nil && n == want {
				dst = dst[:len(dst)+n]
				continue
			}
		}
		for _, c := range line {
			switch {
			case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
				pending = append(pending, c)
			case c == '=':
				return appendPending(dst, pending)
			}
		}
		if len(pending)%4 == 0 {
			dst = appendPending(dst, pending)
			pending = pending[:0]
		}
	}
	return appendPending(dst, pending)
}

// appendPending appends the decoding of alphabet characters to dst,
// dropping a dangling last character.
func appendPending(dst, chars []byte) []byte {
	if len(chars)%4 == 1 {
		chars = chars[:len(chars)-1]
	}
	n := base64.RawStdEncoding.DecodedLen(len(chars))
	dst = slices.Grow(dst, n)
	n, _ = base64.RawStdEncoding.Decode(dst[len(dst):len(dst)+n], chars)
	return dst[:len(dst)+n]
}

// partial cuts the <offset.size> range out of b (RFC 3501 section
// 6.4.5); an offset past the end gives nothing.
func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) || p.Offset < 0 {
		return nil
	}
	b = b[p.Offset:]
	if p.Size >= 0 && p.Size < int64(len(b)) {
		b = b[:p.Size]
	}
	return b
}
