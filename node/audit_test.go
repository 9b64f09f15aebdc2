package node

import (
	"context"
	"encoding/json"
	"os/user"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// TestAuditLog: every action through the admin socket is recorded with
// the operator, the node, what it named and its result, never a
// password; reads are not recorded; old entries are pruned.
func TestAuditLog(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	mustCLI(t, "", "domain", "add", "--data", dir, "audit.test")
	mustCLI(t, "secret-password-1\n", "user", "add", "--data", dir, "ann@audit.test")
	failCLI(t, ExitError, "already exists", "", "domain", "add", "--data", dir, "audit.test")
	mustCLI(t, "", "user", "list", "--data", dir)

	out := mustCLI(t, "", "audit", "--data", dir, "--json")
	if strings.Contains(out, "secret-password-1") {
		t.Fatal("the audit log holds a password")
	}
	var entries []directory.AuditEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3 (reads are not recorded): %+v", len(entries), entries)
	}
	me, _ := user.Current()
	for _, e := range entries {
		if e.Node != cfg.NodeID || (me != nil && e.Who != me.Username) || e.Time.IsZero() {
			t.Errorf("entry %+v: want node %s, who %v", e, cfg.NodeID, me)
		}
	}
	if e := entries[0]; e.Action != "POST /v1/domains" || e.Subject["name"] != "audit.test" || e.Result != "ok" {
		t.Errorf("first entry %+v", e)
	}
	if e := entries[1]; e.Action != "POST /v1/users" || e.Subject["address"] != "ann@audit.test" || e.Result != "ok" {
		t.Errorf("second entry %+v", e)
	}
	if e := entries[2]; !strings.HasPrefix(e.Result, "refused (") || !strings.Contains(e.Result, "already exists") {
		t.Errorf("refused action %+v", e)
	}
	table := mustCLI(t, "", "audit", "--data", dir)
	if !strings.Contains(table, "POST /v1/users") || !strings.Contains(table, "address=ann@audit.test") {
		t.Errorf("table:\n%s", table)
	}
	if k, err := n.directory.PruneAudit(context.Background(), time.Now().Add(time.Minute)); err != nil || k != 3 {
		t.Fatalf("prune: %d, %v", k, err)
	}
	if out := mustCLI(t, "", "audit", "--data", dir, "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("after pruning: %s", out)
	}
}
