package node

import (
	"strings"
	"testing"
)

// FuzzParseConfig feeds arbitrary config files through Parse and
// Validate: neither may panic, and an accepted file must keep its
// listeners parseable by BindHost.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("hostname = \"mail.example.com\"\n[listen]\nsmtp = \"0.0.0.0:25\"\n"))
	f.Add([]byte("[limits]\nmax_message_size = \"50MiB\"\n[auth_guard]\nlockout = \"10m\"\n"))
	f.Add([]byte("mail_shards = 99999999999999999999\n"))
	f.Add([]byte("[listen]\nimap = \"[::1]:0\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			return
		}
		cfg.DataDir = "/tmp/fuzz"
		if cfg.Validate() != nil {
			return
		}
		if err := cfg.Listen.BindHost("127.0.0.1"); err != nil {
			t.Fatalf("valid listeners rejected by BindHost: %v", err)
		}
	})
}

// FuzzSecretsParsers covers the parsers of files in the data directory:
// the salt file, key files and sizes.
func FuzzSecretsParsers(f *testing.F) {
	f.Add("argon2id$v=19$m=65536,t=3,p=4$MDEyMzQ1Njc4OWFiY2RlZg")
	f.Add(strings.Repeat("ab", 32))
	f.Add("50MiB")
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := parseKDFParams(s); err == nil {
			if _, err := parseKDFParams(p.String()); err != nil {
				t.Fatalf("round trip of %q: %v", s, err)
			}
		}
		parseKey("fuzz", []byte(s))
		if n, err := ParseByteSize(s); err == nil && n < 0 {
			t.Fatalf("negative size %d from %q", n, s)
		}
		readPasswordLine(strings.NewReader(s))
	})
}
