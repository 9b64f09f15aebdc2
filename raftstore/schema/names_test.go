package schema

import (
	"errors"
	"slices"
	"strings"
	"testing"
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
