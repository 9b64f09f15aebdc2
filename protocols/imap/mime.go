package imap

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"

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
)

// mimeEntity is one entity met by walkMIME.
type mimeEntity struct {
	header textproto.Header
	depth  int
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
	h, _ := textproto.ReadHeader(br)
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
		if err := visit(&mimeEntity{header: h, depth: depth}); err != nil {
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
		if err := visit(&mimeEntity{header: h, depth: depth}); err != nil {
			return err
		}
		br := bufio.NewReader(body)
		inner, _ := textproto.ReadHeader(br)
		return walkEntity(inner, br, depth+1, count, visit)
	default:
		return visit(&mimeEntity{header: h, depth: depth, body: body})
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
		mediaType, _ := contentType(e.header)
		nextAttached = e.body == nil && (mediaType == "message/rfc822" || mediaType == "message/global")
		return nil
	})
	if err != nil {
		return opaqueStructure(msg)
	}
	bs := sanitizeBodyStructure(imapserver.ExtractBodyStructure(bytes.NewReader(msg)))
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

// textPieces calls fn with each lower-cased text that SEARCH BODY (and,
// with withHeaders, TEXT) compares a needle against, until fn returns
// true, and reports whether it did: with withHeaders, the name, decoded
// text and raw value of every header field of every entity (header
// true); the decoded body of every text or message leaf; and, for a
// message beyond the MIME limits in which nothing matched, the whole raw
// message. containsText and the search record (searchrecord.go) both
// read it, so a record answers exactly as reading the message does.
func textPieces(msg []byte, withHeaders bool, fn func(piece []byte, header bool) bool) bool {
	found := false
	errFound := errors.New("found")
	err := walkMIME(msg, func(e *mimeEntity) error {
		if withHeaders && headerPieces(e.header, fn) {
			found = true
			return errFound
		}
		if e.body == nil {
			return nil
		}
		mediaType, _ := contentType(e.header)
		if !strings.HasPrefix(mediaType, "text/") && !strings.HasPrefix(mediaType, "message/") {
			return nil
		}
		ent, err := gomessage.New(gomessage.Header{Header: e.header}, e.body)
		if ent == nil {
			return nil
		}
		_ = err // unknown charsets and encodings are searched undecoded
		b, _ := io.ReadAll(ent.Body)
		if fn(bytes.ToLower(b), false) {
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

// headerPieces calls fn with the lower-cased name, decoded text and raw
// value of every field of h, until fn returns true.
func headerPieces(h textproto.Header, fn func(piece []byte, header bool) bool) bool {
	mh := gomessage.Header{Header: h}
	fields := mh.Fields()
	for fields.Next() {
		if fn([]byte(strings.ToLower(fields.Key())), true) {
			return true
		}
		if text, err := fields.Text(); err == nil && fn([]byte(strings.ToLower(text)), true) {
			return true
		}
		if fn([]byte(strings.ToLower(fields.Value())), true) {
			return true
		}
	}
	return false
}
