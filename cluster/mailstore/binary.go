package mailstore

import (
	"bytes"
	"mime"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// maxBinaryDepth bounds the MIME nesting normalizeKeepingBinary follows;
// deeper entities are normalised whole.
const maxBinaryDepth = 32

// normalizeKeepingBinary is schema.NormalizeCRLF for a message an IMAP
// client appended: every line ends in CRLF, except inside the bodies of
// parts sent with Content-Transfer-Encoding: binary (RFC 3516, APPEND
// with literal8), whose bytes are content and stay as they came, so that
// BINARY and BINARY.SIZE give back what was appended. A message without
// a bare LF, or without such a part, comes out as NormalizeCRLF makes it.
func normalizeKeepingBinary(msg []byte) []byte {
	if !hasBareLF(msg) {
		return msg // the common case: SMTP mail is CRLF already
	}
	if !containsFold(msg, "binary") {
		return schema.NormalizeCRLF(msg)
	}
	out := make([]byte, 0, len(msg)+len(msg)/32)
	return normalizeEntity(out, msg, 0)
}

// hasBareLF reports whether msg has a line feed without a carriage
// return before it.
func hasBareLF(msg []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			return false
		}
		i += j
		if i == 0 || msg[i-1] != '\r' {
			return true
		}
		i++
	}
}

// containsFold reports whether s holds sub, ASCII case-insensitively.
func containsFold(s []byte, sub string) bool {
	return bytes.Contains(bytes.ToLower(s), []byte(sub))
}

// normalizeEntity appends the normalised form of one MIME entity (a
// header section, a blank line, a body) to out.
func normalizeEntity(out, ent []byte, depth int) []byte {
	if depth >= maxBinaryDepth {
		return append(out, schema.NormalizeCRLF(ent)...)
	}
	hdrLen := entityHeaderLength(ent)
	header, body := ent[:hdrLen], ent[hdrLen:]
	out = append(out, schema.NormalizeCRLF(header)...)
	if hdrLen == len(ent) {
		return out // no body
	}
	ctype, params, cte := entityType(header)
	switch {
	case strings.HasPrefix(ctype, "multipart/") && params["boundary"] != "":
		return normalizeMultipart(out, body, params["boundary"], depth)
	case ctype == "message/rfc822" || ctype == "message/global":
		return normalizeEntity(out, body, depth+1)
	case cte == "binary":
		return append(out, body...)
	default:
		return append(out, schema.NormalizeCRLF(body)...)
	}
}

// entityHeaderLength returns the length of an entity's header section
// with the empty line that ends it (CRLF or bare LF), or len(ent) when
// no line is empty.
func entityHeaderLength(ent []byte) int {
	for i := 0; i < len(ent); {
		eol := bytes.IndexByte(ent[i:], '\n')
		if eol < 0 {
			return len(ent)
		}
		line := ent[i : i+eol]
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			return i + eol + 1
		}
		i += eol + 1
	}
	return len(ent)
}

// entityType reads an entity's Content-Type (lower-cased media type and
// its parameters; text/plain when absent or unreadable) and its
// Content-Transfer-Encoding (lower-cased).
func entityType(header []byte) (ctype string, params map[string]string, cte string) {
	ctype = "text/plain"
	var field []byte
	flush := func() {
		name, value, ok := bytes.Cut(field, []byte{':'})
		if !ok {
			return
		}
		v := strings.TrimSpace(string(value))
		switch strings.ToLower(strings.TrimSpace(string(name))) {
		case "content-type":
			if t, p, err := mime.ParseMediaType(v); err == nil {
				ctype, params = t, p
			}
		case "content-transfer-encoding":
			cte = strings.ToLower(v)
		}
	}
	for _, line := range bytes.Split(header, []byte{'\n'}) {
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			field = append(field, ' ')
			field = append(field, bytes.TrimLeft(line, " \t")...)
			continue
		}
		flush()
		field = append(field[:0], line...)
	}
	flush()
	return ctype, params, cte
}

// normalizeMultipart appends a multipart body: each delimiter line and
// the preamble and epilogue normalised, each part as an entity of its
// own. The line break before a delimiter belongs to the delimiter (RFC
// 2046 section 5.1.1), so a binary part ends where its content ends.
func normalizeMultipart(out, body []byte, boundary string, depth int) []byte {
	delim := []byte("--" + boundary)
	// starts of delimiter lines: at the body's start or after a LF.
	var at []int
	for i := 0; i <= len(body)-len(delim); {
		j := bytes.Index(body[i:], delim)
		if j < 0 {
			break
		}
		p := i + j
		if p == 0 || body[p-1] == '\n' {
			at = append(at, p)
		}
		i = p + len(delim)
	}
	if len(at) == 0 {
		return append(out, schema.NormalizeCRLF(body)...)
	}
	// breakBefore returns where the line break before position p starts.
	breakBefore := func(p int) int {
		if p == 0 {
			return 0
		}
		if p >= 2 && body[p-2] == '\r' {
			return p - 2
		}
		return p - 1
	}
	// pos is how much of body is in out.
	pos := breakBefore(at[0])
	out = append(out, schema.NormalizeCRLF(body[:pos])...) // the preamble
	for k, p := range at {
		// The delimiter line, with the break before it.
		lineEnd := len(body)
		if eol := bytes.IndexByte(body[p:], '\n'); eol >= 0 {
			lineEnd = p + eol + 1
		}
		out = append(out, schema.NormalizeCRLF(body[pos:lineEnd])...)
		pos = lineEnd
		line := bytes.TrimRight(body[p:lineEnd], "\r\n")
		if bytes.HasPrefix(line[len(delim):], []byte("--")) {
			// The close delimiter: the rest is the epilogue.
			return append(out, schema.NormalizeCRLF(body[pos:])...)
		}
		if k == len(at)-1 {
			// No close delimiter: the last part runs to the end.
			return normalizeEntity(out, body[pos:], depth+1)
		}
		end := max(breakBefore(at[k+1]), pos)
		out = normalizeEntity(out, body[pos:end], depth+1)
		pos = end
	}
	return out
}
