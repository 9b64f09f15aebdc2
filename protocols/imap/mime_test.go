package imap

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// checkStructure fails if bs could make the library's encoder panic or
// write invalid syntax.
func checkStructure(t *testing.T, bs imap.BodyStructure) {
	t.Helper()
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if bs.Type == "" || bs.Subtype == "" || bs.Extended == nil {
			t.Fatalf("bad single part %#v", bs)
		}
		if m := bs.MessageRFC822; m != nil {
			if m.Envelope == nil {
				t.Fatal("message/rfc822 without envelope")
			}
			checkStructure(t, m.BodyStructure)
		}
	case *imap.BodyStructureMultiPart:
		if len(bs.Children) == 0 || bs.Subtype == "" || bs.Extended == nil {
			t.Fatalf("bad multipart %#v", bs)
		}
		for _, c := range bs.Children {
			checkStructure(t, c)
		}
	default:
		t.Fatalf("unknown structure %T", bs)
	}
}

func TestBodyStructureOf(t *testing.T) {
	cases := []struct {
		name   string
		msg    string
		opaque bool
	}{
		{"multipart", multipartMessage(), false},
		{"nested within limit", nestedMessage(maxMIMEDepth - 1), false},
		{"nested too deep", nestedMessage(maxMIMEDepth + 1), true},
		{"too many parts", wideMessage(maxMIMEParts + 1), true},
		{"many parts within limit", wideMessage(100), false},
		{"empty multipart", "Content-Type: multipart/mixed; boundary=x\r\n\r\nnothing\r\n", false},
		{"no header", "just a body", false},
		{"empty", "", false},
		{"rfc822 attachment", "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=q\r\n\r\n--q\r\n\r\nx\r\n--q--\r\n", false},
		{"empty rfc822", "Content-Type: message/rfc822\r\n\r\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bs := bodyStructureOf([]byte(tc.msg))
			checkStructure(t, bs)
			sp, isSingle := bs.(*imap.BodyStructureSinglePart)
			opaque := isSingle && sp.Type == "application" && sp.Subtype == "octet-stream"
			if opaque != tc.opaque {
				t.Errorf("opaque = %v, want %v (%#v)", opaque, tc.opaque, bs)
			}
		})
	}
}

func TestContainsText(t *testing.T) {
	msg := []byte(multipartMessage())
	cases := []struct {
		needle      string
		withHeaders bool
		want        bool
	}{
		{"here is the report", false, true}, // across a soft line break
		{"quarterly", false, false},
		{"quarterly", true, true},
		{"carol sender", true, true},
		{"endstream", false, false}, // inside the base64 PDF, not text
		{"", false, true},
	}
	for _, tc := range cases {
		if got := containsText(msg, tc.needle, tc.withHeaders); got != tc.want {
			t.Errorf("containsText(%q, headers=%v) = %v, want %v", tc.needle, tc.withHeaders, got, tc.want)
		}
	}
	if !containsText([]byte(nestedMessage(maxMIMEDepth+5)), "needle", false) {
		t.Error("raw fallback for deep messages did not find the text")
	}
}

// TestContainsTextInBrokenBase64: a base64 text part is searched as
// BINARY decodes it, leniently (RFC 2045 section 6.8), so a character
// outside the alphabet does not hide the text after it, and the search
// record holds the same words.
func TestContainsTextInBrokenBase64(t *testing.T) {
	first := base64.StdEncoding.EncodeToString([]byte("opening words of the notes "))
	second := base64.StdEncoding.EncodeToString([]byte("closing remark"))
	body := first + "\r\n*\r\n" + second + "\r\n"
	msg := []byte("Subject: broken\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body)
	if got, err := binarySection(msg, []int{1}); err != nil || !bytes.Contains(got, []byte("closing remark")) {
		t.Fatalf("BINARY[1] = %q, %v; want the text after the junk", got, err)
	}
	for _, needle := range []string{"opening", "closing remark"} {
		if !containsText(msg, needle, false) {
			t.Errorf("SEARCH BODY %q missed the message", needle)
		}
	}
	rec := openSearchRecord(BuildSearchRecord(msg))
	if rec == nil || !strings.Contains(rec.body, "remark\n") {
		t.Errorf("search record's words lack the text after the junk: %+v", rec)
	}
}

// FuzzMessage feeds arbitrary bytes to everything that parses stored
// messages: none may panic, and structures must be safe to encode.
func FuzzMessage(f *testing.F) {
	f.Add([]byte(multipartMessage()))
	f.Add([]byte(nestedMessage(5)))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/x; boundary=a\r\n\r\n--a\r\n"))
	f.Add([]byte("Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\ny\r\n--d--\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkStructure(t, bodyStructureOf(msg))
		_, _ = routedEnvelopeOf(msg)
		_ = containsText(msg, "x", true)
		for _, part := range [][]int{nil, {1}, {2, 1}, {1, 1, 1}} {
			for _, spec := range []imap.PartSpecifier{imap.PartSpecifierNone, imap.PartSpecifierHeader, imap.PartSpecifierText, imap.PartSpecifierMIME} {
				if len(part) == 0 && spec == imap.PartSpecifierMIME {
					continue
				}
				_ = imapserver.ExtractBodySection(bytes.NewReader(msg), &imap.FetchItemBodySection{Part: part, Specifier: spec})
			}
			_, _ = binarySection(msg, part)
		}
	})
}

// TestLowerAsStandardLibrary: the lower-casing textPieces uses gives
// bytes.ToLower's and strings.ToLower's bytes, invalid UTF-8 included.
func TestLowerAsStandardLibrary(t *testing.T) {
	inputs := []string{"", "ABC def", "İSTANBUL ÇAĞ Straße", "ΣΑΣ", "\xff\xfeA\xc3", "a\xe2\x82", "\ufffd X \u212a", "ǅ ǈ Ⅻ Ａ"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"A", "z", " ", "\xc3", "\xa9", "É", "İ", "\xff", "Σ", "\ufffd", "\u212a", "\xe2\x82"}
	for i := 0; i < 2000; i++ {
		var b strings.Builder
		for j := rng.IntN(12); j > 0; j-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		inputs = append(inputs, b.String())
	}
	for _, in := range inputs {
		want := bytes.ToLower([]byte(in))
		if got := appendLowerBytes([]byte("x"), []byte(in)); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("appendLowerBytes(%q) = %q, want x%q", in, got, want)
		}
		var scratch []byte
		if got := lowerOwned([]byte(in), &scratch); !bytes.Equal(got, want) {
			t.Errorf("lowerOwned(%q) = %q, want %q", in, got, want)
		}
		if got := appendLower(nil, in); string(got) != strings.ToLower(in) {
			t.Errorf("appendLower(%q) = %q, want %q", in, got, strings.ToLower(in))
		}
	}
}
