package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// mailSpec describes a test message. With neither HTML nor attachments
// it is a single text/plain part; otherwise a realistic MIME tree:
// multipart/mixed of (multipart/alternative of text and HTML, or the
// text alone) followed by the attachments.
type mailSpec struct {
	From, To, Subject, MessageID string
	Date                         time.Time
	Text                         string
	HTML                         string
	Attachments                  []attachment
	// Extra header lines, without CRLF.
	Extra []string
}

// attachment is one attached file. Base64 ones are sent base64-encoded
// (so their bytes never appear raw in the message); others as 7bit text.
type attachment struct {
	Name        string
	ContentType string
	Data        []byte
	Base64      bool
}

// Boundaries of the generated multiparts.
const (
	mixedBoundary = "=_e2e_mixed_7f3a"
	altBoundary   = "=_e2e_alt_91c2"
)

// build renders the message with CRLF line endings.
func (s mailSpec) build() []byte {
	var b bytes.Buffer
	h := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	date := s.Date
	if date.IsZero() {
		date = time.Now()
	}
	h("From: %s", s.From)
	h("To: %s", s.To)
	h("Subject: %s", s.Subject)
	h("Date: %s", date.Format(time.RFC1123Z))
	if s.MessageID != "" {
		h("Message-ID: <%s>", s.MessageID)
	}
	for _, l := range s.Extra {
		h("%s", l)
	}
	h("MIME-Version: 1.0")

	textPart := func() {
		h("Content-Type: text/plain; charset=utf-8")
		h("Content-Transfer-Encoding: 7bit")
		h("")
		b.WriteString(crlf(s.Text))
	}
	body := func() {
		if s.HTML == "" {
			textPart()
			return
		}
		h("Content-Type: multipart/alternative; boundary=%q", altBoundary)
		h("")
		h("--%s", altBoundary)
		textPart()
		h("--%s", altBoundary)
		h("Content-Type: text/html; charset=utf-8")
		h("Content-Transfer-Encoding: 7bit")
		h("")
		b.WriteString(crlf(s.HTML))
		h("--%s--", altBoundary)
	}
	if len(s.Attachments) == 0 {
		body()
		return b.Bytes()
	}
	h("Content-Type: multipart/mixed; boundary=%q", mixedBoundary)
	h("")
	h("This is a multi-part message in MIME format.")
	h("--%s", mixedBoundary)
	body()
	for _, a := range s.Attachments {
		h("--%s", mixedBoundary)
		h("Content-Type: %s; name=%q", a.ContentType, a.Name)
		h("Content-Disposition: attachment; filename=%q", a.Name)
		if a.Base64 {
			h("Content-Transfer-Encoding: base64")
			h("")
			enc := base64.StdEncoding.EncodeToString(a.Data)
			for len(enc) > 76 {
				h("%s", enc[:76])
				enc = enc[76:]
			}
			h("%s", enc)
		} else {
			h("Content-Transfer-Encoding: 7bit")
			h("")
			b.WriteString(crlf(string(a.Data)))
		}
	}
	h("--%s--", mixedBoundary)
	return b.Bytes()
}

// crlf normalizes line endings to CRLF and ends the text with one.
func crlf(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.TrimSuffix(s, "\n")
	return strings.ReplaceAll(s, "\n", "\r\n") + "\r\n"
}

// simpleMessage is a short text/plain message.
func simpleMessage(from, to, subject, text string) []byte {
	return mailSpec{From: from, To: to, Subject: subject, MessageID: uniqueID("simple"), Text: text}.build()
}

// uniqueID returns a Message-ID (without angle brackets) no other test
// run produces.
func uniqueID(prefix string) string {
	return prefix + "." + randomHex(8) + "@client.e2e.test"
}

// randomHex returns 2n random lower-case hex digits.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}

// pdfBytes is a small binary attachment (a PDF header and bytes that are
// not valid UTF-8), sent base64-encoded.
func pdfBytes() []byte {
	b := []byte("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n")
	for i := 0; i < 300; i++ {
		b = append(b, byte(i*7), byte(255-i))
	}
	return append(b, []byte("\n%%EOF\n")...)
}
