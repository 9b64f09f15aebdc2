package node

import (
	"context"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// sentMessages returns alice's messages in her \Sent mailbox, and
// whether each is \Seen.
func sentMessages(t *testing.T, n *Node) (msgs []string, seen []bool) {
	t.Helper()
	ctx := context.Background()
	acct, err := n.store.AccountOf(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer acct.Close()
	boxes, err := acct.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		if b.SpecialUse != schema.SpecialSent {
			continue
		}
		snap, err := acct.Snapshot(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range snap.Messages {
			body, err := acct.Body(ctx, m.Blob)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, string(body))
			seen = append(seen, m.HasFlag(schema.FlagSeen))
		}
	}
	return msgs, seen
}

// TestSentCopy: off by default, a domain's Sent copy setting (set with
// `mailnode domain sent-copy`) makes submission store what alice sends,
// to remote and local recipients alike, once, \Seen, in her Sent
// mailbox before 250; off again, nothing more is stored.
func TestSentCopy(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := outboundNode(t, port)
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "sent0"); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := sentMessages(t, n); len(msgs) != 0 {
		t.Fatalf("Sent has %d messages with the setting off, want 0", len(msgs))
	}

	out := mustCLI(t, "", "domain", "sent-copy", "--data", cfg.DataDir, "example.test", "on")
	if !strings.Contains(out, "Sent copies on for example.test") {
		t.Errorf("sent-copy on printed %q", out)
	}
	failCLI(t, ExitUsage, "takes DOMAIN on|off", "", "domain", "sent-copy", "--data", cfg.DataDir, "example.test", "maybe")
	failCLI(t, ExitError, "no such domain", "", "domain", "sent-copy", "--data", cfg.DataDir, "unknown.test", "on")

	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test", "alice@example.test"}, "sent1"); err != nil {
		t.Fatal(err)
	}
	msgs, seen := sentMessages(t, n)
	if len(msgs) != 1 || !strings.Contains(msgs[0], "Subject: sent1") || !strings.Contains(msgs[0], "hello from the cluster") || !seen[0] {
		t.Fatalf("Sent after sending with the setting on: %d messages (seen %v), want sent1 once, seen", len(msgs), seen)
	}
	if strings.Contains(msgs[0], "Return-Path:") {
		t.Errorf("Sent copy carries a Return-Path:\n%s", msgs[0])
	}
	waitFor(t, "both messages at the remote MTA", func() bool { return len(sink.Messages(t)) >= 2 })

	mustCLI(t, "", "domain", "sent-copy", "--data", cfg.DataDir, "example.test", "off")
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "sent2"); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := sentMessages(t, n); len(msgs) != 1 {
		t.Errorf("Sent has %d messages after switching off, want 1", len(msgs))
	}
	doms, err := n.Directory().Domains(context.Background())
	if err != nil || len(doms) != 1 || doms[0].SentCopy {
		t.Errorf("Domains after off = %+v, %v; want sent_copy false", doms, err)
	}
}
