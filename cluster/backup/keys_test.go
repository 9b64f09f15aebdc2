package backup

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

func TestKeysAndIdentityFile(t *testing.T) {
	id, rcpt, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rcpt, "age1pq1") {
		t.Fatalf("recipient %q is not a hybrid post-quantum key", rcpt[:10])
	}
	if _, err := ParseRecipient(rcpt); err != nil {
		t.Fatal(err)
	}
	secret := id.encoded[0]
	// Neither String, %v nor slog show the secret.
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("key", "identity", id)
	for _, s := range []string{id.String(), fmt.Sprintf("%v", id), logs.String()} {
		if strings.Contains(s, secret) || strings.Contains(strings.ToLower(s), "age-secret-key") {
			t.Fatalf("identity rendered with its secret: %q", s)
		}
		if !strings.Contains(s, KeyID(rcpt)) {
			t.Fatalf("identity rendering %q lacks its key id", s)
		}
	}

	path := filepath.Join(t.TempDir(), "backup.identity")
	if err := WriteIdentityFile(path, id, rcpt, time.Now()); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %v, %v", info.Mode(), err)
	}
	if err := WriteIdentityFile(path, id, rcpt, time.Now()); err == nil {
		t.Fatal("identity file overwritten")
	}
	loaded, err := LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.matches(KeyID(rcpt)) || loaded.Recipient() != rcpt || id.Recipient() != rcpt {
		t.Fatalf("loaded identity has key ids %v, want %s", loaded.KeyIDs(), KeyID(rcpt))
	}
	body, _ := os.ReadFile(path)
	if !strings.Contains(string(body), rcpt) || !strings.Contains(string(body), "offline") {
		t.Fatal("identity file does not name its public key or say to keep it offline")
	}
}

func TestParseRecipientRejects(t *testing.T) {
	classic, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "no backup public key"},
		{classic.Recipient().String(), "hybrid post-quantum"},
		{"age1pq1notakey", "backup public key"},
		{classic.String(), "hybrid post-quantum"},
	} {
		_, err := ParseRecipient(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRecipient(%.12q): %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && tc.in == classic.String() && strings.Contains(err.Error(), classic.String()) {
			t.Error("error repeats a secret key")
		}
	}
	for _, in := range []string{"", "# only a comment\n", "AGE-SECRET-KEY-PQ-1BROKEN\n"} {
		if _, err := ParseIdentity(strings.NewReader(in)); err == nil {
			t.Errorf("ParseIdentity(%q) accepted", in)
		}
	}
}
