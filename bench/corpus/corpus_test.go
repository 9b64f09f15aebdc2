package corpus

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
)

func generateT(t *testing.T, cfg Config) *Corpus {
	t.Helper()
	c, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 42, Messages: 60, Users: 7}
	a, b := generateT(t, cfg), generateT(t, cfg)
	for i := range a.Messages {
		ma, mb := a.Messages[i], b.Messages[i]
		if !bytes.Equal(ma.Data, mb.Data) || ma.Rcpt != mb.Rcpt || ma.From != mb.From || ma.Sum != mb.Sum {
			t.Fatalf("message %d differs between two generations with the same seed", i)
		}
	}
	other := generateT(t, Config{Seed: 43, Messages: 60, Users: 7})
	same := 0
	for i := range a.Messages {
		if bytes.Equal(a.Messages[i].Data, other.Messages[i].Data) {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("%d messages identical under different seeds", same)
	}
	// A longer corpus starts with the shorter one: message i depends
	// only on the seed and i (and earlier messages).
	longer := generateT(t, Config{Seed: 42, Messages: 80, Users: 7})
	for i := range a.Messages {
		if !bytes.Equal(a.Messages[i].Data, longer.Messages[i].Data) {
			t.Fatalf("message %d changes with the corpus length", i)
		}
	}
}

func TestSizesAndShape(t *testing.T) {
	c := generateT(t, Config{Seed: 1, Messages: 2000, Users: 50})
	s := c.Stats()
	tags := make(map[string]bool)
	for _, m := range c.Messages {
		if n := len(m.Data); n < DefaultMinSize || n > DefaultMaxSize {
			t.Fatalf("message %d: size %d outside [1 KiB, 5 MiB]", m.Index, n)
		}
		if m.Sum != sha256.Sum256(m.Data) {
			t.Fatalf("message %d: wrong sum", m.Index)
		}
		if tags[m.Tag] {
			t.Fatalf("message %d: duplicate tag %q", m.Index, m.Tag)
		}
		tags[m.Tag] = true
		if m.Rcpt < 0 || m.Rcpt >= 50 {
			t.Fatalf("message %d: recipient %d out of range", m.Index, m.Rcpt)
		}
	}
	// Long-tailed: most messages are small, a few are very large.
	if s.P50Bytes < 2<<10 || s.P50Bytes > 16<<10 {
		t.Errorf("median size %d, want a few KiB", s.P50Bytes)
	}
	if s.P99Bytes < 512<<10 {
		t.Errorf("99th percentile %d, want a long tail above 512 KiB", s.P99Bytes)
	}
	if s.MaxBytes < 2<<20 {
		t.Errorf("largest message %d, want some of several MiB in 2000", s.MaxBytes)
	}
	if mean := s.TotalBytes / int64(s.Messages); mean < 3*int64(s.P50Bytes) {
		t.Errorf("mean %d not well above the median %d: no long tail", mean, s.P50Bytes)
	}
	for _, k := range []Kind{KindText, KindAlternative, KindAttachment} {
		if s.Kinds[k] < s.Messages/10 {
			t.Errorf("only %d messages of kind %s", s.Kinds[k], k)
		}
	}
	if s.Replies < s.Messages/5 {
		t.Errorf("only %d replies in %d messages", s.Replies, s.Messages)
	}
}

func TestCustomBounds(t *testing.T) {
	c := generateT(t, Config{Seed: 9, Messages: 400, Users: 3, MinSize: 4 << 10, MaxSize: 64 << 10})
	for _, m := range c.Messages {
		if n := len(m.Data); n < 4<<10 || n > 64<<10 {
			t.Fatalf("message %d: size %d outside [4 KiB, 64 KiB]", m.Index, n)
		}
	}
	for _, bad := range []Config{
		{Messages: 0, Users: 1},
		{Messages: 1, Users: 0},
		{Messages: 1, Users: 1, MinSize: 10},
		{Messages: 1, Users: 1, MinSize: 64 << 10, MaxSize: 32 << 10},
	} {
		if _, err := Generate(bad); err == nil {
			t.Errorf("Generate(%+v) accepted a bad config", bad)
		}
	}
}

// TestWellFormed parses every message as MIME: what a server stores must
// be valid mail, with the headers and parts the corpus promises.
func TestWellFormed(t *testing.T) {
	c := generateT(t, Config{Seed: 7, Messages: 300, Users: 5})
	utf8Subjects := 0
	for _, m := range c.Messages {
		for _, line := range bytes.Split(m.Data, []byte("\r\n")) {
			if len(line) > 998 {
				t.Fatalf("message %d: line of %d bytes", m.Index, len(line))
			}
			if bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line, '\r') >= 0 {
				t.Fatalf("message %d: bare CR or LF", m.Index)
			}
		}
		for _, b := range m.Data {
			if b >= 0x80 {
				t.Fatalf("message %d: 8-bit octet", m.Index)
			}
		}
		if !bytes.HasPrefix(m.Data, []byte(TagHeader+": "+m.Tag+"\r\n")) {
			t.Fatalf("message %d does not start with its tag header", m.Index)
		}
		r, err := mail.CreateReader(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatalf("message %d: %v", m.Index, err)
		}
		subj, err := r.Header.Subject()
		if err != nil {
			t.Fatalf("message %d: subject: %v", m.Index, err)
		}
		if !isASCII(subj) {
			utf8Subjects++
		}
		if id, _ := r.Header.MessageID(); "<"+id+">" != m.MessageID {
			t.Fatalf("message %d: Message-ID %q, want %q", m.Index, id, m.MessageID)
		}
		parts := 0
		for {
			p, err := r.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("message %d part %d: %v", m.Index, parts, err)
			}
			if _, err := io.Copy(io.Discard, p.Body); err != nil {
				t.Fatalf("message %d part %d body: %v", m.Index, parts, err)
			}
			parts++
		}
		want := map[Kind]int{KindText: 1, KindAlternative: 2}[m.Kind]
		if m.Kind == KindAttachment {
			if parts < 2 || parts > 4 {
				t.Fatalf("message %d: %d parts, want a text and 1-3 attachments", m.Index, parts)
			}
		} else if parts != want {
			t.Fatalf("message %d (%s): %d parts, want %d", m.Index, m.Kind, parts, want)
		}
	}
	if utf8Subjects == 0 {
		t.Error("no UTF-8 subjects in 300 messages")
	}
}

func TestThreads(t *testing.T) {
	c := generateT(t, Config{Seed: 3, Messages: 200, Users: 4})
	byID := make(map[string]Message)
	for _, m := range c.Messages {
		e, err := message.Read(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		if parent := e.Header.Get("In-Reply-To"); parent != "" {
			p, ok := byID[parent]
			if !ok {
				t.Fatalf("message %d answers %s, not an earlier message", m.Index, parent)
			}
			if p.Rcpt != m.Rcpt {
				t.Fatalf("message %d goes to user %d, its parent to %d", m.Index, m.Rcpt, p.Rcpt)
			}
			if !strings.Contains(e.Header.Get("References"), parent) {
				t.Fatalf("message %d: References lacks the parent", m.Index)
			}
		}
		byID[m.MessageID] = m
	}
}

func TestOriginal(t *testing.T) {
	c := generateT(t, Config{Seed: 5, Messages: 3, Users: 1})
	m := c.Messages[0]
	tests := []struct {
		name    string
		fetched []byte
		wantErr bool
	}{
		{"as sent", m.Data, false},
		{"trace headers prepended", append([]byte("Return-Path: <a@b>\r\nReceived: from x\r\n\tby y; now\r\n"), m.Data...), false},
		{"no tag", []byte("Subject: x\r\n\r\nX-Mailbench-Id: in the body\r\n"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tag, orig, err := Original(tt.fetched)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("found tag %q", tag)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tag != m.Tag || !bytes.Equal(orig, m.Data) {
				t.Fatalf("got tag %q and %d bytes, want %q and the original", tag, len(orig), m.Tag)
			}
		})
	}
}

func TestFixedSize(t *testing.T) {
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
		c := generateT(t, Config{Seed: 3, Messages: 20, Users: 4, Size: size, TagPrefix: "s-"})
		for _, m := range c.Messages {
			if len(m.Data) != size {
				t.Fatalf("size %d: message %d has %d bytes", size, m.Index, len(m.Data))
			}
			if !strings.HasPrefix(m.Tag, "s-") {
				t.Fatalf("tag %q lacks its prefix", m.Tag)
			}
			want := KindText
			if size >= AttachmentSizeFrom {
				want = KindAttachment
			}
			if m.Kind != want {
				t.Fatalf("size %d: kind %s, want %s", size, m.Kind, want)
			}
			if tag, orig, err := Original(m.Data); err != nil || tag != m.Tag || len(orig) != size {
				t.Fatalf("size %d: Original gives %q, %d bytes, %v", size, tag, len(orig), err)
			}
		}
	}
}
