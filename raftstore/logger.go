package raftstore

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hclogAdapter lets hashicorp/raft log through slog. Raft logs indexes,
// terms and peer addresses, never entry contents.
type hclogAdapter struct {
	l     *slog.Logger
	name  string
	level hclog.Level
	args  []any
}

func newHclog(l *slog.Logger, level hclog.Level) hclog.Logger {
	return &hclogAdapter{l: l, level: level}
}

func (a *hclogAdapter) toSlog(level hclog.Level) slog.Level {
	switch {
	case level <= hclog.Debug:
		return slog.LevelDebug
	case level == hclog.Info:
		return slog.LevelInfo
	case level == hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level < a.level || level == hclog.Off {
		return
	}
	level = leveled(level, msg, args)
	if level < a.level {
		return
	}
	all := append(append([]any{}, a.args...), args...)
	if a.name != "" {
		all = append(all, "raft", a.name)
	}
	a.l.Log(context.Background(), a.toSlog(level), msg, all...)
}

// leveled returns the level a message of hashicorp/raft deserves here.
// Raft logs every failed call to a peer as an error, and so every stop of
// a node, its own or a peer's, printed a hundred errors (three nodes,
// nine groups): an operator watching errors would be called out at each
// rolling restart. What a stopping node says about its own closed
// connections is debug output; a peer that does not answer is a warning,
// since Raft retries it and the cluster's health checks judge the peer;
// a leader that sees a newer term has lost its leadership, which an
// election or a transfer does on purpose. Raft's routine repairs are
// information (see routine).
func leveled(level hclog.Level, msg string, args []any) hclog.Level {
	switch {
	case level == hclog.Warn && msg == "heartbeat timeout reached, starting election" && !hasValue(args, "last-leader-id"):
		// Every group elects itself at start-up; only an election after a
		// known leader went away deserves a warning.
		return hclog.Info
	case level == hclog.Warn && routine[msg]:
		return hclog.Info
	case level != hclog.Error:
		return level
	case msg == "failed to accept connection" && hasError(args, net.ErrClosed):
		// A replica's stream is closed before its transport on purpose
		// (pending dials end at once), so every clean stop reports this.
		return hclog.Debug
	case (msg == "failed to decode incoming command" || msg == "failed to flush response") &&
		(hasError(args, net.ErrClosed) || hasError(args, raft.ErrTransportShutdown)):
		// This node's transport closing the connections it serves.
		return hclog.Debug
	case msg == "failed to appendEntries to", msg == "failed to heartbeat to",
		msg == "failed to make requestVote RPC", msg == "failed to pipeline appendEntries",
		msg == "failed to start pipeline replication to":
		if hasError(args, net.ErrClosed) || hasError(args, raft.ErrTransportShutdown) {
			return hclog.Debug // this node's own transport is closed: it is stopping
		}
		return hclog.Warn
	case msg == "peer has newer term, stopping replication":
		return hclog.Info
	}
	return level
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsTrace() bool                 { return a.level <= hclog.Trace }
func (a *hclogAdapter) IsDebug() bool                 { return a.level <= hclog.Debug }
func (a *hclogAdapter) IsInfo() bool                  { return a.level <= hclog.Info }
func (a *hclogAdapter) IsWarn() bool                  { return a.level <= hclog.Warn }
func (a *hclogAdapter) IsError() bool                 { return a.level <= hclog.Error }
func (a *hclogAdapter) ImpliedArgs() []any            { return a.args }
func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any{}, a.args...), args...)
	return &c
}
func (a *hclogAdapter) Name() string { return a.name }
func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}
func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}
func (a *hclogAdapter) SetLevel(level hclog.Level) { a.level = level }
func (a *hclogAdapter) GetLevel() hclog.Level      { return a.level }
func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}
func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.Info(string(p))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// hasError reports whether the key/value list args has an "error" value
// that is target.
func hasError(args []any, target error) bool {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == "error" {
			err, _ := args[i+1].(error)
			return errors.Is(err, target)
		}
	}
	return false
}

// routine holds hashicorp/raft's warnings about the protocol doing its
// ordinary work: a follower whose log lacks the entry before a batch and
// its leader going back to find where the two agree (every new replica,
// every follower that was behind at a restart or a failover), and votes
// refused to a candidate whose log is behind (every election that
// follows a restart has some). A replica that stays behind shows in
// `cluster status` and its lag metric, not in these lines.
var routine = map[string]bool{
	"failed to get previous log":                                 true,
	"appendEntries rejected, sending older logs":                 true,
	"rejecting vote request since our last term is greater":      true,
	"rejecting vote request since our last index is greater":     true,
	"rejecting pre-vote request since our last term is greater":  true,
	"rejecting pre-vote request since our last index is greater": true,
}

// hasValue reports whether the key/value list args has a non-empty value
// for key.
func hasValue(args []any, key string) bool {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == key {
			v, _ := args[i+1].(string)
			return v != ""
		}
	}
	return false
}
