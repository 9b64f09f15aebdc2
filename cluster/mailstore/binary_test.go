package mailstore

import (
	"bytes"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestNormalizeKeepingBinary(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"no binary part", "A: b\nC: d\n\nline\nline\n", "A: b\r\nC: d\r\n\r\nline\r\nline\r\n"},
		{"binary body, bare LF in the header",
			"From: a\nContent-Transfer-Encoding: binary\n\n\x00-\xe4\n\r\n\n",
			"From: a\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\n\r\n\n"},
		{"imaptest's append-binary",
			"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\n\r\n\n",
			"From: user@domain.org\r\nMime-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\n\r\n\n"},
		{"a binary part among text parts",
			"Content-Type: multipart/mixed;\n boundary=\"xx\"\n\npre\n--xx\nContent-Type: text/plain\n\nhi\nthere\n--xx\nContent-Transfer-Encoding: BINARY\n\n\x01\n\x02\n--xx--\nepi\n",
			"Content-Type: multipart/mixed;\r\n boundary=\"xx\"\r\n\r\npre\r\n--xx\r\nContent-Type: text/plain\r\n\r\nhi\r\nthere\r\n--xx\r\nContent-Transfer-Encoding: BINARY\r\n\r\n\x01\n\x02\r\n--xx--\r\nepi\r\n"},
		{"nested multipart and a message/rfc822",
			"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: message/rfc822\n\nSubject: in\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Transfer-Encoding: binary\n\nraw\nbytes\n--b--\n--a--\n",
			"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: binary\r\n\r\nraw\nbytes\r\n--b--\r\n--a--\r\n"},
		{"unterminated multipart",
			"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Transfer-Encoding: binary\n\nx\ny\n",
			"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Transfer-Encoding: binary\r\n\r\nx\ny\n"},
		{"empty parts", "Content-Type: multipart/mixed; boundary=a\nX: binary\n\n--a\n--a\n--a--\n",
			"Content-Type: multipart/mixed; boundary=a\r\nX: binary\r\n\r\n--a\r\n--a\r\n--a--\r\n"},
	} {
		if got := string(normalizeKeepingBinary([]byte(c.in))); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// FuzzNormalizeKeepingBinary: never a panic; a message without a part
// marked binary comes out as schema.NormalizeCRLF makes it; the result
// is longer only by CRs, and normalising it again changes nothing.
func FuzzNormalizeKeepingBinary(f *testing.F) {
	for _, s := range []string{
		"A: b\n\nc\n",
		"Content-Transfer-Encoding: binary\n\n\x00\n\r\n",
		"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Transfer-Encoding: binary\n\nx\ny\n--a--\n",
		"Content-Type: message/rfc822\n\nContent-Transfer-Encoding: binary\n\n\n\n",
		"Content-Type: multipart/mixed; boundary=a\n\n--a\n--a\n\n--a--",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		got := normalizeKeepingBinary(msg)
		if want := schema.NormalizeCRLF(msg); !bytes.Equal(got, want) {
			// Only a part marked binary keeps its own line ends.
			if lower := bytes.ToLower(msg); !bytes.Contains(lower, []byte("binary")) || !bytes.Contains(lower, []byte("content-transfer-encoding")) {
				t.Fatalf("no binary part: %q, want %q", got, want)
			}
		}
		if !bytes.Equal(bytes.ReplaceAll(got, []byte("\r"), nil), bytes.ReplaceAll(msg, []byte("\r"), nil)) {
			t.Fatalf("changed more than line ends: %q from %q", got, msg)
		}
		if again := normalizeKeepingBinary(got); !bytes.Equal(again, got) {
			t.Fatalf("not idempotent: %q then %q", got, again)
		}
	})
}
