package node

import (
	"strings"
	"testing"
)

func TestCLICompactOnlineThenOffline(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, "alice-password\n", "user", "add", "--data", dir, "alice@example.test")

	out := mustCLI(t, "", "compact", "--data", dir)
	if !strings.Contains(out, "log truncated") {
		t.Fatalf("online compact said %q", out)
	}
	failCLI(t, ExitUsage, "compact takes only", "", "compact", "--data", dir, "extra")

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	out = mustCLI(t, "", "compact", "--data", dir)
	if !strings.Contains(out, "compacted 3 shards") {
		t.Fatalf("offline compact said %q", out)
	}
	// The node starts on the compacted files and still knows its users.
	startNode(t, cfg)
	if out := mustCLI(t, "", "user", "list", "--data", dir); !strings.Contains(out, "alice@example.test") {
		t.Fatalf("users after compaction: %q", out)
	}
}
