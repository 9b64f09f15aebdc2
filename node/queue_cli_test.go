package node

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestCLIQueueCommands drives mailnode queue list|show|hold|release|
// delete against a message the remote defers, and reads the queue
// metrics.
func TestCLIQueueCommands(t *testing.T) {
	port := mtatest.FreePort(t)
	refusing := mtatest.StartSink(t, port, "-r", "RCPT")
	n, cfg := outboundNode(t, port)
	dir := cfg.DataDir
	if out := mustCLI(t, "", "queue", "list", "--data", dir); out != "queue is empty\n" {
		t.Errorf("empty queue: %q", out)
	}
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "queued1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a deferred attempt", func() bool {
		es := queueEntries(t, n)
		return len(es) == 1 && es[0].State.Recipients[0].Code == 450
	})
	id := queueEntries(t, n)[0].ID.String()

	out := mustCLI(t, "", "queue", "list", "--data", dir)
	if !strings.Contains(out, id) || !strings.Contains(out, "1 queued") || !strings.Contains(out, "alice@example.test") {
		t.Errorf("queue list:\n%s", out)
	}
	var list []queueEntry
	if err := json.Unmarshal([]byte(mustCLI(t, "", "queue", "list", "--json", "--data", dir)), &list); err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("queue list --json: %+v %v", list, err)
	}
	out = mustCLI(t, "", "queue", "show", id, "--data", dir)
	if !strings.Contains(out, "bob@remote.test") || !strings.Contains(out, "450") || !strings.Contains(out, "mx.remote.test") {
		t.Errorf("queue show:\n%s", out)
	}
	if out := mustCLI(t, "", "queue", "hold", "--data", dir, id); !strings.Contains(out, "held") {
		t.Errorf("queue hold: %q", out)
	}
	if e := queueEntries(t, n)[0]; !e.Held {
		t.Fatal("entry not held")
	}
	if _, body := httpGet(t, n, "/metrics"); !strings.Contains(body, "mail_outbound_queue_messages 1") ||
		!strings.Contains(body, `mail_outbound_deliveries_total{result="deferred"}`) || !strings.Contains(body, "mail_outbound_queue_oldest_seconds") {
		t.Errorf("queue metrics missing:\n%s", grepLines(body, "mail_outbound"))
	}

	refusing.Stop()
	accepting := mtatest.StartSink(t, port)
	mustCLI(t, "", "queue", "release", "--data", dir, id)
	waitFor(t, "the released message to finish", func() bool { return finished(queueEntries(t, n)) })
	if got := accepting.Messages(t); len(got) != 1 {
		t.Fatalf("remote got %d copies, want 1", len(got))
	}
	out = mustCLI(t, "", "queue", "show", "--data", dir, id)
	if !strings.Contains(out, "finished") || !strings.Contains(out, string(schema.RecipientDelivered)) {
		t.Errorf("queue show after delivery:\n%s", out)
	}
	failCLI(t, ExitError, "nothing left to deliver", "", "queue", "retry", "--data", dir, id)
	mustCLI(t, "", "queue", "delete", "--data", dir, id)
	failCLI(t, ExitError, "no queued message", "", "queue", "show", "--data", dir, id)
	failCLI(t, ExitError, "bad queue id", "", "queue", "show", "--data", dir, "nonsense")
	failCLI(t, ExitUsage, "queue needs", "", "queue", "flush", "--data", dir)
}
