package node

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// refusingStore refuses every login.
type refusingStore struct{ protocols.Store }

func (refusingStore) Authenticate(context.Context, schema.Credentials) (protocols.Account, error) {
	return nil, schema.ErrAuthFailed
}

// TestAuthMetrics checks that a guard built from the node's configuration
// counts refused logins and lockouts in the node's registry, and logs a
// lockout with the node's logger.
func TestAuthMetrics(t *testing.T) {
	m := newMetrics("n1", "test")
	var logs bytes.Buffer
	cfg := Default().AuthGuard
	cfg.MaxFailuresPerIP, cfg.FailureDelay = 2, 0
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	guard := protocols.NewAuthGuard(cfg.protocols(slog.New(slog.NewTextHandler(&logs, nil)), m.auth), func() time.Time { return clock })
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}
	for i := 0; i < 3; i++ {
		guard.Login(context.Background(), refusingStore{}, protocols.Attempt{Protocol: "pop3", Remote: remote, Username: "a@example.org", Password: "x"})
	}

	// Every protocol's series is exported from the start.
	got := map[string]float64{}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "mail_auth_") {
			continue
		}
		for _, s := range f.GetMetric() {
			name := f.GetName()
			for _, l := range s.GetLabel() {
				name += " " + l.GetName() + "=" + l.GetValue()
			}
			got[name] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"mail_auth_failures_total protocol=pop3 reason=credentials": 2,
		"mail_auth_failures_total protocol=pop3 reason=locked":      1,
		"mail_auth_failures_total protocol=imap reason=credentials": 0,
		"mail_auth_lockouts_total protocol=pop3 scope=address":      1,
		"mail_auth_lockouts_total protocol=pop3 scope=user":         0,
		"mail_auth_lockouts_total protocol=smtp scope=user":         0,
		"mail_auth_successes_total protocol=pop3":                   0,
		"mail_auth_errors_total protocol=imap":                      0,
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (exported %v), want %v", name, g, ok, v)
		}
	}
	if len(got) != 18 {
		t.Errorf("%d auth series, want 18: %v", len(got), got)
	}
	if n := strings.Count(logs.String(), "login lockout started"); n != 1 {
		t.Errorf("%d lockout records, want 1:\n%s", n, logs.String())
	}
}
