package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
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

func TestStopsAreNotErrors(t *testing.T) {
	peerGone := []any{"peer", "127.0.0.1:7000", "error", io.EOF}
	ownClose := []any{"peer", "127.0.0.1:7000", "error", fmt.Errorf("dial: %w", net.ErrClosed)}
	for _, c := range []struct {
		msg  string
		args []any
		want string
	}{
		// This node stopping: its own connections and transport closed.
		{"failed to decode incoming command", []any{"error", fmt.Errorf("read tcp: %w", net.ErrClosed)}, "DEBUG"},
		{"failed to decode incoming command", []any{"error", raft.ErrTransportShutdown}, "DEBUG"},
		{"failed to flush response", []any{"error", fmt.Errorf("write: %w", net.ErrClosed)}, "DEBUG"},
		{"failed to heartbeat to", ownClose, "DEBUG"},
		{"failed to appendEntries to", []any{"peer", "n2", "error", raft.ErrTransportShutdown}, "DEBUG"},
		// A peer that went away: Raft retries it.
		{"failed to appendEntries to", peerGone, "WARN"},
		{"failed to heartbeat to", peerGone, "WARN"},
		{"failed to make requestVote RPC", peerGone, "WARN"},
		{"failed to pipeline appendEntries", peerGone, "WARN"},
		{"failed to start pipeline replication to", peerGone, "WARN"},
		// A leadership that ended on purpose or by election.
		{"peer has newer term, stopping replication", []any{"peer", "n2"}, "INFO"},
		// What still is an error.
		{"failed to decode incoming command", []any{"error", errors.New("unknown rpc type 9")}, "ERROR"},
		{"failed to append to logs", []any{"error", errors.New("disk full")}, "ERROR"},
		{"failed to install snapshot", []any{"error", fmt.Errorf("read: %w", net.ErrClosed)}, "ERROR"},
	} {
		var buf bytes.Buffer
		l := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), hclog.Debug)
		l.Error(c.msg, c.args...)
		if !strings.Contains(buf.String(), "level="+c.want) {
			t.Errorf("%q with %v logged as %q, want level %s", c.msg, c.args, buf.String(), c.want)
		}
	}
}

// TestRaftsRoutineIsInfo: Raft's log matching and the votes a behind
// candidate is refused are how the protocol works, not warnings; the
// refusals that say something is wrong stay warnings.
func TestRaftsRoutineIsInfo(t *testing.T) {
	for _, c := range []struct {
		msg  string
		args []any
		want string
	}{
		{"failed to get previous log", []any{"previous-index", uint64(4), "last-index", uint64(0), "error", errors.New("log not found")}, "INFO"},
		{"appendEntries rejected, sending older logs", []any{"peer", "n2", "next", uint64(1)}, "INFO"},
		{"rejecting vote request since our last term is greater", []any{"candidate", "n2"}, "INFO"},
		{"rejecting pre-vote request since our last index is greater", []any{"candidate", "n2"}, "INFO"},
		{"rejecting vote request since node is not in configuration", []any{"from", "n9"}, "WARN"},
		{"rejecting vote request since we have a leader", []any{"from", "n2"}, "WARN"},
		{"heartbeat timeout reached, starting election", []any{"last-leader-id", "n1"}, "WARN"},
	} {
		var buf bytes.Buffer
		l := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), hclog.Debug)
		l.Warn(c.msg, c.args...)
		if !strings.Contains(buf.String(), "level="+c.want) {
			t.Errorf("%q with %v logged as %q, want level %s", c.msg, c.args, buf.String(), c.want)
		}
	}
}
