package corpus

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime/quotedprintable"
	"net/url"
	"strings"
	"time"
)

// headerBlock is what the top-level header section says.
type headerBlock struct {
	tag        string
	messageID  string
	from       sender
	to         string
	subject    string
	reply      bool
	inReplyTo  string
	references []string
	date       time.Time
}

// minTextBudget is the least a message's first text part holds.
const minTextBudget = 200

// writeMessage writes a whole message of kind to buf, aiming at size
// bytes in total (exactly, unless the structure alone is larger).
func writeMessage(buf *bytes.Buffer, rng *rand.Rand, h headerBlock, kind Kind, size int) error {
	utf8 := rng.IntN(100) < 30
	boundary := fmt.Sprintf("=_mb_%016x", rng.Uint64())
	writeHeaders(buf, rng, h)
	switch kind {
	case KindText:
		writeTextPartHeaders(buf, utf8)
		buf.WriteString("\r\n")
		writeText(buf, rng, size-buf.Len(), utf8, h.reply)
	case KindAlternative:
		fmt.Fprintf(buf, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n", boundary)
		if rng.IntN(2) == 0 {
			fmt.Fprintf(buf, "List-Unsubscribe: <mailto:unsubscribe+%08x@lists.example.net>\r\n", rng.Uint32())
		}
		buf.WriteString("\r\nThis is a multi-part message in MIME format.\r\n")
		var html bytes.Buffer
		htmlBudget := max(minTextBudget, (size-buf.Len()-400)*3/5)
		writeHTML(&html, rng, htmlBudget, utf8)
		fmt.Fprintf(buf, "--%s\r\n", boundary)
		writeTextPartHeaders(buf, utf8)
		buf.WriteString("\r\n")
		tail := fmt.Sprintf("--%s\r\n", boundary) + htmlPartHeaders(utf8) + "\r\n"
		closing := fmt.Sprintf("--%s--\r\n", boundary)
		textBudget := size - buf.Len() - len(tail) - html.Len() - len(closing)
		writeText(buf, rng, max(minTextBudget, textBudget), utf8, h.reply)
		buf.WriteString(tail)
		buf.Write(html.Bytes())
		buf.WriteString(closing)
	case KindAttachment:
		fmt.Fprintf(buf, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n", boundary)
		buf.WriteString("\r\nThis is a multi-part message in MIME format.\r\n")
		var parts bytes.Buffer
		n := 1 + rng.IntN(3)
		budget := size - buf.Len() - minTextBudget - 300 - n*300
		for j := 0; j < n; j++ {
			share := budget / (n - j)
			if j < n-1 {
				share = budget * (30 + rng.IntN(50)) / 100
			}
			before := parts.Len()
			fmt.Fprintf(&parts, "--%s\r\n", boundary)
			writeAttachment(&parts, rng, max(share, 256))
			budget -= parts.Len() - before
		}
		closing := fmt.Sprintf("--%s--\r\n", boundary)
		fmt.Fprintf(buf, "--%s\r\n", boundary)
		writeTextPartHeaders(buf, utf8)
		buf.WriteString("\r\n")
		textBudget := size - buf.Len() - parts.Len() - len(closing)
		writeText(buf, rng, max(minTextBudget, textBudget), utf8, h.reply)
		buf.Write(parts.Bytes())
		buf.WriteString(closing)
	default:
		return fmt.Errorf("unknown kind %q", kind)
	}
	return nil
}

func writeHeaders(buf *bytes.Buffer, rng *rand.Rand, h headerBlock) {
	senderDomain := h.from.address[strings.IndexByte(h.from.address, '@')+1:]
	date := h.date.Format(time.RFC1123Z)
	fmt.Fprintf(buf, "%s: %s\r\n", TagHeader, h.tag)
	fmt.Fprintf(buf, "Received: from mail-out%d.%s (mail-out%d.%s [192.0.2.%d])\r\n\tby mx%d.example.net with ESMTPS id %016x\r\n\tfor <%s>; %s\r\n",
		rng.IntN(9), senderDomain, rng.IntN(9), senderDomain, 1+rng.IntN(250), rng.IntN(4), rng.Uint64(), h.to, date)
	fmt.Fprintf(buf, "Received: by mail-out.%s with SMTP id %016x; %s\r\n", senderDomain, rng.Uint64(), date)
	writeDKIM(buf, rng, senderDomain, h.date)
	fmt.Fprintf(buf, "From: %s <%s>\r\n", encodeHeader(h.from.name), h.from.address)
	fmt.Fprintf(buf, "To: %s\r\n", h.to)
	subject := h.subject
	if h.reply {
		subject = "Re: " + subject
	}
	fmt.Fprintf(buf, "Subject: %s\r\n", encodeHeader(subject))
	fmt.Fprintf(buf, "Date: %s\r\n", date)
	fmt.Fprintf(buf, "Message-ID: %s\r\n", h.messageID)
	if h.inReplyTo != "" {
		fmt.Fprintf(buf, "In-Reply-To: %s\r\n", h.inReplyTo)
		fmt.Fprintf(buf, "References: %s\r\n", strings.Join(h.references, "\r\n "))
	}
	buf.WriteString("MIME-Version: 1.0\r\n")
}

// writeDKIM writes a DKIM-Signature-shaped header: real mail carries one,
// and its random base64 makes header sections realistically hard to
// compress.
func writeDKIM(buf *bytes.Buffer, rng *rand.Rand, domain string, t time.Time) {
	sig := make([]byte, 256)
	fillRandom(rng, sig)
	bh := make([]byte, 32)
	fillRandom(rng, bh)
	b64 := base64.StdEncoding.EncodeToString(sig)
	fmt.Fprintf(buf, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=s%d;\r\n\tt=%d; h=from:to:subject:date:message-id:mime-version;\r\n\tbh=%s;\r\n\tb=",
		domain, 2024+rng.IntN(3), t.Unix(), base64.StdEncoding.EncodeToString(bh))
	for len(b64) > 0 {
		n := min(len(b64), 70)
		buf.WriteString(b64[:n])
		b64 = b64[n:]
		if len(b64) > 0 {
			buf.WriteString("\r\n\t ")
		}
	}
	buf.WriteString("\r\n")
}

func writeTextPartHeaders(buf *bytes.Buffer, utf8 bool) {
	if utf8 {
		buf.WriteString("Content-Type: text/plain; charset=utf-8; format=flowed\r\nContent-Transfer-Encoding: quoted-printable\r\n")
		return
	}
	buf.WriteString("Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n")
}

func htmlPartHeaders(utf8 bool) string {
	charset := "us-ascii"
	if utf8 {
		charset = "utf-8"
	}
	return "Content-Type: text/html; charset=" + charset + "\r\nContent-Transfer-Encoding: quoted-printable\r\n"
}

// writeText writes a text body of exactly budget bytes (at least a few):
// paragraphs, quoted text in replies, a signature, then ASCII padding to
// the exact size. UTF-8 text is quoted-printable encoded.
func writeText(buf *bytes.Buffer, rng *rand.Rand, budget int, utf8, reply bool) {
	start := buf.Len()
	limit := budget - 3 // leave room for a padding line
	first := true
	for {
		quoted := reply && !first && rng.IntN(3) == 0
		p := paragraph(rng, utf8, quoted) + "\n"
		if first {
			p = "Hello,\n\n" + p
			first = false
		}
		enc := encodeText(p, utf8)
		if buf.Len()-start+len(enc) > limit {
			break
		}
		buf.Write(enc)
	}
	pad(buf, rng, budget-(buf.Len()-start))
}

// encodeText converts "\n" text to CRLF, quoted-printable for UTF-8.
func encodeText(s string, utf8 bool) []byte {
	if !utf8 {
		return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
	}
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

// pad writes exactly n bytes of ASCII word lines (valid 7bit, valid
// quoted-printable, valid HTML text). n < 3 cannot hold a line and writes
// nothing.
func pad(buf *bytes.Buffer, rng *rand.Rand, n int) {
	for n >= 3 {
		l := min(70, n-2)
		if rest := n - (l + 2); rest > 0 && rest < 3 {
			l -= 3
		}
		line := make([]byte, 0, l)
		for len(line) < l {
			if len(line) > 0 {
				line = append(line, ' ')
			}
			line = append(line, words[rng.IntN(len(words))]...)
		}
		line = line[:l]
		if line[l-1] == ' ' {
			line[l-1] = '.'
		}
		if line[0] == ' ' || line[0] == '.' {
			line[0] = 'x'
		}
		buf.Write(line)
		buf.WriteString("\r\n")
		n -= l + 2
	}
}

// writeHTML writes a quoted-printable HTML body of exactly budget bytes.
func writeHTML(buf *bytes.Buffer, rng *rand.Rand, budget int, utf8 bool) {
	start := buf.Len()
	head := "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><style>body{font-family:Arial,sans-serif;color:#222}" +
		".btn{background:#0a66c2;color:#fff;padding:8px 16px}</style></head>\n<body>\n<table width=\"100%\" cellpadding=\"0\"><tr><td>\n"
	foot := "</td></tr></table>\n</body></html>\n"
	encFoot := encodeText(foot, true)
	buf.Write(encodeText(head, true))
	limit := budget - len(encFoot) - 3
	for {
		p := "<p style=\"margin:0 0 12px 0\">" + strings.TrimSuffix(paragraph(rng, utf8, false), "\n") + "</p>\n"
		if rng.IntN(5) == 0 {
			p += fmt.Sprintf("<a class=\"btn\" href=\"https://www.example.com/r/%08x?utm_source=mail\">%s</a>\n",
				rng.Uint32(), words[rng.IntN(len(words))])
		}
		enc := encodeText(p, true)
		if buf.Len()-start+len(enc) > limit {
			break
		}
		buf.Write(enc)
	}
	pad(buf, rng, limit+3-(buf.Len()-start))
	buf.Write(encFoot)
}

// attachmentKinds are the attachment types: name, MIME type, and whether
// the content is compressible.
var attachmentKinds = []struct {
	ext, mime    string
	compressible bool
}{
	{"jpg", "image/jpeg", false},
	{"pdf", "application/pdf", true},
	{"csv", "text/csv", true},
	{"zip", "application/zip", false},
	{"png", "image/png", false},
	{"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", false},
}

// writeAttachment writes one base64 attachment part (headers and body)
// of about budget bytes.
func writeAttachment(buf *bytes.Buffer, rng *rand.Rand, budget int) {
	k := attachmentKinds[rng.IntN(len(attachmentKinds))]
	name := fmt.Sprintf("%s-%d.%s", words[rng.IntN(len(words))], rng.IntN(1000), k.ext)
	disposition := fmt.Sprintf("attachment; filename=\"%s\"", name)
	if rng.IntN(4) == 0 {
		name = fmt.Sprintf("%s %d.%s", utf8Words[rng.IntN(len(utf8Words))], rng.IntN(100), k.ext)
		disposition = "attachment; filename*=utf-8''" + url.PathEscape(name)
	}
	start := buf.Len()
	fmt.Fprintf(buf, "Content-Type: %s; name=\"%s\"\r\nContent-Disposition: %s\r\nContent-Transfer-Encoding: base64\r\n\r\n",
		k.mime, strings.ReplaceAll(encodeHeader(name), "\r\n", ""), disposition)
	// 57 raw bytes make one 76-column base64 line plus CRLF (78 bytes).
	raw := max(16, (budget-(buf.Len()-start))*57/78)
	data := make([]byte, raw)
	if k.compressible {
		fillText(rng, data)
	} else {
		fillRandom(rng, data)
	}
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 0 {
		n := min(len(enc), 76)
		buf.WriteString(enc[:n])
		buf.WriteString("\r\n")
		enc = enc[n:]
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// fillText fills b with compressible content: lines of words and numbers,
// like a CSV export or a PDF's text streams.
func fillText(rng *rand.Rand, b []byte) {
	i := 0
	for i < len(b) {
		line := fmt.Sprintf("%d,%s,%s,%d.%02d,2026-%02d-%02d\n", rng.IntN(100000), words[rng.IntN(len(words))],
			words[rng.IntN(len(words))], rng.IntN(10000), rng.IntN(100), 1+rng.IntN(12), 1+rng.IntN(28))
		i += copy(b[i:], line)
	}
}
