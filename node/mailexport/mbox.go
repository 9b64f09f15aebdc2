package mailexport

import (
	"bytes"
	"net/mail"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// mboxStatusFields are the header fields mbox writers use for their own
// bookkeeping. A stored message's own copies are left out of the mbox
// form, since readers take them for the message's flags (mailnode import
// mbox and Dovecot remove them); the flags the message has are written
// instead.
var mboxStatusFields = map[string]bool{
	"status": true, "x-status": true, "x-keywords": true,
	"x-uid": true, "x-imap": true, "x-imapbase": true,
}

// fromLineLayout is asctime's format, which "From " lines use, in UTC.
const fromLineLayout = "Mon Jan _2 15:04:05 2006"

// appendMbox appends one message in mboxrd form to dst: a "From " line
// with the envelope sender (the Return-Path, else MAILER-DAEMON) and the
// internal date; Status, X-Status and X-Keywords carrying the flags
// (Status R: \Seen; X-Status A, F, T, D: \Answered, \Flagged, \Draft,
// \Deleted; X-Keywords: the keywords, separated by spaces); the message
// without the mbox status fields it had stored; every line ending in LF,
// every line that matches ^>*From  quoted with one more ">"; then the
// blank line that ends a message. The fields go first in the header
// section, so they are header fields whatever follows, even in a message
// without a body or a final line break (readers take them from anywhere
// in the header); only when the message starts with a folded line, which
// would become part of the last field, do they go at the end of the
// header section (or before a line of a lone CR, which ends the header
// for mbox readers). A reader that undoes all this (mailnode import mbox)
// gets the stored bytes back, provided the message ends with a line
// break, as every message from SMTP does.
func appendMbox(dst, msg []byte, flags []string, date time.Time) []byte {
	hl := schema.HeaderLength(msg)
	header, body := msg[:hl], msg[hl:]

	dst = append(dst, "From "...)
	dst = append(dst, envelopeSender(header)...)
	dst = append(dst, ' ')
	dst = date.UTC().AppendFormat(dst, fromLineLayout)
	dst = append(dst, '\n')

	// Every piece appended starts a line: the fields and header lines
	// are whole lines (but a last one without a body after it).
	fields := []byte(statusFields(flags))
	atEnd := len(msg) > 0 && (msg[0] == ' ' || msg[0] == '\t')
	if !atEnd {
		dst = appendLines(dst, fields)
	}
	blank := []byte(nil)
	if atEnd && bytes.HasSuffix(header, []byte("\r\n\r\n")) {
		header, blank = header[:len(header)-2], header[len(header)-2:]
	}
	skipping := false
	for _, line := range bytes.SplitAfter(header, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !skipping {
				dst = appendLines(dst, line)
			}
			continue
		}
		if atEnd && readsBlank(line) {
			// Readers drop a CR before a line break, so this line
			// ends the header for them: the fields go before it.
			dst = appendLines(dst, fields)
			atEnd = false
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		skipping = mboxStatusFields[strings.ToLower(string(name))]
		if !skipping {
			dst = appendLines(dst, line)
		}
	}
	if atEnd {
		if !bytes.HasSuffix(dst, []byte("\n")) {
			dst = append(dst, '\n')
		}
		dst = appendLines(dst, fields)
	}
	dst = appendLines(dst, blank)
	dst = appendLines(dst, body)
	if !bytes.HasSuffix(dst, []byte("\n")) {
		dst = append(dst, '\n')
	}
	return append(dst, '\n')
}

// readsBlank reports whether a stored header line is, in mbox form, a
// line that readers take for the blank line ending the header: a lone
// CR, with its CRLF or last in the message (a line break is added).
func readsBlank(line []byte) bool {
	return string(line) == "\r\r\n" || string(line) == "\r"
}

// appendLines appends text that starts a line in mbox form: CRLF as LF,
// and one more ">" before every line that matches ^>*From .
func appendLines(dst, text []byte) []byte {
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line = text[:i+1]
		}
		text = text[len(line):]
		if q := bytes.TrimLeft(line, ">"); bytes.HasPrefix(q, []byte("From ")) {
			dst = append(dst, '>')
		}
		if bytes.HasSuffix(line, []byte("\r\n")) {
			dst = append(dst, line[:len(line)-2]...)
			dst = append(dst, '\n')
			continue
		}
		dst = append(dst, line...)
	}
	return dst
}

// statusFields renders flags as the Status, X-Status and X-Keywords
// fields, CRLF-terminated. "O" (not new) is always set: the messages
// have been in a mailbox.
func statusFields(flags []string) string {
	status, xstatus := "O", ""
	var keywords []string
	has := func(f string) bool { return schema.ContainsFold(flags, f) }
	if has(schema.FlagSeen) {
		status = "RO"
	}
	for _, f := range []struct {
		flag   string
		letter string
	}{{schema.FlagAnswered, "A"}, {schema.FlagFlagged, "F"}, {schema.FlagDraft, "T"}, {schema.FlagDeleted, "D"}} {
		if has(f.flag) {
			xstatus += f.letter
		}
	}
	for _, f := range flags {
		if !strings.HasPrefix(f, `\`) {
			keywords = append(keywords, f)
		}
	}
	var b strings.Builder
	b.WriteString("Status: " + status + "\r\n")
	if xstatus != "" {
		b.WriteString("X-Status: " + xstatus + "\r\n")
	}
	if len(keywords) > 0 {
		b.WriteString("X-Keywords: " + strings.Join(keywords, " ") + "\r\n")
	}
	return b.String()
}

// envelopeSender returns the address of the header's Return-Path field
// for the "From " line, or MAILER-DAEMON, as mail delivery agents write
// when the sender is unknown or empty.
func envelopeSender(header []byte) string {
	const unknown = "MAILER-DAEMON"
	for _, line := range bytes.Split(header, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(name), "Return-Path") {
			continue
		}
		v := strings.TrimSpace(string(value))
		if a, err := mail.ParseAddress(v); err == nil {
			v = a.Address
		} else {
			v = strings.Trim(v, "<>")
		}
		if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return unknown
		}
		return v
	}
	return unknown
}
