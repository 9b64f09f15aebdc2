package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// dirConfig returns a valid config whose data directory does not exist
// yet.
func dirConfig(t *testing.T) Config {
	t.Helper()
	cfg := Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	return cfg
}

func openDir(t *testing.T, cfg Config) *dataDir {
	t.Helper()
	d, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now())
	if err != nil {
		t.Fatalf("open data dir: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestDataDirInitCreatesFilesWithModes(t *testing.T) {
	cfg := dirConfig(t)
	d := openDir(t, cfg)
	if !d.created {
		t.Error("first open did not report an init")
	}
	dir := cfg.DataDir
	for path, want := range map[string]os.FileMode{
		dir:                                          0o700,
		filepath.Join(dir, masterKeyName):            0o600,
		filepath.Join(dir, stateFileName):            0o600,
		filepath.Join(dir, tlsDirName):               0o700,
		filepath.Join(dir, tlsDirName, keyFileName):  0o600,
		filepath.Join(dir, tlsDirName, certFileName): 0o644,
	} {
		if got := mode(t, path); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, masterKeyName))
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 || bytes.Equal(key, make([]byte, 32)) {
		t.Errorf("master key: %d bytes, all zero %v", len(key), bytes.Equal(key, make([]byte, 32)))
	}
	if !bytes.Equal(key, d.masterKey[:]) {
		t.Error("loaded key differs from the file")
	}
	if d.state.NodeID != cfg.NodeID || d.state.MailShards != cfg.MailShards || d.state.KeySource != keySourceFile {
		t.Errorf("state = %+v", d.state)
	}
	leaf := d.tls.cert.Leaf
	if leaf == nil || leaf.VerifyHostname("localhost") != nil || leaf.VerifyHostname("127.0.0.1") != nil {
		t.Errorf("generated certificate does not cover localhost: %+v", leaf)
	}
}

func TestDataDirSecondStartReusesSecrets(t *testing.T) {
	cfg := dirConfig(t)
	d1, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key1, cert1 := d1.masterKey, d1.tls.cert.Certificate[0]
	d1.Close()

	d2 := openDir(t, cfg)
	if d2.created {
		t.Error("second open reported an init")
	}
	if d2.masterKey != key1 {
		t.Error("master key changed between starts")
	}
	if !bytes.Equal(d2.tls.cert.Certificate[0], cert1) {
		t.Error("generated certificate changed between starts")
	}
}

func TestDataDirTightensMode(t *testing.T) {
	cfg := dirConfig(t)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	openDir(t, cfg)
	if got := mode(t, cfg.DataDir); got != 0o700 {
		t.Errorf("data dir mode %v, want 0700", got)
	}
}

func TestDataDirLockedWhileOpen(t *testing.T) {
	cfg := dirConfig(t)
	openDir(t, cfg)
	_, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now())
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second open while the first holds the lock: %v, want ErrDataDirInUse", err)
	}
}

func TestDataDirRefusesForeignDirectory(t *testing.T) {
	cfg := dirConfig(t)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "thesis.tex"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now())
	if err == nil || !strings.Contains(err.Error(), "refusing to initialize") {
		t.Fatalf("open of a non-empty foreign dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, masterKeyName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a master key was written into a foreign directory: %v", err)
	}
}

func TestDataDirResumesInterruptedInit(t *testing.T) {
	cfg := dirConfig(t)
	d := openDir(t, cfg)
	key := d.masterKey
	d.Close()
	// Simulate a crash after the key was written but before node.json.
	if err := os.Remove(filepath.Join(cfg.DataDir, stateFileName)); err != nil {
		t.Fatal(err)
	}
	d2 := openDir(t, cfg)
	if !d2.created || d2.masterKey != key {
		t.Errorf("resumed init: created %v, same key %v", d2.created, d2.masterKey == key)
	}
}

func TestDataDirChecksIdentity(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, cfg *Config)
		want   string
	}{
		{"node id changed", func(t *testing.T, cfg *Config) { cfg.NodeID = "node2" }, "node id cannot change"},
		{"key replaced", func(t *testing.T, cfg *Config) {
			other := bytes.Repeat([]byte{7}, 32)
			if err := os.WriteFile(filepath.Join(cfg.DataDir, masterKeyName), other, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "does not match"},
		{"key deleted", func(t *testing.T, cfg *Config) {
			if err := os.Remove(filepath.Join(cfg.DataDir, masterKeyName)); err != nil {
				t.Fatal(err)
			}
		}, "missing"},
		{"key truncated", func(t *testing.T, cfg *Config) {
			if err := os.WriteFile(filepath.Join(cfg.DataDir, masterKeyName), []byte("short"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "raw bytes"},
		{"switched to passphrase", func(t *testing.T, cfg *Config) {
			cfg.Keys.PassphraseFile = writePassphrase(t, "correct horse battery staple")
		}, "salt file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := dirConfig(t)
			d := openDir(t, cfg)
			d.Close()
			tt.change(t, &cfg)
			_, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("open after %s: %v, want an error containing %q", tt.name, err, tt.want)
			}
		})
	}
}

func TestDataDirMailShardsFixedAtInit(t *testing.T) {
	cfg := dirConfig(t)
	openDir(t, cfg).Close()
	cfg.MailShards = 3
	d := openDir(t, cfg)
	if d.state.MailShards != DefaultMailShards {
		t.Errorf("mail shards = %d after a config change, want the init value %d", d.state.MailShards, DefaultMailShards)
	}
}

func TestHexMasterKeyFile(t *testing.T) {
	cfg := dirConfig(t)
	key := bytes.Repeat([]byte{0xab}, 32)
	cfg.Keys.MasterKeyFile = filepath.Join(t.TempDir(), "key.hex")
	if err := os.WriteFile(cfg.Keys.MasterKeyFile, []byte("  "+hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := openDir(t, cfg)
	if !bytes.Equal(d.masterKey[:], key) {
		t.Error("hex key file not decoded")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, masterKeyName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a default key was created although a key file is configured")
	}
}

func writePassphrase(t *testing.T, pass string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passphrase")
	if err := os.WriteFile(path, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPassphraseKey(t *testing.T) {
	cfg := dirConfig(t)
	cfg.Keys.PassphraseFile = writePassphrase(t, "correct horse battery staple")
	d := openDir(t, cfg)
	key := d.masterKey
	d.Close()
	if got := mode(t, filepath.Join(cfg.DataDir, saltFileName)); got != 0o600 {
		t.Errorf("salt mode %v", got)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, masterKeyName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a key file was created in passphrase mode")
	}
	if d.state.KeySource != keySourcePassphrase {
		t.Errorf("key source %q", d.state.KeySource)
	}

	d = openDir(t, cfg)
	if d.masterKey != key {
		t.Error("the same passphrase gave another key")
	}
	d.Close()

	cfg.Keys.PassphraseFile = writePassphrase(t, "incorrect horse battery staple")
	if _, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now()); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong passphrase: %v", err)
	}
	cfg.Keys.PassphraseFile = writePassphrase(t, "short")
	if _, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now()); err == nil || !strings.Contains(err.Error(), "at least") {
		t.Fatalf("short passphrase: %v", err)
	}
}

func TestKDFParamsRoundTrip(t *testing.T) {
	p := kdfParams{time: 3, memory: 65536, threads: 4, salt: []byte("0123456789abcdef")}
	got, err := parseKDFParams(p.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.time != p.time || got.memory != p.memory || got.threads != p.threads || !bytes.Equal(got.salt, p.salt) {
		t.Errorf("round trip: %+v", got)
	}
	for _, bad := range []string{"", "scrypt$v=19$m=1,t=1,p=1$AAAA", "argon2id$v=19$m=1,t=1,p=1$AAAAAAAAAAAA", "argon2id$v=19$m=65536,t=3,p=4$!!"} {
		if _, err := parseKDFParams(bad); err == nil {
			t.Errorf("parseKDFParams(%q) succeeded", bad)
		}
	}
}

func TestGeneratedCertificateRenewal(t *testing.T) {
	cfg := dirConfig(t)
	d := openDir(t, cfg)
	first := d.tls.cert.Certificate[0]
	d.Close()

	t.Run("hostname changed", func(t *testing.T) {
		cfg := cfg
		cfg.Hostname = "mail.example.test"
		d := openDir(t, cfg)
		if bytes.Equal(d.tls.cert.Certificate[0], first) || d.tls.cert.Leaf.VerifyHostname("mail.example.test") != nil {
			t.Error("certificate not regenerated for the new hostname")
		}
		d.Close()
	})
	t.Run("expiring", func(t *testing.T) {
		d, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now().Add(selfSignedValidity))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if !d.tls.cert.Leaf.NotAfter.After(time.Now().Add(selfSignedValidity - 24*time.Hour)) {
			t.Error("an expiring certificate was kept")
		}
	})
}

func TestConfiguredCertificate(t *testing.T) {
	cfg := dirConfig(t)
	src := dirConfig(t)
	src.Hostname = "mail.example.test"
	d := openDir(t, src)
	d.Close()
	cfg.Hostname = "mail.example.test"
	cfg.TLS.CertFile = filepath.Join(src.DataDir, tlsDirName, certFileName)
	cfg.TLS.KeyFile = filepath.Join(src.DataDir, tlsDirName, keyFileName)
	d = openDir(t, cfg)
	block, _ := pem.Decode(mustRead(t, cfg.TLS.CertFile))
	want, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.tls.cert.Certificate[0], want.Raw) || d.tls.generated {
		t.Error("configured certificate not used")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, tlsDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a certificate was generated although one is configured")
	}

	d.Close()
	cfg.TLS.KeyFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := openDataDir(context.Background(), cfg, "test", discardLogger(), time.Now()); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("missing key file: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
