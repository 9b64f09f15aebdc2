package schema

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCanonicalMailbox(t *testing.T) {
	for in, want := range map[string]string{"inbox": "INBOX", "Inbox/Sub": "INBOX/Sub", "Archive/2026": "Archive/2026"} {
		if got, err := CanonicalMailbox(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a//b", "/a", "a/", "a\x01b", "a*", "a%b"} {
		if _, err := CanonicalMailbox(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
	if got := ParentMailboxes("a/b/c"); !slices.Equal(got, []string{"a", "a/b"}) {
		t.Errorf("parents %q", got)
	}
}

func TestCheckMailboxName(t *testing.T) {
	for _, ok := range []string{"INBOX", "a.b", "...", ".hidden", "a/b..c", "Ärger", "x y"} {
		if err := CheckMailboxName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	long := strings.Repeat("a", 1001)
	deep := strings.Repeat("a/", 32) + "a"
	for _, bad := range []string{"", ".", "..", "../..", "a/../b", "INBOX/..", "a/./b", "a/", "/a", "a//b",
		"a\x01b", "a\u0085b", "a\xffb", "a*", "a%b", long, deep} {
		err := CheckMailboxName(bad)
		var nameErr *MailboxNameError
		if !errors.As(err, &nameErr) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want a MailboxNameError", bad, err)
			continue
		}
		if nameErr.Limit != (bad == long || bad == deep) {
			t.Errorf("%q: limit %v", bad, nameErr.Limit)
		}
		if _, err := CanonicalNewMailbox(bad); err == nil {
			t.Errorf("%q: CanonicalNewMailbox accepts it", bad)
		}
	}
	// A mailbox made before the rule on "." and ".." can still be found.
	if got, err := CanonicalMailbox("inbox/.."); err != nil || got != "INBOX/.." {
		t.Errorf("lookup of a legacy name: %q, %v", got, err)
	}
}

func TestFlags(t *testing.T) {
	got, err := CanonicalFlags([]string{`\Seen`, `\seen`, `\Recent`, "$Label"})
	if err != nil || !slices.Equal(got, []string{`\Seen`, "$Label"}) {
		t.Fatalf("canonical %q, %v", got, err)
	}
	if _, err := CanonicalFlags([]string{"bad flag"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad flag: %v", err)
	}
	if got := ApplyFlags([]string{`\Seen`}, FlagsAdd, []string{`\seen`, `\Flagged`}); !SameFlags(got, []string{`\Seen`, `\Flagged`}) {
		t.Fatalf("add: %q", got)
	}
	if got := ApplyFlags([]string{`\Seen`, `\Flagged`}, FlagsRemove, []string{`\SEEN`}); !SameFlags(got, []string{`\Flagged`}) {
		t.Fatalf("remove: %q", got)
	}
}

func TestAddresses(t *testing.T) {
	a, d, err := CanonicalAddress(" Alice@Example.TEST ")
	if err != nil || a != "alice@example.test" || d != "example.test" {
		t.Fatalf("%q %q %v", a, d, err)
	}
	for _, bad := range []string{"nodomain", "a@b", "a b@example.test", "@example.test", "a@-x.test"} {
		if _, _, err := CanonicalAddress(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
	if NormalizeCRLF([]byte("a\nb\r\nc\n")) == nil || string(NormalizeCRLF([]byte("a\nb\r\nc\n"))) != "a\r\nb\r\nc\r\n" {
		t.Fatal("CRLF")
	}
	if HeaderLength([]byte("A: b\r\n\r\nbody")) != 8 {
		t.Fatal("header length")
	}
}

// FuzzNames: every validator of outside input returns an answer for any
// string, never panics, and what it accepts is stable: canonical forms
// are accepted again unchanged, and stay within the limits.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"INBOX", "a/b", "../x", "a@b.example", "Ann+tag@Example.COM", "\x00", "\xff\xfe", "é@ü.example",
		"$Label", "\\Seen", "password1", strings.Repeat("a", 1100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := CanonicalMailbox(s); err == nil {
			if again, err := CanonicalMailbox(n); err != nil || again != n {
				t.Fatalf("mailbox %q -> %q -> %q, %v", s, n, again, err)
			}
			if len(n) > maxMailboxName || !utf8.ValidString(n) {
				t.Fatalf("mailbox %q accepted out of bounds", n)
			}
		}
		if n, err := CanonicalNewMailbox(s); err == nil {
			if CheckMailboxName(n) != nil {
				t.Fatalf("new mailbox %q accepted, its canonical form %q refused", s, n)
			}
		}
		if d, err := CanonicalDomain(s); err == nil {
			if again, err := CanonicalDomain(d); err != nil || again != d || len(d) > maxDomainLength {
				t.Fatalf("domain %q -> %q -> %q, %v", s, d, again, err)
			}
		}
		if a, d, err := CanonicalAddress(s); err == nil {
			again, d2, err := CanonicalAddress(a)
			if err != nil || again != a || d2 != d || len(a) > maxAddressLength || !strings.HasSuffix(a, "@"+d) {
				t.Fatalf("address %q -> %q (%q) -> %q (%q), %v", s, a, d, again, d2, err)
			}
		}
		if fl, err := CanonicalFlags([]string{s}); err == nil {
			for _, x := range fl {
				if !ValidFlag(x) {
					t.Fatalf("flag %q accepted as %q, which is not valid", s, x)
				}
			}
		}
		_ = ValidatePassword(s)
	})
}

// FuzzNormalizeCRLF compares NormalizeCRLF and HeaderLength with a byte
// by byte reading of their rules.
func FuzzNormalizeCRLF(f *testing.F) {
	f.Add([]byte("a\nb\r\nc\n"))
	f.Add([]byte("\n\r\n\r\n"))
	f.Add([]byte("A: b\r\n\r\nbody\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		var want []byte
		for i, c := range msg {
			if c == '\n' && (i == 0 || msg[i-1] != '\r') {
				want = append(want, '\r')
			}
			want = append(want, c)
		}
		if got := NormalizeCRLF(msg); !bytes.Equal(got, want) {
			t.Fatalf("NormalizeCRLF(%q) = %q, want %q", msg, got, want)
		}
		end := len(msg)
		if len(msg) >= 2 && msg[0] == '\r' && msg[1] == '\n' {
			end = 2
		} else {
			for i := 0; i+3 < len(msg); i++ {
				if msg[i] == '\r' && msg[i+1] == '\n' && msg[i+2] == '\r' && msg[i+3] == '\n' {
					end = i + 4
					break
				}
			}
		}
		if got := HeaderLength(msg); got != end {
			t.Fatalf("HeaderLength(%q) = %d, want %d", msg, got, end)
		}
	})
}
