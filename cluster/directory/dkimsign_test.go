package directory

import (
	"strings"
	"testing"
)

func TestSignedFields(t *testing.T) {
	msg := "from: a@example.org\r\nTo: b@x.test,\r\n  c@x.test\r\nReceived: by x\r\nTo: d@x.test\nSubject: s\r\n\r\nFrom: body line\r\n"
	if got := strings.Join(signedFields([]byte(msg)), ","); got != "From,From,To,To,Subject" {
		t.Fatalf("signed fields %s", got)
	}
	if got := strings.Join(signedFields(nil), ","); got != "From" {
		t.Fatalf("signed fields of nothing %s", got)
	}
}

func FuzzSignedFields(f *testing.F) {
	f.Add([]byte("From: a@example.org\r\nSubject: x\r\n\r\nbody"))
	f.Add([]byte(" folded\r\n:\r\nTo:\n\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		fields := signedFields(msg)
		from := 0
		for _, f := range fields {
			if f == "From" {
				from++
			}
		}
		if from == 0 || len(fields) > len(msg)+1 {
			t.Fatalf("fields %v of %d bytes", fields, len(msg))
		}
	})
}
