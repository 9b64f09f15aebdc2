package outbound

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message"
)

const mixed8bit = "From: <a@example.test>\r\n" +
	"Content-Type: multipart/mixed; boundary=\"b1\"\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Gr\xc3\xbc\xc3\x9fe, line one\r\nline two\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"plain ascii part" +
	"\r\n--b1 \r\n" +
	"Content-Type: multipart/alternative; boundary=b2\r\n" +
	"\r\n" +
	"--b2\r\n" +
	"Content-Type: application/octet-stream\r\n" +
	"Content-Transfer-Encoding: binary\r\n" +
	"\r\n" +
	"\xff\xfe\x00\x01" +
	"\r\n--b2--\r\n" +
	"\r\n--b1--\r\n" +
	"epilogue\r\n"

func TestSevenBitConvertsEveryPart(t *testing.T) {
	out, err := sevenBit([]byte(mixed8bit), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !asciiBytes(out) {
		t.Fatalf("output not 7-bit:\n%s", out)
	}
	if strings.Contains(string(out), "8bit") || strings.Contains(string(out), "binary") {
		t.Errorf("8bit or binary still declared:\n%s", out)
	}
	if !strings.Contains(string(out), "\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii part\r\n--b1\r\n") {
		t.Errorf("ASCII part not kept as it was:\n%s", out)
	}
	if again, err := sevenBit(out, 0); err != nil || !bytes.Equal(again, out) {
		t.Errorf("converting again changed it: %v", err)
	}
	// Decoded, every part is what it was.
	e, err := message.Read(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	var walk func(e *message.Entity)
	walk = func(e *message.Entity) {
		if mr := e.MultipartReader(); mr != nil {
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				walk(p)
			}
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(b))
	}
	walk(e)
	want := []string{"Gr\xc3\xbc\xc3\x9fe, line one\r\nline two", "plain ascii part", "\xff\xfe\x00\x01"}
	if len(bodies) != len(want) {
		t.Fatalf("parts %q, want %q", bodies, want)
	}
	for i := range want {
		if bodies[i] != want[i] {
			t.Errorf("part %d: %q, want %q", i, bodies[i], want[i])
		}
	}
}

func TestSevenBitRefusals(t *testing.T) {
	if _, err := sevenBit([]byte(nested(5)), 0); err != nil {
		t.Fatalf("5 nested multiparts: %v", err)
	}
	for name, msg := range map[string]string{
		"8-bit header":       "Subject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nbody \xc3\xbc\r\n",
		"message/rfc822":     "Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n\xc3\xbc\r\n",
		"8-bit in base64":    "Content-Transfer-Encoding: base64\r\n\r\n\xc3\xbc\r\n",
		"unclosed multipart": "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xc3\xbc\r\n",
		"no boundary":        "Content-Type: multipart/mixed\r\n\r\n\xc3\xbc\r\n",
		"8-bit preamble":     "Content-Type: multipart/mixed; boundary=b\r\n\r\n\xc3\xbc\r\n--b\r\n\r\nx\r\n--b--\r\n",
		"bad content type":   "Content-Type: text/plain; charset\r\n\r\n\xc3\xbc\r\n",
		"too deeply nested":  nested(20),
	} {
		if _, err := sevenBit([]byte(msg), 0); !errors.Is(err, errNoDowngrade) {
			t.Errorf("%s: %v, want errNoDowngrade", name, err)
		}
	}
}

// nested returns a message of depth multiparts, one in the other, with
// 8-bit text inside.
func nested(depth int) string {
	var b strings.Builder
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("\r\n\xc3\xbc")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "\r\n--b%d--", i)
	}
	return b.String() + "\r\n"
}

func FuzzSevenBit(f *testing.F) {
	f.Add([]byte(mixed8bit))
	f.Add([]byte("Subject: x\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xc3\xbc\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := sevenBit(msg, 0)
		if err != nil {
			return
		}
		if !asciiBytes(out) {
			t.Fatalf("output not 7-bit: %q", out)
		}
		if again, err := sevenBit(out, 0); err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %v", err)
		}
	})
}
