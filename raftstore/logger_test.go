package raftstore

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestStartupElectionIsNotAWarning(t *testing.T) {
	var buf bytes.Buffer
	l := newHclog(slog.New(slog.NewTextHandler(&buf, nil)), hclog.Info)
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "", "last-leader-id", "")
	if !strings.Contains(buf.String(), "level=INFO") {
		t.Fatalf("start-up election logged as %q", buf.String())
	}
	buf.Reset()
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "n2:1", "last-leader-id", "n2")
	if !strings.Contains(buf.String(), "level=WARN") {
		t.Fatalf("election after losing a leader logged as %q", buf.String())
	}
	buf.Reset()
	hclog.Logger(newHclog(slog.New(slog.NewTextHandler(&buf, nil)), hclog.Warn)).Warn("heartbeat timeout reached, starting election", "last-leader-id", "")
	if buf.Len() != 0 {
		t.Fatalf("demoted message printed below the level: %q", buf.String())
	}
}
