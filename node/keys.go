package node

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/argon2"
)

const (
	masterKeySize = 32
	// maxKeyFileSize allows the raw key or its hex form with white space.
	maxKeyFileSize = 1024
	// maxPassphraseSize bounds a passphrase file.
	maxPassphraseSize = 4096
	// minPassphraseLength keeps a passphrase-derived key from being
	// guessable with a dictionary.
	minPassphraseLength = 12

	// Parameters for new salt files (RFC 9106 section 4, second
	// recommended option, with more memory). Existing salt files keep the
	// parameters they were written with.
	kdfTime    = 3
	kdfMemory  = 64 * 1024 // KiB
	kdfThreads = 4
	kdfSaltLen = 16

	keySourceFile       = "file"
	keySourcePassphrase = "passphrase"
)

// loadMasterKey returns the master key and its source ("file" or
// "passphrase"). A missing key file or salt is created only when the data
// directory is being initialized; later it is an error, because the mail
// cannot be decrypted without it.
func loadMasterKey(cfg Config, initializing bool, log *slog.Logger) (string, [masterKeySize]byte, error) {
	if cfg.Keys.PassphraseFile != "" {
		key, err := passphraseKey(cfg, initializing, log)
		return keySourcePassphrase, key, err
	}
	key, err := fileKey(cfg.masterKeyPath(), initializing, log)
	return keySourceFile, key, err
}

func fileKey(path string, initializing bool, log *slog.Logger) ([masterKeySize]byte, error) {
	var key [masterKeySize]byte
	b, perm, err := readSmallFile(path, maxKeyFileSize)
	switch {
	case errors.Is(err, fs.ErrNotExist) && initializing:
		if _, err := rand.Read(key[:]); err != nil {
			return key, fmt.Errorf("generate master key: %w", err)
		}
		if err := writeNewFile(path, key[:], secretFilePerm); err != nil {
			return key, fmt.Errorf("write master key: %w", err)
		}
		log.Info("master key created", "file", path)
		return key, nil
	case errors.Is(err, fs.ErrNotExist):
		return key, fmt.Errorf("master key file %s is missing: without it the mail in this data directory cannot be read", path)
	case err != nil:
		return key, fmt.Errorf("read master key: %w", err)
	}
	warnIfExposed(log, path, perm)
	return parseKey(path, b)
}

// parseKey accepts the 32 raw bytes written at init, or 64 hex digits
// (what an operator pastes from a secret store), with surrounding space.
func parseKey(path string, b []byte) ([masterKeySize]byte, error) {
	var key [masterKeySize]byte
	if len(b) == masterKeySize {
		copy(key[:], b)
		return key, nil
	}
	t := bytes.TrimSpace(b)
	if len(t) == 2*masterKeySize {
		if _, err := hex.Decode(key[:], t); err == nil {
			return key, nil
		}
	}
	return key, fmt.Errorf("master key file %s: want %d raw bytes or %d hex digits", path, masterKeySize, 2*masterKeySize)
}

func passphraseKey(cfg Config, initializing bool, log *slog.Logger) ([masterKeySize]byte, error) {
	var key [masterKeySize]byte
	b, perm, err := readSmallFile(cfg.Keys.PassphraseFile, maxPassphraseSize)
	if err != nil {
		return key, fmt.Errorf("read passphrase: %w", err)
	}
	warnIfExposed(log, cfg.Keys.PassphraseFile, perm)
	// One trailing line break is what editors and `echo` add.
	pass := bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	defer clear(b)
	if len([]rune(string(pass))) < minPassphraseLength {
		return key, fmt.Errorf("passphrase file %s: the passphrase must have at least %d characters", cfg.Keys.PassphraseFile, minPassphraseLength)
	}
	p, err := loadSalt(filepath.Join(cfg.DataDir, saltFileName), initializing, log)
	if err != nil {
		return key, err
	}
	copy(key[:], argon2.IDKey(pass, p.salt, p.time, p.memory, p.threads, masterKeySize))
	return key, nil
}

// kdfParams is the content of master.salt:
// "argon2id$v=19$m=65536,t=3,p=4$<base64 salt>".
type kdfParams struct {
	time, memory uint32
	threads      uint8
	salt         []byte
}

func (p kdfParams) String() string {
	return fmt.Sprintf("argon2id$v=%d$m=%d,t=%d,p=%d$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(p.salt))
}

func parseKDFParams(s string) (kdfParams, error) {
	var p kdfParams
	parts := strings.Split(strings.TrimSpace(s), "$")
	if len(parts) != 4 || parts[0] != "argon2id" || parts[1] != fmt.Sprintf("v=%d", argon2.Version) {
		return p, errors.New("want argon2id$v=19$m=..,t=..,p=..$salt")
	}
	var threads uint32
	if _, err := fmt.Sscanf(parts[2], "m=%d,t=%d,p=%d", &p.memory, &p.time, &threads); err != nil {
		return p, fmt.Errorf("parameters %q: %w", parts[2], err)
	}
	if p.time < 1 || p.time > 100 || p.memory < 8*1024 || p.memory > 4*1024*1024 || threads < 1 || threads > 255 {
		return p, fmt.Errorf("parameters %q out of range", parts[2])
	}
	p.threads = uint8(threads)
	salt, err := base64.RawStdEncoding.DecodeString(parts[3])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, errors.New("bad salt")
	}
	p.salt = salt
	return p, nil
}

func loadSalt(path string, initializing bool, log *slog.Logger) (kdfParams, error) {
	b, _, err := readSmallFile(path, 1024)
	switch {
	case errors.Is(err, fs.ErrNotExist) && initializing:
		p := kdfParams{time: kdfTime, memory: kdfMemory, threads: kdfThreads, salt: make([]byte, kdfSaltLen)}
		if _, err := rand.Read(p.salt); err != nil {
			return p, fmt.Errorf("generate salt: %w", err)
		}
		if err := writeNewFile(path, []byte(p.String()+"\n"), secretFilePerm); err != nil {
			return p, fmt.Errorf("write salt: %w", err)
		}
		log.Info("passphrase salt created", "file", path)
		return p, nil
	case errors.Is(err, fs.ErrNotExist):
		return kdfParams{}, fmt.Errorf("salt file %s is missing: the passphrase cannot give the key this data directory was initialized with", path)
	case err != nil:
		return kdfParams{}, fmt.Errorf("read salt: %w", err)
	}
	p, err := parseKDFParams(string(b))
	if err != nil {
		return p, fmt.Errorf("salt file %s: %w", path, err)
	}
	return p, nil
}

// keyCheck returns a MAC of a fixed label under key, recorded at init to
// recognize the same key later.
func keyCheck(key [masterKeySize]byte) string {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte("mailcluster/node/master-key-check/v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func warnIfExposed(log *slog.Logger, path string, perm fs.FileMode) {
	if perm&0o077 != 0 {
		log.Warn("secret file is readable by group or others; chmod 600 it", "file", path, "mode", perm.String())
	}
}
