package mtasts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	good := "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.MX.example.org.\r\nmax_age: 604800\r\n"
	p, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeEnforce || p.MaxAge != 7*24*time.Hour || strings.Join(p.MX, ",") != "mail.example.org,*.mx.example.org" {
		t.Fatalf("parsed %+v", p)
	}
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"mail.example.org", true}, {"MAIL.example.org.", true}, {"a.mx.example.org", true},
		{"mx.example.org", false}, {"a.b.mx.example.org", false}, {"example.org", false}, {"evil.test", false}, {"", false},
	} {
		if got := p.Allowed(tc.host); got != tc.ok {
			t.Errorf("Allowed(%q) = %v, want %v", tc.host, got, tc.ok)
		}
	}
	if !p.Enforced() {
		t.Error("enforce policy not enforced")
	}
	var none *Policy
	if !none.Allowed("anything.test") || none.Enforced() {
		t.Error("a nil policy refuses")
	}
	// LF line endings, spaces, unknown keys and mode none without mx.
	p, err = Parse([]byte("version:STSv1\nmode:  none \nmax_age: 0\nextension: yes\n"))
	if err != nil || p.Mode != ModeNone || !p.Allowed("x.test") {
		t.Fatalf("mode none: %+v, %v", p, err)
	}
	for name, body := range map[string]string{
		"no version":      "mode: testing\nmx: a.test\nmax_age: 1\n",
		"bad version":     "version: STSv2\nmode: testing\nmx: a.test\nmax_age: 1\n",
		"no mode":         "version: STSv1\nmx: a.test\nmax_age: 1\n",
		"bad mode":        "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
		"two modes":       "version: STSv1\nmode: testing\nmode: enforce\nmx: a.test\nmax_age: 1\n",
		"no mx":           "version: STSv1\nmode: enforce\nmax_age: 1\n",
		"bad mx":          "version: STSv1\nmode: enforce\nmx: a b.test\nmax_age: 1\n",
		"inner wildcard":  "version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 1\n",
		"no max_age":      "version: STSv1\nmode: enforce\nmx: a.test\n",
		"max_age too big": "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n",
		"max_age -1":      "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
		"no colon":        "version: STSv1\nmode enforce\nmx: a.test\nmax_age: 1\n",
		"too big":         "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\n" + strings.Repeat("x: y\n", MaxPolicySize/5),
		"too many mx":     "version: STSv1\nmode: enforce\nmax_age: 1\n" + strings.Repeat("mx: a.test\n", MaxMX+1),
	} {
		if _, err := Parse([]byte(body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestPolicyTextAndID(t *testing.T) {
	p := Policy{Mode: ModeTesting, MX: []string{"a.example.org", "b.example.org"}, MaxAge: 86400 * time.Second}
	back, err := Parse([]byte(p.Text()))
	if err != nil || back.Mode != p.Mode || strings.Join(back.MX, " ") != strings.Join(p.MX, " ") || back.MaxAge != p.MaxAge {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	id := p.TextID()
	if got, err := ParseRecord(p.Record()); err != nil || got != id || len(id) != 20 {
		t.Fatalf("record %q: %q, %v", p.Record(), got, err)
	}
	p.Mode = ModeEnforce
	if p.TextID() == id {
		t.Fatal("the id did not change with the policy")
	}
}

func TestParseRecord(t *testing.T) {
	for txt, want := range map[string]string{
		"v=STSv1; id=20160831085700Z;":  "20160831085700Z",
		"v=STSv1;id=abc":                "abc",
		"v=STSv1; ext=1; id=X1 ":        "X1",
		"v=STSv1; id=" + rep("a", 32):   rep("a", 32),
		"v=STSv1; id=" + rep("a", 33):   "",
		"v=STSv1; id=a-b":               "",
		"v=STSv1":                       "",
		"v=STSv1; id=a; id=b":           "",
		"id=abc; v=STSv1":               "",
		"v=spf1 -all":                   "",
		"v=STSv1; id=" + rep("a", 1100): "",
	} {
		got, err := ParseRecord(txt)
		if want == "" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%q: %q, %v; want ErrInvalid", txt, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", txt, got, err, want)
		}
	}
}

func rep(s string, n int) string { return strings.Repeat(s, n) }

func FuzzParse(f *testing.F) {
	f.Add([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.example.net\r\nmax_age: 604800\r\n"))
	f.Add([]byte("version:STSv1\nmode:none\nmax_age:0\n"))
	f.Add([]byte("mx: *.\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if len(p.MX) > MaxMX || p.MaxAge > MaxAge || !p.Mode.Valid() {
			t.Fatalf("accepted out of limits: %+v", p)
		}
		back, err := Parse([]byte(p.Text()))
		if err != nil || back.Text() != p.Text() {
			t.Fatalf("round trip of %q: %v", p.Text(), err)
		}
		p.Allowed("mail.example.org")
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Add("v=STSv1;id=;")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseRecord(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if !validID(id) {
			t.Fatalf("accepted id %q", id)
		}
	})
}
