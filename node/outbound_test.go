package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// outboundZones are the test zones: remote.test's MX is the loopback
// smtp-sink, noplace.test publishes a null MX (RFC 7505).
func outboundZones() map[string]string {
	return map[string]string{
		"remote.test":  dnstest.ZoneFile("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.1"),
		"noplace.test": dnstest.ZoneFile("noplace.test", "@ IN MX 0 .", "@ IN A 127.0.0.1"),
	}
}

// outboundNode starts a node whose resolver is a real NSD and whose
// outbound port is port, with the user alice@example.test.
func outboundNode(t *testing.T, port int) (*Node, Config) {
	t.Helper()
	return outboundNodeWith(t, port, outboundZones(), nil)
}

// outboundNodeWith is outboundNode with the NSD serving zones, and with
// tune, if set, changing the configuration before the node starts.
func outboundNodeWith(t *testing.T, port int, zones map[string]string, tune func(*Config)) (*Node, Config) {
	t.Helper()
	dns := dnstest.StartNSD(t, zones)
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}
	cfg.Outbound = OutboundConfig{Port: port, RetryBase: 300 * time.Millisecond, Poll: 200 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "alice@example.test", "alice-password"); err != nil {
		t.Fatal(err)
	}
	return n, cfg
}

// submit sends a message through the node's submission port as alice.
func submit(t *testing.T, n *Node, cfg Config, from, headerFrom string, to []string, subject string) error {
	t.Helper()
	c, err := gosmtp.DialStartTLS(n.Addr(ListenSubmission).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "alice-password")); err != nil {
		t.Fatal(err)
	}
	msg := "From: <" + headerFrom + ">\r\nTo: <" + to[0] + ">\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject + "@example.test>\r\n\r\nhello from the cluster\r\n"
	return c.SendMail(from, to, strings.NewReader(msg))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// queueEntries returns the cluster's queue.
func queueEntries(t *testing.T, n *Node) []schema.OutboundEntry {
	t.Helper()
	es, err := n.store.OutboundEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// inbox returns the messages of alice's INBOX.
func inbox(t *testing.T, n *Node) []string {
	t.Helper()
	return mailboxMessages(t, n, "INBOX")
}

// mailboxMessages returns the messages of alice@example.test's mailbox
// name.
func mailboxMessages(t *testing.T, n *Node, name string) []string {
	t.Helper()
	ctx := context.Background()
	acct, err := n.store.AccountOf(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer acct.Close()
	box, err := acct.Mailbox(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acct.Snapshot(ctx, box.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range snap.Messages {
		b, err := acct.Body(ctx, m.Blob)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func finished(es []schema.OutboundEntry) bool {
	return len(es) == 1 && !es[0].Finished.IsZero()
}

// TestOutboundDeliversToRemoteMTA: alice sends through submission to a
// remote address; the message reaches the remote MTA (Postfix's
// smtp-sink, found through a real NSD's MX record) once, with her
// envelope; the queue entry ends delivered. Senders she does not own
// are refused with 553 5.7.1, her alias is accepted.
func TestOutboundDeliversToRemoteMTA(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := outboundNode(t, port)
	ctx := context.Background()
	if _, err := n.Directory().AddAlias(ctx, "sales@example.test", []string{"alice@example.test"}); err != nil {
		t.Fatal(err)
	}
	var se *gosmtp.SMTPError
	if err := submit(t, n, cfg, "mallory@example.test", "alice@example.test", []string{"bob@remote.test"}, "spoof1"); !errors.As(err, &se) || se.Code != 553 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("foreign MAIL FROM: %v, want 553 5.7.1", err)
	}
	if err := submit(t, n, cfg, "alice@example.test", "ceo@remote.test", []string{"bob@remote.test"}, "spoof2"); !errors.As(err, &se) || se.Code != 553 {
		t.Fatalf("foreign From: %v, want 553", err)
	}
	if err := submit(t, n, cfg, "sales+q3@example.test", "sales@example.test", []string{"bob@remote.test", "carol@remote.test"}, "hello1"); err != nil {
		t.Fatalf("send from an alias's plus-address: %v", err)
	}
	waitFor(t, "the message at the remote MTA", func() bool { return len(sink.Messages(t)) >= 1 })
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	got := sink.Messages(t)
	if len(got) != 1 {
		t.Fatalf("remote got %d transactions, want 1", len(got))
	}
	for _, want := range []string{"X-Mail-Args: <sales+q3@example.test>", "X-Rcpt-Args: <bob@remote.test>", "X-Rcpt-Args: <carol@remote.test>", "Subject: hello1", "hello from the cluster"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("remote copy lacks %q:\n%s", want, got[0])
		}
	}
	e := queueEntries(t, n)[0]
	for _, r := range e.State.Recipients {
		if r.Status != schema.RecipientDelivered || r.Remote != "mx.remote.test" {
			t.Errorf("recipient %+v, want delivered by mx.remote.test", r)
		}
	}
	if msgs := inbox(t, n); len(msgs) != 0 {
		t.Errorf("sender's INBOX has %d messages, want no report", len(msgs))
	}
}

// TestOutboundRetriesTemporaryFailure: a remote that answers 4xx to
// RCPT, then (restarted) accepts, gets the message exactly once.
func TestOutboundRetriesTemporaryFailure(t *testing.T) {
	port := mtatest.FreePort(t)
	refusing := mtatest.StartSink(t, port, "-r", "RCPT")
	n, cfg := outboundNode(t, port)
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "retry1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a deferred attempt", func() bool {
		es := queueEntries(t, n)
		return len(es) == 1 && es[0].State.Recipients[0].Code == 450 && es[0].State.Recipients[0].Status == schema.RecipientQueued
	})
	refusing.Stop()
	accepting := mtatest.StartSink(t, port)
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	if got := accepting.Messages(t); len(got) != 1 {
		t.Fatalf("remote got %d copies, want 1", len(got))
	}
	if got := refusing.Messages(t); len(got) != 0 {
		t.Fatalf("refusing remote stored %d copies", len(got))
	}
	if r := queueEntries(t, n)[0].State.Recipients[0]; r.Status != schema.RecipientDelivered {
		t.Fatalf("recipient %+v, want delivered", r)
	}
	if msgs := inbox(t, n); len(msgs) != 0 {
		t.Errorf("sender's INBOX has %d messages, want none", len(msgs))
	}
}

// TestOutboundBouncesPermanentFailure: a 5xx answer and a null MX each
// give the sender exactly one DSN (multipart/report) in INBOX.
func TestOutboundBouncesPermanentFailure(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port, "-f", "RCPT")
	n, cfg := outboundNode(t, port)
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test", "eve@noplace.test"}, "bounce1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	msgs := inbox(t, n)
	if len(msgs) != 1 {
		t.Fatalf("sender's INBOX has %d messages, want one DSN", len(msgs))
	}
	dsn := msgs[0]
	for _, want := range []string{"Content-Type: multipart/report; report-type=delivery-status", "Content-Type: message/delivery-status",
		"Final-Recipient: rfc822; bob@remote.test", "Final-Recipient: rfc822; eve@noplace.test", "Action: failed",
		"Status: 5.3.0", "Status: 5.1.10", "Remote-MTA: dns; mx.remote.test", "Subject: bounce1", "Content-Type: text/rfc822-headers"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "hello from the cluster") {
		t.Errorf("DSN quotes the body:\n%s", dsn)
	}
	if got := sink.Messages(t); len(got) != 0 {
		t.Errorf("refusing remote stored %d copies", len(got))
	}
}

// TestOutboundSurvivesRestart: a message queued while the remote is
// down is delivered after the node restarts.
func TestOutboundSurvivesRestart(t *testing.T) {
	port := mtatest.FreePort(t)
	n, cfg := outboundNode(t, port)
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "restart1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed attempt", func() bool {
		es := queueEntries(t, n)
		return len(es) == 1 && es[0].State.Attempts >= 1 && es[0].State.Recipients[0].Reply != ""
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	sink := mtatest.StartSink(t, port)
	n2 := startNode(t, cfg)
	waitFor(t, "the message at the remote MTA", func() bool { return len(sink.Messages(t)) == 1 })
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n2)) })
	if got := sink.Messages(t); len(got) != 1 {
		t.Fatalf("remote got %d copies, want 1", len(got))
	}
}

// TestOutboundToPostfix: a real Postfix (its own instance on loopback)
// receives alice's message over STARTTLS, and its 550 for an unknown
// recipient comes back to alice as one DSN.
func TestOutboundToPostfix(t *testing.T) {
	port := mtatest.FreePort(t)
	pf := mtatest.StartPostfix(t, port)
	n, cfg := outboundNode(t, port)
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test", "unknown@remote.test"}, "postfix1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	waitFor(t, "the message in Postfix's Maildir", func() bool { return len(pf.Messages(t)) >= 1 })
	got := pf.Messages(t)
	if len(got) != 1 {
		t.Fatalf("Postfix delivered %d messages, want 1", len(got))
	}
	for _, want := range []string{"Delivered-To: bob@remote.test", "with ESMTPS", "(using TLSv1.3", "Subject: postfix1", "Return-Path: <alice@example.test>",
		"by localhost (mailcluster) with ESMTPSA"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("Postfix's copy lacks %q:\n%s", want, got[0])
		}
	}
	if c := strings.Count(got[0], "Return-Path:"); c != 1 {
		t.Errorf("Postfix's copy has %d Return-Path fields, want only Postfix's own:\n%s", c, got[0])
	}
	msgs := inbox(t, n)
	if len(msgs) != 1 {
		t.Fatalf("sender's INBOX has %d messages, want one DSN", len(msgs))
	}
	for _, want := range []string{"Final-Recipient: rfc822; unknown@remote.test", "Status: 5.1.1", "Remote-MTA: dns; mx.remote.test", "No such user"} {
		if !strings.Contains(msgs[0], want) {
			t.Errorf("DSN lacks %q:\n%s", want, msgs[0])
		}
	}
	if strings.Contains(msgs[0], "Final-Recipient: rfc822; bob@remote.test") {
		t.Errorf("DSN reports the delivered recipient:\n%s", msgs[0])
	}
}

// TestOutboundDelayNoticeAndExpiry: a message the remote keeps
// deferring gives the sender one delay notice, then at the expiry one
// failure report, and no more.
func TestOutboundDelayNoticeAndExpiry(t *testing.T) {
	port := mtatest.FreePort(t)
	mtatest.StartSink(t, port, "-r", "RCPT")
	dns := dnstest.StartNSD(t, outboundZones())
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}
	cfg.Outbound = OutboundConfig{Port: port, RetryBase: 200 * time.Millisecond, Poll: 200 * time.Millisecond,
		DelayNotice: time.Second, Expire: 3 * time.Second}
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "alice@example.test", "alice-password"); err != nil {
		t.Fatal(err)
	}
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "late1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	e := queueEntries(t, n)[0]
	if r := e.State.Recipients[0]; r.Status != schema.RecipientExpired || !r.Reported || !e.State.DelayNotified {
		t.Fatalf("entry %+v, want expired, reported, delay notified", e.State)
	}
	msgs := inbox(t, n)
	if len(msgs) != 2 {
		t.Fatalf("sender's INBOX has %d messages, want a delay notice and a failure report", len(msgs))
	}
	if !strings.Contains(msgs[0], "Action: delayed") || !strings.Contains(msgs[0], "Will-Retry-Until:") {
		t.Errorf("first report is no delay notice:\n%s", msgs[0])
	}
	if !strings.Contains(msgs[1], "Action: failed") || !strings.Contains(msgs[1], "Status: 5.4.7") || !strings.Contains(msgs[1], "Message expired") {
		t.Errorf("second report is no expiry report:\n%s", msgs[1])
	}
}
