package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// Limits on the MIME structures handed to the library's recursive
// parsers. A message beyond them is still stored and served byte for byte;
// only its BODYSTRUCTURE is simplified and text search falls back to the
// raw bytes.
const (
	// maxMIMEDepth bounds nesting (multipart and message/rfc822 levels).
	// The library recurses once per level, and each level wraps the reader
	// of its parent, so unbounded nesting costs unbounded stack and time.
	maxMIMEDepth = 64
	// maxMIMEParts bounds the number of entities in one message; the
	// library builds a node per entity.
	maxMIMEParts = 4096
)

var (
	errMIMETooDeep = errors.New("mime structure nested too deeply")
	errMIMETooWide = errors.New("mime structure has too many parts")
	// errFound ends textPieces' walk once fn is satisfied.
	errFound = errors.New("found")
)

// mimeEntity is one entity met by walkMIME.
type mimeEntity struct {
	header textproto.Header
	// mediaType is the header's media type (contentType), parsed once.
	mediaType string
	depth     int
	// body is the raw (transfer-encoded) body of a leaf; nil for multipart
	// and message/rfc822 entities, whose content is walked instead.
	body io.Reader
}

// walkMIME visits every entity of msg in depth-first order, descending
// into multipart and message/rfc822 (or message/global) entities exactly
// as imapserver.ExtractBodyStructure does, and fails with errMIMETooDeep or
// errMIMETooWide past the limits. Its own recursion is bounded by
// maxMIMEDepth.
func walkMIME(msg []byte, visit func(e *mimeEntity) error) error {
	br := bufio.NewReader(bytes.NewReader(msg))
	h, _ := readHeader(br)
	count := 0
	return walkEntity(h, br, 0, &count, visit)
}

func walkEntity(h textproto.Header, body io.Reader, depth int, count *int, visit func(e *mimeEntity) error) error {
	if depth > maxMIMEDepth {
		return errMIMETooDeep
	}
	if *count++; *count > maxMIMEParts {
		return errMIMETooWide
	}
	mediaType, params := contentType(h)
	primary, _, _ := strings.Cut(mediaType, "/")
	switch {
	case primary == "multipart":
		if err := visit(&mimeEntity{header: h, mediaType: mediaType, depth: depth}); err != nil {
			return err
		}
		mr := textproto.NewMultipartReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if err != nil {
				// Like the library, stop at the first malformed part.
				return nil
			}
			if err := walkEntity(part.Header, part, depth+1, count, visit); err != nil {
				return err
			}
		}
	case mediaType == "message/rfc822" || mediaType == "message/global":
		if err := visit(&mimeEntity{header: h, mediaType: mediaType, depth: depth}); err != nil {
			return err
		}
		br := bufio.NewReader(body)
		inner, _ := readHeader(br)
		return walkEntity(inner, br, depth+1, count, visit)
	default:
		return visit(&mimeEntity{header: h, mediaType: mediaType, depth: depth, body: body})
	}
}

// contentType returns an entity's media type and parameters the way the
// library's parsers see them.
func contentType(h textproto.Header) (string, map[string]string) {
	mh := gomessage.Header{Header: h}
	mediaType, params, _ := mh.ContentType()
	return mediaType, params
}

// bodyStructureOf computes the BODYSTRUCTURE of a whole message. Messages
// within the MIME limits get the library's structure, made safe to encode;
// others are described as one opaque application/octet-stream part.
//
// The ENVELOPEs of attached messages are rebuilt with envelopeOfHeader,
// which keeps address groups.
func bodyStructureOf(msg []byte) imap.BodyStructure {
	// The header of each attached message, in the order the library's
	// structure lists them (depth first).
	var attached []textproto.Header
	nextAttached := false
	err := walkMIME(msg, func(e *mimeEntity) error {
		if nextAttached {
			attached = append(attached, e.header)
		}
		nextAttached = e.body == nil && (e.mediaType == "message/rfc822" || e.mediaType == "message/global")
		return nil
	})
	if err != nil {
		return opaqueStructure(msg)
	}
	bs := sanitizeBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(withoutBrokenHeaderLines(msg))))
	if countAttached(bs) == len(attached) {
		setAttachedEnvelopes(bs, attached)
	}
	return bs
}

// countAttached counts the message/rfc822 parts of a structure.
func countAttached(bs imap.BodyStructure) int {
	n := 0
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if m := bs.MessageRFC822; m != nil {
			n = 1 + countAttached(m.BodyStructure)
		}
	case *imap.BodyStructureMultiPart:
		for _, c := range bs.Children {
			n += countAttached(c)
		}
	}
	return n
}

// setAttachedEnvelopes gives the message/rfc822 parts of bs, depth first,
// the envelopes of headers, and returns the headers left over.
func setAttachedEnvelopes(bs imap.BodyStructure, headers []textproto.Header) []textproto.Header {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if m := bs.MessageRFC822; m != nil && len(headers) > 0 {
			m.Envelope = envelopeOfHeader(headers[0])
			return setAttachedEnvelopes(m.BodyStructure, headers[1:])
		}
	case *imap.BodyStructureMultiPart:
		for _, c := range bs.Children {
			headers = setAttachedEnvelopes(c, headers)
		}
	}
	return headers
}

// opaqueStructure describes msg's body as a single binary part.
func opaqueStructure(msg []byte) imap.BodyStructure {
	size := len(msg)
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		size = len(msg) - i - 4
	}
	return &imap.BodyStructureSinglePart{
		Type:     "application",
		Subtype:  "octet-stream",
		Encoding: "binary",
		Size:     uint32(size),
		Extended: &imap.BodyStructureSinglePartExt{},
	}
}

// sanitizeBodyStructure fixes what the library's parser can produce but
// its encoder rejects or encodes badly: multiparts without children (the
// encoder panics), nodes without extension data (the encoder panics when
// BODYSTRUCTURE is asked for), and empty media types (invalid syntax).
func sanitizeBodyStructure(bs imap.BodyStructure) imap.BodyStructure {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if bs.Type == "" || bs.Subtype == "" {
			bs.Type, bs.Subtype = "text", "plain"
			if bs.Text == nil {
				bs.Text = &imap.BodyStructureText{}
			}
		}
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureSinglePartExt{}
		}
		if m := bs.MessageRFC822; m != nil {
			if m.Envelope == nil {
				m.Envelope = &imap.Envelope{}
			}
			m.BodyStructure = sanitizeBodyStructure(m.BodyStructure)
		}
		return bs
	case *imap.BodyStructureMultiPart:
		if bs.Subtype == "" {
			bs.Subtype = "mixed"
		}
		if len(bs.Children) == 0 {
			bs.Children = []imap.BodyStructure{&imap.BodyStructureSinglePart{
				Type:     "text",
				Subtype:  "plain",
				Text:     &imap.BodyStructureText{},
				Extended: &imap.BodyStructureSinglePartExt{},
			}}
		}
		for i, c := range bs.Children {
			bs.Children[i] = sanitizeBodyStructure(c)
		}
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureMultiPartExt{}
		}
		return bs
	default:
		return &imap.BodyStructureSinglePart{
			Type:     "text",
			Subtype:  "plain",
			Text:     &imap.BodyStructureText{},
			Extended: &imap.BodyStructureSinglePartExt{},
		}
	}
}

// sectionPathOK reports whether a section's part path is within the MIME
// depth limit; deeper paths cannot name an existing part.
func sectionPathOK(part []int) bool { return len(part) <= maxMIMEDepth }

// containsText reports whether the decoded text of msg contains needle
// (already lower-cased), case-insensitively. With withHeaders, header
// fields (of the message and of attached messages) are searched too
// (SEARCH TEXT); otherwise only bodies are (SEARCH BODY). Text parts are
// decoded from their transfer encoding; a message beyond the MIME limits
// is searched as raw bytes.
func containsText(msg []byte, needle string, withHeaders bool) bool {
	if needle == "" {
		return true
	}
	n := []byte(needle)
	return textPieces(msg, withHeaders, func(piece []byte, _ bool) bool {
		return bytes.Contains(piece, n)
	})
}

// maxPooledText bounds the scratch buffers textPieces keeps for reuse,
// so one large message does not pin its size in memory.
const maxPooledText = 1 << 20

// textScratch holds textPieces' buffers between calls: the decoded body
// of a part and a lower-cased header string.
var textScratch = sync.Pool{New: func() any { return new(textBuffers) }}

type textBuffers struct {
	body    bytes.Buffer
	decoded []byte // a base64 body decoded
	lower   []byte // a non-ASCII body lower-cased
	header  []byte
}

// decode returns the body of leaf e decoded from its transfer encoding,
// in memory of bufs that the caller may change. A body in an unknown
// encoding is given undecoded. Base64, most of the bytes of large mail,
// is decoded by appendBase64, as BINARY decodes it; go-message's
// decoding reader filters it a byte at a time and stops at the first
// character outside the alphabet.
func (bufs *textBuffers) decode(e *mimeEntity) []byte {
	bufs.body.Reset()
	if strings.EqualFold(strings.TrimSpace(e.header.Get("Content-Transfer-Encoding")), "base64") {
		_, _ = bufs.body.ReadFrom(e.body)
		bufs.decoded = appendBase64(slices.Grow(bufs.decoded[:0], bufs.body.Len()/4*3), bufs.body.Bytes())
		return bufs.decoded
	}
	ent, _ := gomessage.New(gomessage.Header{Header: e.header}, e.body) // unknown charsets and encodings: undecoded
	if ent == nil {
		return nil
	}
	_, _ = bufs.body.ReadFrom(ent.Body)
	return bufs.body.Bytes()
}

// textPieces calls fn with each lower-cased text that SEARCH BODY (and,
// with withHeaders, TEXT) compares a needle against, until fn returns
// true, and reports whether it did: with withHeaders, the name, decoded
// text and raw value of every header field of every entity (header
// true); the decoded body of every leaf whose media type is text/* or
// message/* (a part without Content-Type is text/plain), so attachments
// of other types (images, PDF, archives) are never decoded nor searched,
// as in Dovecot without FTS; and, for a message beyond the MIME limits
// in which nothing matched, the whole raw message. containsText and the
// search record (searchrecord.go) both read it, so a record answers
// exactly as reading the message does. A piece is only valid during the
// call to fn (its buffer is reused).
func textPieces(msg []byte, withHeaders bool, fn func(piece []byte, header bool) bool) bool {
	bufs := textScratch.Get().(*textBuffers)
	defer func() {
		if bufs.body.Cap() <= maxPooledText && cap(bufs.decoded) <= maxPooledText && cap(bufs.lower) <= maxPooledText && cap(bufs.header) <= maxPooledText {
			bufs.body.Reset()
			textScratch.Put(bufs)
		}
	}()
	found := false
	err := walkMIME(msg, func(e *mimeEntity) error {
		if withHeaders && headerPieces(e.header, &bufs.header, fn) {
			found = true
			return errFound
		}
		if e.body == nil {
			return nil
		}
		if !strings.HasPrefix(e.mediaType, "text/") && !strings.HasPrefix(e.mediaType, "message/") {
			return nil
		}
		if fn(lowerOwned(bufs.decode(e), &bufs.lower), false) {
			found = true
			return errFound
		}
		return nil
	})
	if found {
		return true
	}
	if errors.Is(err, errMIMETooDeep) || errors.Is(err, errMIMETooWide) {
		return fn(bytes.ToLower(msg), false)
	}
	return false
}

// lowerOwned returns bytes.ToLower(b): b lower-cased in place when it
// is ASCII (b must be the caller's to change), else appended to
// (*scratch)[:0].
func lowerOwned(b []byte, scratch *[]byte) []byte {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			*scratch = appendLowerBytes((*scratch)[:0], b)
			return *scratch
		}
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}

// appendLowerBytes appends bytes.ToLower(s) to dst: it maps s the way
// bytes.Map(unicode.ToLower, s) does (an invalid byte becomes U+FFFD),
// with ASCII bytes mapped directly.
func appendLowerBytes(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, wid := utf8.DecodeRune(s[i:])
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
		i += wid
	}
	return dst
}

// appendLower appends strings.ToLower(s) to dst, without a new string
// when s is ASCII.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return append(dst, strings.ToLower(s)...)
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// headerPieces calls fn with the lower-cased name, decoded text and raw
// value of every field of h, until fn returns true; *scratch holds each
// piece in turn.
func headerPieces(h textproto.Header, scratch *[]byte, fn func(piece []byte, header bool) bool) bool {
	mh := gomessage.Header{Header: h}
	fields := mh.Fields()
	piece := func(s string) bool {
		*scratch = appendLower((*scratch)[:0], s)
		return fn(*scratch, true)
	}
	for fields.Next() {
		if piece(fields.Key()) {
			return true
		}
		if text, err := fields.Text(); err == nil && piece(text) {
			return true
		}
		if piece(fields.Value()) {
			return true
		}
	}
	return false
}
