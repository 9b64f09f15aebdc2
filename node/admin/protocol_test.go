package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestErrorCodesRoundTrip(t *testing.T) {
	for _, c := range codes {
		wrapped := fmt.Errorf("add user: %w", c.err)
		code, status := classify(wrapped)
		if code != c.code || status != c.status {
			t.Errorf("classify(%v) = %s %d, want %s %d", wrapped, code, status, c.code, c.status)
		}
		back := &Error{Code: code, Message: wrapped.Error()}
		if !errors.Is(back, c.err) {
			t.Errorf("client error with code %s does not match %v", code, c.err)
		}
	}
	if code, status := classify(errors.New("disk on fire")); code != CodeInternal || status != 500 {
		t.Errorf("unknown error: %s %d", code, status)
	}
	if errors.Unwrap(&Error{Code: CodeInternal}) != nil {
		t.Error("internal code unwraps to a sentinel")
	}
	if !errors.Is(fmt.Errorf("x: %w", schema.ErrAuthFailed), schema.ErrAuthFailed) {
		t.Fatal("sanity")
	}
}

func TestDescribeDecodeErrorNeverQuotesTheBody(t *testing.T) {
	const secret = "hunter2-secret"
	bodies := []string{
		`{"password": hunter2-secret}`,
		`{"password": 12345}`,
		`{"password": "` + secret + `"`,
		`hunter2-secret`,
		``,
	}
	for _, b := range bodies {
		var req userRequest
		dec := json.NewDecoder(strings.NewReader(b))
		dec.DisallowUnknownFields()
		err := dec.Decode(&req)
		if err == nil {
			t.Fatalf("body %q decoded", b)
		}
		msg := describeDecodeError(err)
		if strings.Contains(msg, "hunter") || strings.Contains(msg, "12345") {
			t.Errorf("message for %q quotes the body: %q", b, msg)
		}
	}
}
