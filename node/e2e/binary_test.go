package e2e

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestIMAPAppendBinaryKeepsItsBytes: a message appended as literal8
// with a part in Content-Transfer-Encoding binary (RFC 3516) gives back
// that part's bytes exactly, bare line feeds included, in BINARY and
// BINARY.SIZE; the header's line ends are made CRLF as always.
func TestIMAPAppendBinaryKeepsItsBytes(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "imap-binary")
	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	rc.send(fmt.Sprintf("a LOGIN %q %q", user, pass))
	if l := rc.imapTagged("a"); !strings.HasPrefix(l[len(l)-1], "a OK") {
		t.Fatalf("LOGIN: %q", l)
	}
	part := "\x00-\xe4\n\r\n\n"
	msg := "From: user@domain.org\nMime-Version: 1.0\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Transfer-Encoding: binary\r\n\r\n" + part
	stored := strings.Replace(msg, "org\n", "org\r\n", 1)
	rc.send(fmt.Sprintf("b APPEND INBOX ~{%d}", len(msg)))
	if l := rc.line(); !strings.HasPrefix(l, "+") {
		t.Fatalf("APPEND literal8: %q", l)
	}
	if _, err := io.WriteString(rc.conn, msg+"\r\n"); err != nil {
		t.Fatal(err)
	}
	if l := rc.imapTagged("b"); !strings.HasPrefix(l[len(l)-1], "b OK") {
		t.Fatalf("APPEND: %q", l)
	}
	rc.send("c EXAMINE INBOX")
	rc.imapTagged("c")

	rc.send("d FETCH 1 (RFC822.SIZE BINARY.SIZE[1])")
	l := rc.imapTagged("d")
	for _, want := range []string{fmt.Sprintf("RFC822.SIZE %d", len(stored)), fmt.Sprintf("BINARY.SIZE[1] %d", len(part))} {
		if !strings.Contains(l[0], want) {
			t.Errorf("FETCH: %q lacks %q", l, want)
		}
	}
	// The part, and the whole message as stored: CRLF in the header, the
	// part's own bytes.
	fetchBinary(t, rc, "e", "1", part)
	fetchBinary(t, rc, "f", "", stored)
}

// fetchBinary fetches BINARY.PEEK[section] of message 1 over rc and
// checks that the answer is a literal8 of exactly want.
func fetchBinary(t *testing.T, rc *rawConn, tag, section, want string) {
	t.Helper()
	rc.send(tag + " FETCH 1 BINARY.PEEK[" + section + "]")
	if head, wantHead := rc.line(), fmt.Sprintf("* 1 FETCH (BINARY[%s] ~{%d}", section, len(want)); head != wantHead {
		t.Fatalf("FETCH BINARY[%s]: %q, want %q", section, head, wantHead)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(rc.r, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("BINARY[%s] = %q, want %q", section, got, want)
	}
	if l := rc.imapTagged(tag); !strings.HasPrefix(l[len(l)-1], tag+" OK") {
		t.Fatalf("FETCH BINARY[%s]: %q", section, l)
	}
}
