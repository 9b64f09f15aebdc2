package protocols

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// brokenStore fails every login as an unavailable store would.
type brokenStore struct{ Store }

var errStoreDown = errors.New("store down")

func (brokenStore) Authenticate(context.Context, schema.Credentials) (Account, error) {
	return nil, errStoreDown
}

// TestAuthGuardReportsEveryLoginOnce checks that the observer hears of
// every login exactly once, by its result: accepted, refused for its
// credentials, refused by a lockout, or not checked for a store failure.
func TestAuthGuardReportsEveryLoginOnce(t *testing.T) {
	cfg := userLimitConfig()
	cfg.MaxFailuresPerIP = 3
	h := newGuardHarness(t, cfg)
	h.mustLogin("192.0.2.1", owner, ownerPW)
	h.mustLogin("192.0.2.1", owner, ownerPW)
	for range 3 {
		h.mustFail("192.0.2.2", owner, "guess", false)
	}
	h.mustFail("192.0.2.2", owner, ownerPW, true)
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.3"), Port: 1}
	if _, err := h.g.Login(context.Background(), brokenStore{}, Attempt{Protocol: "pop3", Remote: remote, Username: owner, Password: ownerPW}); !errors.Is(err, errStoreDown) {
		t.Fatalf("login on a broken store: %v", err)
	}
	got := fmt.Sprint(h.obs.successes, h.obs.failures, h.obs.errors)
	want := fmt.Sprint(map[string]int{"imap": 2}, map[string]int{"imap/false": 3, "imap/true": 1}, map[string]int{"pop3": 1})
	if got != want {
		t.Errorf("observed %s, want %s", got, want)
	}
}
