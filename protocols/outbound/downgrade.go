package outbound

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"mime"
	"mime/quotedprintable"
	"net/textproto"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// errNoDowngrade means a message with 8-bit data cannot be made 7-bit.
var errNoDowngrade = errors.New("message cannot be converted to 7-bit")

// maxMIMEDepth bounds the nesting of multiparts sevenBit follows.
const maxMIMEDepth = 16

// sevenBit converts a message whose header section is ASCII and whose
// body has 8-bit data into a 7-bit one, for a server without 8BITMIME
// (RFC 6152 section 3 lets the client convert instead of returning the
// message): every text part with 8-bit data becomes quoted-printable,
// every other part base64, multipart structures are kept with their
// boundaries. It refuses (errNoDowngrade) 8-bit header sections, 8-bit
// data in a part that declares base64 or quoted-printable, in a
// message/* part (RFC 2046 allows those no other encoding), in a
// preamble or epilogue, and malformed multiparts. msg uses CRLF line
// ends.
func sevenBit(msg []byte, depth int) ([]byte, error) {
	if depth > maxMIMEDepth {
		return nil, errNoDowngrade
	}
	hl := schema.HeaderLength(msg)
	header, body := msg[:hl], msg[hl:]
	if !asciiBytes(header) {
		return nil, errNoDowngrade
	}
	if asciiBytes(body) {
		return msg, nil
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(header))).ReadMIMEHeader()
	if err != nil {
		return nil, errNoDowngrade
	}
	mt, params := "text/plain", map[string]string{}
	if ct := h.Get("Content-Type"); ct != "" {
		if mt, params, err = mime.ParseMediaType(ct); err != nil {
			return nil, errNoDowngrade
		}
	}
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		if cte == "8bit" || cte == "binary" {
			header = withEncoding(header, "7bit")
		}
		return sevenBitMultipart(header, body, params["boundary"], depth)
	case strings.HasPrefix(mt, "message/"):
		return nil, errNoDowngrade
	}
	switch cte {
	case "", "7bit", "8bit", "binary":
	default:
		return nil, errNoDowngrade
	}
	text := strings.HasPrefix(mt, "text/")
	var out bytes.Buffer
	if text {
		out.Write(withEncoding(header, "quoted-printable"))
	} else {
		out.Write(withEncoding(header, "base64"))
	}
	if text {
		w := quotedprintable.NewWriter(&out)
		if _, err := w.Write(body); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	enc := base64.StdEncoding.EncodeToString(body)
	for len(enc) > 76 {
		out.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc)
	return out.Bytes(), nil
}

// sevenBitMultipart converts each part of a multipart body.
func sevenBitMultipart(header, body []byte, boundary string, depth int) ([]byte, error) {
	if boundary == "" || len(boundary) > 70 {
		return nil, errNoDowngrade
	}
	delim := "--" + boundary
	var out bytes.Buffer
	out.Write(header)
	partStart := -1
	closed := false
	for pos := 0; pos < len(body) && !closed; {
		end := bytes.Index(body[pos:], []byte("\r\n"))
		next := len(body)
		if end < 0 {
			end = len(body)
		} else {
			end += pos
			next = end + 2
		}
		line := string(body[pos:end])
		rest, isDelim := strings.CutPrefix(line, delim)
		if isDelim {
			rest = strings.TrimRight(rest, " \t")
			isClose := rest == "--"
			if rest != "" && !isClose {
				isDelim = false // a line that only starts like the delimiter
			} else {
				if partStart < 0 {
					if !asciiBytes(body[:pos]) {
						return nil, errNoDowngrade // 8-bit preamble
					}
					out.Write(body[:pos])
				} else {
					partEnd := max(pos-2, partStart)
					part, err := sevenBit(body[partStart:partEnd], depth+1)
					if err != nil {
						return nil, err
					}
					// The line end before a delimiter belongs to it.
					out.Write(part)
					out.WriteString("\r\n")
				}
				out.WriteString(line[:len(delim)+len(rest)] + "\r\n")
				partStart = next
				if isClose {
					if !asciiBytes(body[next:]) {
						return nil, errNoDowngrade // 8-bit epilogue
					}
					out.Write(body[next:])
					closed = true
				}
			}
		}
		pos = next
	}
	if !closed {
		return nil, errNoDowngrade
	}
	return out.Bytes(), nil
}

// withEncoding returns header with its Content-Transfer-Encoding fields
// replaced by one naming enc.
func withEncoding(header []byte, enc string) []byte {
	fields := bytes.TrimSuffix(header, []byte("\r\n")) // the blank line
	var out bytes.Buffer
	skip := false
	for _, line := range bytes.SplitAfter(fields, []byte("\r\n")) {
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !skip {
				out.Write(line)
			}
			continue
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		skip = strings.EqualFold(strings.TrimSpace(string(name)), "Content-Transfer-Encoding")
		if !skip {
			out.Write(line)
		}
	}
	if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\r\n")) {
		out.WriteString("\r\n")
	}
	out.WriteString("Content-Transfer-Encoding: " + enc + "\r\n\r\n")
	return out.Bytes()
}

func asciiBytes(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
