package imap

import (
	"bytes"
	"encoding/base64"
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

// leniently is decodeBase64 as RFC 2045 section 6.8 states it, one
// character at a time: the reference appendBase64's line-wise decoding
// must agree with.
func leniently(body []byte) []byte {
	var clean []byte
	for _, c := range body {
		if c == '=' {
			break
		}
		if bytes.IndexByte([]byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"), c) >= 0 {
			clean = append(clean, c)
		}
	}
	if len(clean)%4 == 1 {
		clean = clean[:len(clean)-1]
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, _ := base64.RawStdEncoding.Decode(out, clean)
	return out[:n]
}

// FuzzDecodeBase64 checks the line-wise decoder against the
// character-wise one, on mail-shaped base64 and on anything else.
func FuzzDecodeBase64(f *testing.F) {
	line := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("attachment bytes "), 4))[:76]
	for _, seed := range []string{
		"", "aGVsbG8=", "aGVs\r\nbG8=\r\n", "aGVsbG8", "aGVsbG8=x", " a G V s * bG8 = = ",
		line + "\r\n" + line + "\r\n" + "aGVsbG8=\r\n",
		line[:70] + "\r\n" + line[70:] + line[:70] + "\r\n",   // groups across lines
		line + "\r\n" + line[:40] + "\r" + line[40:] + "\r\n", // a stray CR inside a line
		line + "\n" + line + "\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		want := leniently(body)
		if got := decodeBase64(body); !bytes.Equal(got, want) {
			t.Fatalf("decodeBase64(%q) = %q, want %q", body, got, want)
		}
		prefix := []byte("kept")
		if got := appendBase64(prefix, body); !bytes.Equal(got, append([]byte("kept"), want...)) {
			t.Fatalf("appendBase64 lost the prefix or the data: %q", got)
		}
	})
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

	// Partial BINARY items are checked on the wire below: the library's
	// client does not read the origin of their answers.
	binary := func(seq uint32, part []int) []byte {
		t.Helper()
		sec := &imap.FetchItemBinarySection{Part: part, Peek: true}
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
	if got := binary(1, []int{1}); string(got) != "J\xf6rg M\xfcller\r\n" {
		t.Errorf("BINARY[1] of a Latin-1 part = %q", got)
	}
	if got := size(1, []int{1}); got != 13 {
		t.Errorf("BINARY.SIZE[1] of a Latin-1 part = %d, want 13", got)
	}
	whole := binary(1, nil)
	if !bytes.HasSuffix(whole, []byte("\r\n\r\nJ\xf6rg M\xfcller\r\n")) || !bytes.Contains(whole, []byte("Content-Transfer-Encoding: binary")) {
		t.Errorf("BINARY[] of a quoted-printable message = %q", whole)
	}

	// An empty part, a binary part, a windows-1252 part.
	if got := binary(2, []int{1}); len(got) != 0 {
		t.Errorf("BINARY[1] of an empty part = %q", got)
	}
	if got := size(2, []int{1}); got != 0 {
		t.Errorf("BINARY.SIZE[1] of an empty part = %d", got)
	}
	if got := binary(2, []int{3}); string(got) != "\x93curtt\x94" {
		t.Errorf("BINARY[3] of a windows-1252 part = %q", got)
	}
	if got := size(2, []int{3}); got != 7 {
		t.Errorf("BINARY.SIZE[3] = %d, want 7", got)
	}
	if got := binary(2, nil); !strings.HasPrefix(string(got), "From: a@example.net\r\n") || !bytes.HasSuffix(got, []byte("--b--\r\n")) {
		t.Errorf("BINARY[] of a multipart message is not the message: %q", got)
	}

	// On the wire: empty literals, literal8 for BINARY, the BINARY.SIZE
	// number, and the origin of a partial BINARY answer, as RFC 3516
	// section 4.2 and RFC 9051 section 7.5.2 describe it (their ABNF has
	// none) and Dovecot writes it (binarypartial.go).
	rc := dialRaw(t, ts.addr)
	rc.mustOK("LOGIN " + testUser + " " + testPassword)
	rc.mustOK("EXAMINE INBOX")
	for _, c := range []struct{ cmd, want string }{
		{"FETCH 2 (BODY.PEEK[1] BINARY.PEEK[1] BINARY.SIZE[1])", "* 2 FETCH (BODY[1] {0}\r\n BINARY[1] ~{0}\r\n BINARY.SIZE[1] 0)"},
		{"FETCH 1 (BINARY.PEEK[1]<1.3> BINARY.SIZE[1])", "* 1 FETCH (BINARY[1]<1> ~{3}\r\n\xf6rg BINARY.SIZE[1] 13)"},
		{"FETCH 2 (BINARY.PEEK[2]<2.10>)", "* 2 FETCH (BINARY[2]<2> ~{4}\r\n\x02\x03\x04\x05)"},
		{"FETCH 2 (BINARY.PEEK[2]<10.5>)", "* 2 FETCH (BINARY[2]<10> ~{0}\r\n)"},
		// An origin without a length, as Dovecot takes it: to the end.
		{"FETCH 1 BINARY.PEEK[1]<10>", "* 1 FETCH (BINARY[1]<10> ~{3}\r\nr\r\n)"},
		// Two partial parts after a literal; then one part asked for
		// whole and in part, whose answers cannot be told apart and get
		// no origin.
		{"FETCH 2 (BODY.PEEK[1] BINARY.PEEK[2]<1.2> BINARY.PEEK[3]<01.1>)", "* 2 FETCH (BODY[1] {0}\r\n BINARY[2]<1> ~{2}\r\n\x01\x02 BINARY[3]<1> ~{1}\r\nc)"},
		{"FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[1]<1.3>)", "* 1 FETCH (BINARY[1] ~{13}\r\nJ\xf6rg M\xfcller\r\n BINARY[1] ~{3}\r\n\xf6rg)"},
	} {
		got := rc.mustOK(c.cmd)
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, got, c.want)
		}
	}
	// With CONDSTORE's MODSEQ replaced in the same item list (the
	// first MODSEQ enables CONDSTORE: HIGHESTMODSEQ comes first).
	got := rc.mustOK("UID FETCH 1 (MODSEQ BINARY.PEEK[1]<4>)")
	if n := len(got); n == 0 || got[n-1] != "* 1 FETCH (MODSEQ (2) UID 1 BINARY[1]<4> ~{9}\r\n M\xfcller\r\n)" {
		t.Errorf("UID FETCH with MODSEQ: %q", got)
	}
}

// TestBinaryItems: which FETCH items are partial BINARY items, the
// origin noted for each part, and the item forwarded for an origin
// without a length.
func TestBinaryItems(t *testing.T) {
	var b binaryItems
	for _, c := range []struct {
		item, forward string
	}{
		{"BINARY.PEEK[1]<0.7>", ""},
		{"binary[2.01]<5>", "binary[2.01]<5.4294967295>"},
		{"BINARY[3]<7.1>", ""},
		{"BINARY[3]<8.1>", ""}, // another origin for part 3: none is noted
		{"BINARY[4]", ""},
		{"BINARY[4]<2.2>", ""}, // part 4 also asked for whole
		{"BINARY[]<9.9>", ""},
		{"BINARY.PEEK[9]", ""},        // whole only: no origin
		{"BINARY[1.HEADER]<0.1>", ""}, // not a section-binary
		{"BODY[1]<3>", ""},
		{"BINARY[5]<x.1>", ""},
		{"BINARY[6]<1.x>", ""},
		{"BINARY[6]<>", ""},
		{"B\u0131NARY[7]<1>", ""}, // a dotless i: not BINARY
	} {
		got, ok := b.add([]byte(c.item))
		if ok != (c.forward != "") || got != c.forward {
			t.Errorf("add(%q) = %q, %v; want %q", c.item, got, ok, c.forward)
		}
	}
	want := map[string]uint64{"1": 0, "2.1": 5, "": 9}
	got := b.offsets()
	if len(got) != len(want) {
		t.Fatalf("offsets = %v, want %v", got, want)
	}
	for k, v := range want {
		if o, ok := got[k]; !ok || o != v {
			t.Errorf("offsets = %v, want %v", got, want)
		}
	}

	for _, c := range []struct{ frag, want string }{
		{"* 1 FETCH (BINARY[1] ~{7}\r\n", "* 1 FETCH (BINARY[1]<0> ~{7}\r\n"},
		{" BINARY[2.1] ~{0}\r\n", " BINARY[2.1]<5> ~{0}\r\n"},
		{"* 1 FETCH (UID 4 BINARY[] ~{12}\r\n", "* 1 FETCH (UID 4 BINARY[]<9> ~{12}\r\n"},
		{"* 1 FETCH (BINARY[3] ~{1}\r\n", "* 1 FETCH (BINARY[3] ~{1}\r\n"}, // not noted
		{"* 1 FETCH (BODY[1] {7}\r\n", "* 1 FETCH (BODY[1] {7}\r\n"},
		{"* 1 FETCH (XBINARY[1] ~{7}\r\n", "* 1 FETCH (XBINARY[1] ~{7}\r\n"},
		{"* 1 FETCH (BINARY[1] ~{x}\r\n", "* 1 FETCH (BINARY[1] ~{x}\r\n"},
		{"* 1 FETCH (BINARY[1] 7)\r\n", "* 1 FETCH (BINARY[1] 7)\r\n"},
	} {
		if out := withBinaryOrigin([]byte(c.frag), got); string(out) != c.want {
			t.Errorf("%q: %q, want %q", c.frag, out, c.want)
		}
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
