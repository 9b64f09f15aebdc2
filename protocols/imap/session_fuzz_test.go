package imap

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// fuzzMessages is the INBOX every fuzzed session starts from: plain
// text, a multipart with a base64 text part and an attachment, and a
// message/rfc822 with encoded words, so that FETCH, SEARCH, SORT and
// THREAD have structure to walk.
var fuzzMessages = []string{
	simpleMessage("sender@example.net", testUser, "plain one", "Mon, 01 Jan 2024 10:00:00 +0000", "needle in the first body"),
	"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.net>\r\nTo: " + testUser + ", <@route:bob@example.org>\r\n" +
		"Subject: Re: plain one\r\nDate: Tue, 02 Jan 2024 11:00:00 +0100\r\nMessage-ID: <b@example.net>\r\n" +
		"In-Reply-To: <a@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n" +
		"--outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte("second body, decoded needle\r\n")) + "\r\n" +
		"--outer\r\nContent-Type: application/octet-stream; name=x.bin\r\nContent-Disposition: attachment; filename=x.bin\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--outer--\r\n",
	"From: carol@example.net\r\nTo: " + testUser + "\r\nSubject: =?iso-8859-1?q?caf=E9?=\r\n" +
		"Date: Wed, 03 Jan 2024 12:00:00 +0000\r\nReferences: <a@example.net> <b@example.net>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" +
		"From: inner@example.net\r\nSubject: inner\r\n\r\ninner body\r\n",
}

// fuzzSeeds are commands of a logged-in session with INBOX selected,
// covering the front's own commands and the library's.
var fuzzSeeds = []string{
	"a FETCH 1:* (FLAGS UID ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)\r\nb UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (From Subject)] BODY[1.MIME] BINARY.PEEK[1]<0.10>)\r\n",
	"a UID SEARCH CHARSET UTF-8 OR BODY needle SUBJECT \"plain\" NOT DELETED\r\nb SEARCH RETURN (MIN MAX COUNT SAVE) TEXT needle\r\nc FETCH $ (UID)\r\n",
	"a SORT (REVERSE DATE SUBJECT) UTF-8 ALL\r\nb UID THREAD REFERENCES UTF-8 ALL\r\nc THREAD ORDEREDSUBJECT US-ASCII SINCE 1-Jan-2024\r\n",
	"a ENABLE CONDSTORE QRESYNC\r\nb SELECT INBOX (QRESYNC (1 1 1:3))\r\nc UID STORE 1:* (UNCHANGEDSINCE 5) +FLAGS (\\Seen $Junk)\r\nd FETCH 1:* (MODSEQ) (CHANGEDSINCE 1 VANISHED)\r\n",
	"a STORE 2 +FLAGS.SILENT (\\Deleted)\r\nb UID EXPUNGE 2\r\nc COPY 1 Trash\r\nd MOVE 1 Archive\r\ne CREATE Archive\r\nf UID MOVE 1:* Archive\r\n",
	"a APPEND INBOX (\\Seen) {12+}\r\nSubject: x\r\n\r\n b APPEND Drafts {5+}\r\nhello\r\n",
	"a LIST \"\" * RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UIDNEXT SIZE))\r\nb LIST (SUBSCRIBED) \"\" \"%\"\r\nc STATUS INBOX (MESSAGES UNSEEN HIGHESTMODSEQ)\r\n",
	"a GETQUOTAROOT INBOX\r\nb GETQUOTA \"\"\r\nc NAMESPACE\r\nd ID (\"name\" \"fuzz\")\r\ne IDLE\r\nDONE\r\nf NOOP\r\n",
	"a FETCH 1:* (BODY[]<0.5> BODY[2.1] BODY[TEXT]) (PARTIAL -1:-2)\r\nb UID SEARCH RETURN (PARTIAL 1:10) ALL\r\n",
	"a RENAME Archive Old\r\nb DELETE Old\r\nc UNSELECT\r\nd EXAMINE INBOX\r\ne CLOSE\r\nf LOGOUT\r\n",
	"a COMPRESS DEFLATE\r\n\x00\x01\x02\xff",
	"a FETCH 1 (BODY[1.2.3.4.5.6.7.8.9.10]<4294967295.4294967295>)\r\nb SEARCH HEADER X-Y \"\" LARGER 4294967295 UID 1:*\r\n",
	"\x00\xff{4294967296}\r\n" + strings.Repeat("(", 200) + "\r\n",
}

// FuzzSession drives whole IMAP sessions over TCP against a server on
// the in-memory store, each starting (when login is set) logged in with
// INBOX selected and the three fuzzMessages in it. It checks that the
// server answers the login, that every session ends once the client has
// sent everything and closed its side, and that no command panics: a
// panic in the front or the session's own code stops the process (and
// the fuzzer with it), and one the library recovers is in the log. The
// INBOX is restored after a session that changed it.
func FuzzSession(f *testing.F) {
	ts := newTestServer(f, withGuard(protocols.NewAuthGuard(protocols.AuthGuardConfig{}, nil)))
	acct := ts.env.Login(f, testUser, testPassword)
	protocoltest.ResetInbox(f, acct, fuzzMessages)

	for _, seed := range fuzzSeeds {
		f.Add(true, []byte(seed))
	}
	for _, seed := range []string{
		"a CAPABILITY\r\nb AUTHENTICATE PLAIN\r\n" + base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)) + "\r\nc SELECT INBOX\r\n",
		"a LOGIN {17}\r\n" + testUser + " {15}\r\n" + testPassword + "\r\nb ID NIL\r\n",
		"a STARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"a AUTHENTICATE PLAIN\r\n*\r\nb LOGIN x\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		f.Add(false, []byte(seed))
	}

	f.Fuzz(func(t *testing.T, login bool, input []byte) {
		var script bytes.Buffer
		if login {
			fmt.Fprintf(&script, "A LOGIN %s %s\r\nB SELECT INBOX\r\n", testUser, testPassword)
		}
		script.Write(input)
		ts.logs.Reset()
		out, err := protocoltest.Script(t, ts.addr, script.Bytes())
		if !bytes.HasPrefix(out, []byte("* OK")) {
			t.Fatalf("no greeting: %.80q", out)
		}
		if login && !bytes.Contains(out, []byte("\r\nA OK")) {
			t.Fatalf("login not answered OK: %.300q", out)
		}
		// Answers are whole lines, unless the session went on in TLS or
		// compressed, whose records are not lines.
		text := out
		for _, switched := range []string{" OK Begin TLS negotiation now\r\n", " OK DEFLATE active\r\n"} {
			if i := bytes.Index(text, []byte(switched)); i >= 0 {
				text = text[:i+len(switched)]
			}
		}
		if err == nil && !bytes.HasSuffix(text, []byte("\r\n")) {
			t.Fatalf("output ends inside a line: %.80q", text[max(0, len(text)-80):])
		}
		noPanicLogged(t, ts.logs)
		protocoltest.ResetInbox(t, acct, fuzzMessages)
	})
}

// noPanicLogged fails t when logs tell of a recovered panic.
func noPanicLogged(t *testing.T, logs *syncBuffer) {
	t.Helper()
	if panics := protocoltest.RecoveredPanics(logs.String()); len(panics) > 0 {
		t.Fatalf("the server recovered a panic: %s", panics[0])
	}
}

// FuzzCompressedSession is FuzzSession logged in and then compressed
// (COMPRESS DEFLATE, RFC 4978), as Thunderbird's sessions are where the
// server offers it: the client's commands reach the front through its
// inflater and every answer goes out through its deflater. The fuzzer's
// bytes are deflated by the harness, so they arrive as commands, not as
// a broken stream. Besides FuzzSession's checks, the answers after the
// switch must inflate to whole lines.
func FuzzCompressedSession(f *testing.F) {
	ts := newTestServer(f, withGuard(protocols.NewAuthGuard(protocols.AuthGuardConfig{}, nil)))
	acct := ts.env.Login(f, testUser, testPassword)
	protocoltest.ResetInbox(f, acct, fuzzMessages)
	for _, seed := range fuzzSeeds {
		f.Add([]byte(seed))
	}
	const active = "Z OK DEFLATE active\r\n"
	f.Fuzz(func(t *testing.T, input []byte) {
		var script bytes.Buffer
		fmt.Fprintf(&script, "A LOGIN %s %s\r\nB SELECT INBOX\r\nZ COMPRESS DEFLATE\r\n", testUser, testPassword)
		zw, err := flate.NewWriter(&script, flate.BestSpeed)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(input)
		zw.Flush() // a sync flush: the stream stays open, as a client's does
		ts.logs.Reset()
		out, err := protocoltest.Script(t, ts.addr, script.Bytes())
		i := bytes.Index(out, []byte(active))
		if !bytes.HasPrefix(out, []byte("* OK")) || !bytes.Contains(out, []byte("\r\nA OK")) || i < 0 {
			t.Fatalf("no greeting, login or compression: %.300q", out)
		}
		// The server's stream ends at a sync flush, not at a final block.
		text, zerr := io.ReadAll(flate.NewReader(bytes.NewReader(out[i+len(active):])))
		if zerr != nil && !errors.Is(zerr, io.ErrUnexpectedEOF) {
			t.Fatalf("answers after COMPRESS do not inflate: %v", zerr)
		}
		// A session that ended cleanly ends with a whole line (a STARTTLS
		// inside compression is refused, so the text stays lines).
		if err == nil && len(text) > 0 && !bytes.HasSuffix(text, []byte("\r\n")) {
			t.Fatalf("inflated answers end inside a line: %.80q", text[max(0, len(text)-80):])
		}
		noPanicLogged(t, ts.logs)
		protocoltest.ResetInbox(t, acct, fuzzMessages)
	})
}
