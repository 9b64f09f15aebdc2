package node

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader in
// different goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestReadPasswordLine(t *testing.T) {
	long := strings.Repeat("p", maxPasswordInput)
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"newline", "secret-pw\n", "secret-pw", true},
		{"crlf", "secret-pw\r\n", "secret-pw", true},
		{"no newline", "secret-pw", "secret-pw", true},
		{"first line only", "secret-pw\nsecond\n", "secret-pw", true},
		{"spaces kept", " a b \n", " a b ", true},
		{"longest", long + "\n", long, true},
		{"longest without newline", long, long, true},
		{"too long", long + "p\n", "", false},
		{"far too long", strings.Repeat("p", 5000), "", false},
		{"empty input", "", "", false},
		{"empty line", "\n", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readPasswordLine(strings.NewReader(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("readPasswordLine = %q, %v; want %q, ok=%v", got, err, tt.want, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), "ppp") {
				t.Errorf("error echoes the password: %v", err)
			}
		})
	}
}

func TestReadPasswordFromPipeDoesNotPrompt(t *testing.T) {
	var prompt bytes.Buffer
	got, err := readPassword(strings.NewReader("secret-pw\n"), &prompt)
	if err != nil || got != "secret-pw" {
		t.Fatalf("readPassword = %q, %v", got, err)
	}
	if prompt.Len() != 0 {
		t.Errorf("prompted on a pipe: %q", prompt.String())
	}
}
