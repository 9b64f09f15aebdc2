package directory

import (
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestRandomCodesAreUniformAndNormalise(t *testing.T) {
	if len(codeAlphabet) != 32 {
		t.Fatalf("alphabet of %d letters: the low five bits of a byte no longer pick one without bias", len(codeAlphabet))
	}
	counts := map[rune]int{}
	seen := map[string]bool{}
	for range 2000 {
		c := randomCode(appPasswordGroups, appPasswordGroup)
		if len(c) != appPasswordLength+appPasswordGroups-1 || strings.Count(c, "-") != appPasswordGroups-1 {
			t.Fatalf("code %q has the wrong form", c)
		}
		if seen[c] {
			t.Fatalf("code %q twice", c)
		}
		seen[c] = true
		norm, ok := normalizeCode(c, appPasswordLength)
		if !ok || norm != strings.ReplaceAll(c, "-", "") {
			t.Fatalf("normalize %q = %q, %v", c, norm, ok)
		}
		for _, r := range norm {
			counts[r]++
		}
	}
	// 32,000 letters: each of the 32 expected 1,000 times.
	for _, r := range codeAlphabet {
		if n := counts[r]; n < 800 || n > 1200 {
			t.Errorf("letter %q drawn %d times of 32,000", r, n)
		}
	}
	for _, tc := range []struct {
		in, want string
	}{
		{"ABCD-EFGH-JKMN-PQRS", "abcdefghjkmnpqrs"},
		{"abcd efgh jkmn pqrs", "abcdefghjkmnpqrs"},
		{"abcdefghjkmnpqrs", "abcdefghjkmnpqrs"},
		{"abcd-efgh-jkmn-pqr", ""},   // too short
		{"abcd-efgh-jkmn-pqrs2", ""}, // too long
		{"abcd-efgh-jkmn-pqr0", ""},  // 0 is not in the alphabet
		{"abcd-efgh-jkmn-pqrl", ""},  // nor l
		{"", ""},
	} {
		got, ok := normalizeCode(tc.in, appPasswordLength)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("normalizeCode(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

func TestAppPasswordNameGrammar(t *testing.T) {
	for _, ok := range []string{"phone", "Thunderbird (laptop)", "k9-mail 2.0", "a", "me+work@home_1", strings.Repeat("x", MaxAppPasswordName)} {
		if err := checkAppPasswordName(ok); err != nil {
			t.Errorf("name %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", " lead", "trail ", "a/b", "tab\there", "new\nline", "ünï", "semi;colon", strings.Repeat("x", MaxAppPasswordName+1)} {
		if err := checkAppPasswordName(bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestScopes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		ok   bool
	}{
		{nil, "imap,pop3,smtp", true},
		{[]string{"SMTP", " imap", "smtp"}, "imap,smtp", true},
		{[]string{"pop3"}, "pop3", true},
		{[]string{"web"}, "", false},
		{[]string{""}, "", false},
	} {
		got, err := schema.CanonicalScope(tc.in)
		if (err == nil) != tc.ok || strings.Join(got, ",") != tc.want {
			t.Errorf("CanonicalScope(%q) = %v, %v", tc.in, got, err)
		}
	}
	if schema.ScopeAllows([]string{"imap"}, "pop3") || !schema.ScopeAllows([]string{"imap"}, "imap") ||
		schema.ScopeAllows(nil, "") || schema.ScopeAllows(nil, "web") || !schema.ScopeAllows(nil, "smtp") {
		t.Error("ScopeAllows")
	}
}

// TestAppPasswordHintSeparatesUsersAndPasswords: the keyed hint that
// picks which app passwords a login checks is stable for a password and
// differs between users (2^-16 of collisions expected).
func TestAppPasswordHintSeparatesUsersAndPasswords(t *testing.T) {
	d := &Directory{keys: newRootKeys([32]byte{1})}
	u1, u2 := schema.NewID(), schema.NewID()
	same := 0
	for range 1000 {
		p, _ := normalizeCode(randomCode(appPasswordGroups, appPasswordGroup), appPasswordLength)
		if d.appPasswordHint(u1, p) != d.appPasswordHint(u1, p) {
			t.Fatal("hint is not deterministic")
		}
		if d.appPasswordHint(u1, p) == d.appPasswordHint(u2, p) {
			same++
		}
	}
	if same > 5 {
		t.Errorf("%d of 1000 passwords have the same hint for two users", same)
	}
}
