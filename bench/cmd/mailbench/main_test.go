package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/bench/report"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/bench/workload"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage:"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"run", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"run", "extra"}, 2, "unexpected argument"},
		{[]string{"run", "--target", "exchange"}, 2, "unknown target"},
		{[]string{"run", "--users", "4", "--imap-sessions", "8"}, 2, "imap sessions must be"},
		{[]string{"run", "--log-level", "loud"}, 2, "--log-level"},
		{[]string{"run", "--target", "cluster3", "--workload", "failover", "--failover-senders", "0"}, 2, "failover senders must be positive"},
		{[]string{"run", "--workload", "failover", "--failover-after", "0s"}, 2, "failover after duration"},
		{[]string{"render"}, 2, "one results JSON file"},
		{[]string{"run", "--sizes", "4k"}, 2, "want SIZE:MESSAGES"},
		{[]string{"run", "--sizes", ":4"}, 2, "want SIZE:MESSAGES"},
		{[]string{"run", "--sizes", "4x:4"}, 2, "size step"},
		{[]string{"run", "--workload", "smtp-ingest-sizes", "--sizes", "512:10"}, 2, "want 1 KiB..16 MiB"},
		{[]string{"help"}, 0, "-sizes"},
		{[]string{"help"}, 0, "-smtp-clients"},
		{[]string{"help"}, 0, "-failover-before"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := runMain(tt.args, &out, &errOut)
		if code != tt.code || !strings.Contains(out.String()+errOut.String(), tt.want) {
			t.Errorf("mailbench %v: exit %d (want %d), output %q lacks %q", tt.args, code, tt.code, out.String()+errOut.String(), tt.want)
		}
	}
}

func TestRender(t *testing.T) {
	dir := t.TempDir()
	run := &report.Run{Format: report.Format, Suite: "standard", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Targets: []report.TargetRun{{Info: targets.Info{Name: "single"}, Ingest: &workload.IngestResult{Acked: 1, MessagesPerSec: 1, ElapsedSec: 1}}}}
	path := filepath.Join(dir, "20260102-030405.json")
	if err := run.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join(dir, "docs")
	if err := os.Mkdir(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runMain([]string{"render", "--docs", docs, path}, &out, &errOut); code != 0 {
		t.Fatalf("render: exit %d: %s", code, errOut.String())
	}
	for _, p := range []string{filepath.Join(dir, "20260102-030405.md"), filepath.Join(dir, "20260102-030405-latency.svg"),
		filepath.Join(docs, "benchmarks.md"), filepath.Join(docs, "benchmarks-throughput.svg")} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if code := runMain([]string{"render", filepath.Join(dir, "missing.json")}, &out, &errOut); code != 1 {
		t.Errorf("render of a missing file: exit %d", code)
	}
}
