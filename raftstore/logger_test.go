package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
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

func TestClosedStreamOnStopIsNotAnError(t *testing.T) {
	var buf bytes.Buffer
	l := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), hclog.Debug)
	l.Error("failed to accept connection", "error", fmt.Errorf("accept: %w", net.ErrClosed))
	if !strings.Contains(buf.String(), "level=DEBUG") {
		t.Fatalf("accept on a closed stream logged as %q", buf.String())
	}
	buf.Reset()
	l.Error("failed to accept connection", "error", errors.New("too many open files"))
	if !strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("a real accept failure logged as %q", buf.String())
	}
}
