package imap

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

func TestDecodeBase64(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"aGVsbG8=", "hello"},
		{"aGVs\r\nbG8=\r\n", "hello"},
		{"aGVsbG8", "hello"},             // padding missing
		{" a G V s * bG8 = = ", "hello"}, // junk outside the alphabet
		{"aGVsbG8=aGVsbG8=", "hello"},    // "=" ends the data
		{"aGVsbG8=x", "hello"},           // a dangling character
	}
	for _, tc := range cases {
		if got := string(decodeBase64([]byte(tc.in))); got != tc.want {
			t.Errorf("decodeBase64(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestBinarySections: BINARY[part], its partial form and BINARY.SIZE
// answer the part's content with only the transfer encoding removed (a
// text part in a charset the server does not convert included), empty
// parts answer empty, and BODY[1] of an empty part is an empty literal.
func TestBinarySections(t *testing.T) {
	ts := newTestServer(t)
	latin1 := "From: a@example.net\r\nSubject: latin-1\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"J=F6rg M=FCller\r\n"
	ts.deliver(t, latin1)
	ts.deliver(t, "From: a@example.net\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n"+
		"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n"+
		"--b\r\nContent-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: base64\r\n\r\nk2N1cnR0lA==\r\n"+
		"--b--\r\n")
	c := ts.login(t, nil)
	selectMailbox(t, c, "INBOX", true)

	binary := func(seq uint32, part []int, p *imap.SectionPartial) []byte {
		t.Helper()
		sec := &imap.FetchItemBinarySection{Part: part, Partial: p, Peek: true}
		m := fetchOne(t, c, imap.SeqSetNum(seq), &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{sec}})
		return m.FindBinarySection(sec)
	}
	size := func(seq uint32, part []int) uint32 {
		t.Helper()
		m := fetchOne(t, c, imap.SeqSetNum(seq), &imap.FetchOptions{BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: part}}})
		n, ok := m.FindBinarySectionSize(part)
		if !ok {
			t.Errorf("no BINARY.SIZE%v for message %d", part, seq)
		}
		return n
	}

	// A Latin-1 text part: decoded from quoted-printable, not converted.
	if got := binary(1, []int{1}, nil); string(got) != "J\xf6rg M\xfcller\r\n" {
		t.Errorf("BINARY[1] of a Latin-1 part = %q", got)
	}
	if got := size(1, []int{1}); got != 13 {
		t.Errorf("BINARY.SIZE[1] of a Latin-1 part = %d, want 13", got)
	}
	if got := binary(1, []int{1}, &imap.SectionPartial{Offset: 1, Size: 3}); string(got) != "\xf6rg" {
		t.Errorf("BINARY[1]<1.3> = %q", got)
	}
	whole := binary(1, nil, nil)
	if !bytes.HasSuffix(whole, []byte("\r\n\r\nJ\xf6rg M\xfcller\r\n")) || !bytes.Contains(whole, []byte("Content-Transfer-Encoding: binary")) {
		t.Errorf("BINARY[] of a quoted-printable message = %q", whole)
	}

	// An empty part, a binary part, a windows-1252 part.
	if got := binary(2, []int{1}, nil); len(got) != 0 {
		t.Errorf("BINARY[1] of an empty part = %q", got)
	}
	if got := size(2, []int{1}); got != 0 {
		t.Errorf("BINARY.SIZE[1] of an empty part = %d", got)
	}
	if got := binary(2, []int{2}, &imap.SectionPartial{Offset: 2, Size: 10}); !bytes.Equal(got, []byte{2, 3, 4, 5}) {
		t.Errorf("BINARY[2]<2.10> = %q", got)
	}
	if got := binary(2, []int{2}, &imap.SectionPartial{Offset: 10, Size: 5}); len(got) != 0 {
		t.Errorf("BINARY[2]<10.5> = %q", got)
	}
	if got := binary(2, []int{3}, nil); string(got) != "\x93curtt\x94" {
		t.Errorf("BINARY[3] of a windows-1252 part = %q", got)
	}
	if got := size(2, []int{3}); got != 7 {
		t.Errorf("BINARY.SIZE[3] = %d, want 7", got)
	}
	if got := binary(2, nil, nil); !strings.HasPrefix(string(got), "From: a@example.net\r\n") || !bytes.HasSuffix(got, []byte("--b--\r\n")) {
		t.Errorf("BINARY[] of a multipart message is not the message: %q", got)
	}

	// On the wire: empty literals, literal8 for BINARY, the BINARY.SIZE
	// number, and no origin in a BINARY response (RFC 3516's grammar:
	// "BINARY" section-binary SP (nstring / literal8)).
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("EXAMINE INBOX")
	got := rc.mustOK("FETCH 2 (BODY.PEEK[1] BINARY.PEEK[1] BINARY.SIZE[1])")
	want := "* 2 FETCH (BODY[1] {0}\r\n BINARY[1] ~{0}\r\n BINARY.SIZE[1] 0)"
	if len(got) != 1 || got[0] != want {
		t.Errorf("empty part: %q, want %q", got, want)
	}
	got = rc.mustOK("FETCH 1 (BINARY.PEEK[1]<1.3> BINARY.SIZE[1])")
	want = "* 1 FETCH (BINARY[1] ~{3}\r\n\xf6rg BINARY.SIZE[1] 13)"
	if len(got) != 1 || got[0] != want {
		t.Errorf("partial: %q, want %q", got, want)
	}
}

// TestBodyWithoutNULs: a message stored with a NUL (binary content,
// here from APPEND with literal8) never puts the NUL in a BODY[] or
// RFC822 literal, which cannot hold one (RFC 9051 sections 4.3.1 and
// 9): it goes out as 0x80, the length unchanged. BINARY[] answers with
// a literal8 and keeps it. imaptest's append-binary test found BODY[1]
// sending the NUL.
func TestBodyWithoutNULs(t *testing.T) {
	ts := newTestServer(t)
	rc := rawLogin(t, ts)
	msg := "From: a@example.net\r\nSubject: nul\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" +
		"\x00-\xe4\x00z\r\n"
	rc.mustOK(fmt.Sprintf("APPEND INBOX ~{%d+}\r\n%s", len(msg), msg))
	rc.mustOK("SELECT INBOX")
	for cmd, want := range map[string]string{
		"FETCH 1 BODY.PEEK[1]":      "* 1 FETCH (BODY[1] {7}\r\n\x80-\xe4\x80z\r\n)",
		"FETCH 1 BODY.PEEK[1]<1.3>": "* 1 FETCH (BODY[1]<1> {3}\r\n-\xe4\x80)",
		"FETCH 1 BINARY.PEEK[1]":    "* 1 FETCH (BINARY[1] ~{7}\r\n\x00-\xe4\x00z\r\n)",
	} {
		lines := rc.mustOK(cmd)
		if len(lines) != 1 || lines[0] != want {
			t.Errorf("%s: %q, want %q", cmd, lines, want)
		}
	}
	for _, cmd := range []string{"FETCH 1 BODY.PEEK[]", "FETCH 1 RFC822", "FETCH 1 BODY.PEEK[TEXT]"} {
		lines := rc.mustOK(cmd)
		if len(lines) != 1 || strings.IndexByte(lines[0], 0) >= 0 || !strings.Contains(lines[0], "\x80-\xe4\x80z\r\n") {
			t.Errorf("%s: %q", cmd, lines)
		}
	}
}
