package imap

import (
	"bytes"

	"github.com/mailcluster/mailcluster/protocols/imap/imapwire"
)

// UTF8=ACCEPT (RFC 6855, now RFC 9755), and the same for a client that
// enabled IMAP4rev2, which includes it. The library advertises it after login,
// accepts ENABLE UTF8=ACCEPT, then writes quoted strings in UTF-8 and
// mailbox names in UTF-8 instead of modified UTF-7, and reads APPEND's
// UTF8 (~{n}...) data. What it gets wrong, the front puts right: once
// UTF8=ACCEPT is on, a mailbox name is UTF-8 as it stands, "&" an
// ordinary character (section 3), where the library still reads "&" as
// the start of a modified UTF-7 shift and writes it as "&-". So the
// front reads the client's names as UTF-8, forwards each "&" as "&-"
// (which the library reads back as "&"), and the relay turns "&-" in the
// names of LIST, LSUB and STATUS responses back into "&".

// utf8On reports whether the client has enabled UTF8=ACCEPT.
func (f *frontConn) utf8On() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.utf8Accept
}

// decodeName decodes a mailbox name the client sent: modified UTF-7
// (with UTF-8 accepted), or UTF-8 alone once UTF8=ACCEPT is on.
func (f *frontConn) decodeName(raw []byte) (string, error) {
	if f.utf8On() {
		return imapwire.DecodeMailboxUTF8(raw)
	}
	return imapwire.DecodeMailbox(raw)
}

// nameTokens returns the indexes in cmd.Args of the mailbox names (and
// LIST patterns) of a command.
func nameTokens(cmd *imapwire.Command) []int {
	var top []int
	for i, t := range cmd.Args {
		if t.Depth == 0 && t.Kind != imapwire.KindClose {
			top = append(top, i)
		}
	}
	at := func(k ...int) []int {
		var out []int
		for _, j := range k {
			if j < len(top) && cmd.Args[top[j]].IsString() {
				out = append(out, top[j])
			}
		}
		return out
	}
	switch cmd.Name {
	case "SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "STATUS", "APPEND", "GETQUOTAROOT":
		return at(0)
	case "RENAME":
		return at(0, 1)
	case "COPY", "MOVE", "UID COPY", "UID MOVE":
		return at(1)
	case "LIST", "LSUB":
		// Selection and return options are atoms without "&".
		var out []int
		for i, t := range cmd.Args {
			if t.IsString() {
				out = append(out, i)
			}
		}
		return out
	}
	return nil
}

// escapeNames rewrites, once UTF8=ACCEPT is on, the mailbox names of a
// command the library will read: every "&" as "&-". wire is cmd.Wire
// or a copy of it cut only after the names (the extensions' arguments
// follow them).
func (f *frontConn) escapeNames(cmd *imapwire.Command, wire []byte) []byte {
	if !f.utf8On() {
		return wire
	}
	idx := nameTokens(cmd)
	for k := len(idx) - 1; k >= 0; k-- {
		t := cmd.Args[idx[k]]
		if bytes.IndexByte(t.Value, '&') < 0 || t.End > len(wire) {
			continue
		}
		repl := imapwire.AppendString(nil, imapwire.EscapeAmpersands(t.Value))
		out := make([]byte, 0, len(wire)+len(repl))
		out = append(out, wire[:t.Start]...)
		out = append(out, repl...)
		wire = append(out, wire[t.End:]...)
	}
	return wire
}

// unescapeNames turns the library's "&-" back into "&" in a LIST, LSUB
// or STATUS response once UTF8=ACCEPT is on. The library writes every
// "&" of a name as "&-" and nothing else of these lines holds "&".
func (f *frontConn) unescapeNames(line []byte) []byte {
	if !f.utf8On() || !bytes.Contains(line, []byte("&-")) {
		return line
	}
	return bytes.ReplaceAll(line, []byte("&-"), []byte("&"))
}

// noteEnabled follows the library's ENABLED response: UTF8=ACCEPT, or
// IMAP4rev2, which includes it (RFC 9755 section 1; the library then
// writes names in UTF-8 too).
func (f *frontConn) noteEnabled(line []byte) {
	for _, c := range bytes.Fields(line) {
		if u := string(bytes.ToUpper(c)); u == "UTF8=ACCEPT" || u == "IMAP4REV2" {
			f.mu.Lock()
			f.utf8Accept = true
			f.mu.Unlock()
		}
	}
}

// quoteName writes a mailbox name the client sent back to it: a quoted
// string, in UTF-8 once UTF8=ACCEPT is on, else a literal when it holds
// 8-bit bytes.
func (f *frontConn) quoteName(raw []byte) string {
	if f.utf8On() && bytes.IndexFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f }) < 0 {
		return string(imapwire.AppendString(nil, raw))
	}
	return quoted(raw)
}
