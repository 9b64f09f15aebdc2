package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValidDevelopmentConfig(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "data_dir") {
		t.Fatalf("Default() without a data dir: got %v, want a data_dir error", err)
	}
	cfg.DataDir = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Default() with a data dir: %v", err)
	}
	want := map[string]string{
		ListenSMTP:        "127.0.0.1:2525",
		ListenSubmission:  "127.0.0.1:2587",
		ListenSubmissions: "127.0.0.1:2465",
		ListenIMAP:        "127.0.0.1:2143",
		ListenIMAPS:       "127.0.0.1:2993",
		ListenPOP3:        "127.0.0.1:2110",
		ListenPOP3S:       "127.0.0.1:2995",
		ListenHTTP:        "127.0.0.1:2980",
		ListenHTTPS:       "127.0.0.1:2443",
	}
	for name, addr := range want {
		if got := cfg.Listen.Get(name); got != addr {
			t.Errorf("listener %s = %q, want %q", name, got, addr)
		}
	}
	if cfg.MailShards != 8 || cfg.Limits.MaxMessageSize != 50<<20 || cfg.Limits.MaxRecipients != 100 {
		t.Errorf("limits: shards %d, size %d, rcpts %d", cfg.MailShards, cfg.Limits.MaxMessageSize, cfg.Limits.MaxRecipients)
	}
	if cfg.AuthGuard.KnownAddressTTL != 30*24*time.Hour {
		t.Errorf("auth_guard.known_address_ttl = %v, want 30 days", cfg.AuthGuard.KnownAddressTTL)
	}
	if cfg.Log.Format != "json" || cfg.Log.Level != "info" {
		t.Errorf("log = %+v", cfg.Log)
	}
}

func TestParseOverridesDefaults(t *testing.T) {
	cfg, err := Parse("test.toml", []byte(`
hostname = "mail.example.com"
data_dir = "/var/lib/mailnode"
node_id = "node7"
mail_shards = 16

[listen]
smtp = "0.0.0.0:25"
imaps = ""
http = "127.0.0.1:0"

[tls]
cert_file = "/etc/mail/cert.pem"
key_file = "/etc/mail/key.pem"

[keys]
passphrase_file = "/etc/mail/passphrase"

[limits]
max_message_size = "20MiB"
max_recipients = 50
max_connections = 0

[auth_guard]
lockout = "30m"
known_address_ttl = "168h"
failure_delay = "250ms"

[log]
level = "debug"
format = "text"
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"hostname", cfg.Hostname, "mail.example.com"},
		{"data_dir", cfg.DataDir, "/var/lib/mailnode"},
		{"node_id", cfg.NodeID, "node7"},
		{"mail_shards", cfg.MailShards, 16},
		{"smtp", cfg.Listen.SMTP, "0.0.0.0:25"},
		{"imaps disabled", cfg.Listen.IMAPS, ""},
		{"imap kept", cfg.Listen.IMAP, "127.0.0.1:2143"},
		{"http", cfg.Listen.HTTP, "127.0.0.1:0"},
		{"cert", cfg.TLS.CertFile, "/etc/mail/cert.pem"},
		{"passphrase", cfg.Keys.PassphraseFile, "/etc/mail/passphrase"},
		{"size", cfg.Limits.MaxMessageSize, ByteSize(20 << 20)},
		{"rcpts", cfg.Limits.MaxRecipients, 50},
		{"conns", cfg.Limits.MaxConnections, 0},
		{"per ip kept", cfg.Limits.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP},
		{"lockout", cfg.AuthGuard.Lockout, 30 * time.Minute},
		{"delay", cfg.AuthGuard.FailureDelay, 250 * time.Millisecond},
		{"window kept", cfg.AuthGuard.Window, 5 * time.Minute},
		{"known addresses", cfg.AuthGuard.KnownAddressTTL, 7 * 24 * time.Hour},
		{"level", cfg.Log.Level, "debug"},
		{"format", cfg.Log.Format, "text"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseRejectsUnknownKeys(t *testing.T) {
	for _, doc := range []string{
		"hostnme = \"x\"\n",
		"[listen]\nsmtps = \"127.0.0.1:465\"\n",
		"[limits]\nmax_msg_size = 10\n",
		"[nosuchsection]\nx = 1\n",
	} {
		_, err := Parse("bad.toml", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("Parse(%q) = %v, want an unknown key error", doc, err)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for _, doc := range []string{
		"hostname = ",
		"mail_shards = \"eight\"\n",
		"[limits]\nmax_message_size = \"ten\"\n",
		"[limits]\nmax_message_size = -1\n",
		"[auth_guard]\nlockout = \"soon\"\n",
	} {
		if _, err := Parse("bad.toml", []byte(doc)); err == nil {
			t.Errorf("Parse(%q) succeeded", doc)
		}
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "mailnode.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("mailnode.example.toml", b)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("example config: %v", err)
	}
	if cfg.Listen.SMTP == "" || !strings.HasSuffix(cfg.Listen.SMTP, ":25") || !strings.HasSuffix(cfg.Listen.IMAPS, ":993") {
		t.Errorf("example config should use the production ports: %+v", cfg.Listen)
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no hostname", func(c *Config) { c.Hostname = "" }, "hostname"},
		{"bad hostname", func(c *Config) { c.Hostname = "mail example" }, "hostname"},
		{"bad node id", func(c *Config) { c.NodeID = "node/1" }, "node_id"},
		{"empty node id", func(c *Config) { c.NodeID = "" }, "node_id"},
		{"zero shards", func(c *Config) { c.MailShards = 0 }, "mail_shards"},
		{"too many shards", func(c *Config) { c.MailShards = 5000 }, "mail_shards"},
		{"listener without port", func(c *Config) { c.Listen.IMAP = "127.0.0.1" }, "listen.imap"},
		{"listener bad port", func(c *Config) { c.Listen.POP3 = "127.0.0.1:99999" }, "listen.pop3"},
		{"duplicate listener", func(c *Config) { c.Listen.IMAPS = c.Listen.IMAP }, "same address"},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "/x.pem" }, "cert_file and key_file"},
		{"two key sources", func(c *Config) { c.Keys.MasterKeyFile, c.Keys.PassphraseFile = "/a", "/b" }, "not both"},
		{"tiny message size", func(c *Config) { c.Limits.MaxMessageSize = 10 }, "max_message_size"},
		{"huge message size", func(c *Config) { c.Limits.MaxMessageSize = 2 << 30 }, "max_message_size"},
		{"no recipients", func(c *Config) { c.Limits.MaxRecipients = 0 }, "max_recipients"},
		{"negative connections", func(c *Config) { c.Limits.MaxConnections = -1 }, "max_connections"},
		{"negative per ip", func(c *Config) { c.Limits.MaxConnectionsPerIP = -1 }, "max_connections_per_ip"},
		{"negative guard", func(c *Config) { c.AuthGuard.MaxFailuresPerIP = -1 }, "auth_guard"},
		{"guard without window", func(c *Config) { c.AuthGuard.Window = 0 }, "window and lockout"},
		{"long failure delay", func(c *Config) { c.AuthGuard.FailureDelay = time.Hour }, "failure_delay"},
		{"negative known address ttl", func(c *Config) { c.AuthGuard.KnownAddressTTL = -time.Hour }, "auth_guard"},
		{"bad level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"bad format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			cfg.DataDir = "/tmp/x"
			tt.mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := Default()
	cfg.Hostname, cfg.MailShards, cfg.Log.Format = "", 0, "xml"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() succeeded")
	}
	for _, want := range []string{"hostname", "data_dir", "mail_shards", "log.format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestPortZeroListenersAllowed(t *testing.T) {
	cfg := Default()
	cfg.DataDir = "/tmp/x"
	for _, name := range ListenerNames() {
		cfg.Listen.set(name, "127.0.0.1:0")
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("port 0 everywhere: %v", err)
	}
}

func TestBindHost(t *testing.T) {
	l := Default().Listen
	l.POP3S = ""
	if err := l.BindHost("0.0.0.0"); err != nil {
		t.Fatal(err)
	}
	if l.SMTP != "0.0.0.0:2525" || l.HTTP != "0.0.0.0:2980" || l.POP3S != "" {
		t.Errorf("after BindHost: %+v", l)
	}
	if err := l.BindHost("::"); err != nil || l.IMAP != "[::]:2143" {
		t.Errorf("BindHost(::): %v, imap %q", err, l.IMAP)
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"50MiB", 50 << 20, true},
		{"512 KiB", 512 << 10, true},
		{"1GiB", 1 << 30, true},
		{"2MB", 2000000, true},
		{"10b", 10, true},
		{"", 0, false},
		{"-5", 0, false},
		{"5 parsecs", 0, false},
		{"99999999999999999999GiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	if s := ByteSize(50 << 20).String(); s != "50MiB" {
		t.Errorf("String() = %q", s)
	}
}
