package imap

import (
	"strings"
	"testing"
)

func TestListMatch(t *testing.T) {
	cases := []struct {
		name, ref, pattern string
		want               bool
	}{
		{"INBOX", "", "*", true},
		{"INBOX", "", "%", true},
		{"INBOX", "", "inbox", true},
		{"INBOX/Sub", "", "Inbox/%", true},
		{"Inboxes", "", "INBOX", false},
		{"a/b/c", "", "*", true},
		{"a/b/c", "", "%", false},
		{"a/b/c", "", "a/%", false},
		{"a/b/c", "", "a/%/c", true},
		{"a/b/c", "", "a/*", true},
		{"a/b/c", "", "*c", true},
		{"a/b/c", "", "%c", false},
		{"a/b/c", "a", "b/%", true},
		{"a/b/c", "a/", "b/c", true},
		{"a/b/c", "a", "/a/b/c", true},
		{"a/b/c", "x", "b/c", false},
		{"Sent", "", "S%t", true},
		{"Sent", "", "S*x", false},
		{"", "", "", true},
		{"Sent", "", "", false},
		{"a*b", "", "a*b", true},
	}
	for _, tc := range cases {
		if got := listMatch(tc.name, tc.ref, tc.pattern); got != tc.want {
			t.Errorf("listMatch(%q, %q, %q) = %v, want %v", tc.name, tc.ref, tc.pattern, got, tc.want)
		}
	}
}

func TestGlobMatchIsLinear(t *testing.T) {
	// A backtracking matcher needs about 2^40 steps here.
	name := strings.Repeat("a", 200)
	pattern := strings.Repeat("*a", 40) + "b"
	if globMatch(name, pattern) {
		t.Fatal("matched")
	}
	if !globMatch(name, strings.Repeat("*a", 40)) {
		t.Fatal("did not match")
	}
}

func TestListRoot(t *testing.T) {
	for ref, want := range map[string]string{"": "", "foo": "", "foo/bar": "foo/", "#news.comp/x": "#news.comp/"} {
		if got := listRoot(ref); got != want {
			t.Errorf("listRoot(%q) = %q, want %q", ref, got, want)
		}
	}
}

// naiveGlob is the obvious backtracking matcher, exponential but correct;
// the fuzzer compares globMatch with it on short inputs.
func naiveGlob(name, pattern string) bool {
	if pattern == "" {
		return name == ""
	}
	switch pattern[0] {
	case '*', '%':
		for i := 0; i <= len(name); i++ {
			if i > 0 && pattern[0] == '%' && name[i-1] == '/' {
				break
			}
			if naiveGlob(name[i:], pattern[1:]) {
				return true
			}
		}
		return false
	default:
		return name != "" && name[0] == pattern[0] && naiveGlob(name[1:], pattern[1:])
	}
}

func FuzzListMatch(f *testing.F) {
	for _, s := range [][2]string{{"a/b/c", "a/%"}, {"INBOX", "in*"}, {"x%y", "%%*"}, {"a/b", "*/%"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, pattern string) {
		if len(name) > 24 || len(pattern) > 12 {
			return // keep the naive matcher cheap
		}
		if got, want := globMatch(name, pattern), naiveGlob(name, pattern); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, naive %v", name, pattern, got, want)
		}
		_ = listMatch(name, pattern, pattern)
	})
}
