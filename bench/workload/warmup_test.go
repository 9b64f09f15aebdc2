package workload

import (
	"errors"
	"fmt"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestUnavailableIsTriedAgain: only a server's NO [UNAVAILABLE], however
// wrapped, makes the warm-up try a login again; a refused password or a
// broken connection fails it at once.
func TestUnavailableIsTriedAgain(t *testing.T) {
	temp := &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Temporary failure, try again later"}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("imap authenticate: %w", temp), true},
		{fmt.Errorf("imap authenticate: %w", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed}), false},
		{errors.New("connection reset by peer"), false},
	} {
		if got := unavailable(tc.err); got != tc.want {
			t.Errorf("unavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
