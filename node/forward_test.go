package node

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
)

// sendMX sends msg through the node's MX port.
func sendMX(t *testing.T, n *Node, cfg Config, from string, to []string, msg string) error {
	t.Helper()
	c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.SendMail(from, to, strings.NewReader(msg))
}

var srsMailArgs = regexp.MustCompile(`X-Mail-Args: <(SRS0=[^>]+@example\.test)>`)

// TestForwardWithSRS: mail from the MX port to an alias with a local and
// an external target reaches alice's INBOX and the remote MTA (Postfix's
// smtp-sink behind a real NSD), the latter with the original headers and
// MAIL FROM rewritten to SRS0=...@example.test; a bounce to that address
// goes back out to the original sender with the null sender; a forged
// SRS address is refused 550, and a message that has looped is refused
// 554 5.4.6.
func TestForwardWithSRS(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := outboundNode(t, port)
	ctx := context.Background()
	if _, err := n.Directory().AddAlias(ctx, "fwd@example.test", []string{"alice@example.test", "bob@remote.test"}); err != nil {
		t.Fatal(err)
	}
	msg := "From: Carol <carol@remote.test>\r\nTo: <fwd@example.test>\r\nSubject: fwd1\r\nMessage-ID: <fwd1@remote.test>\r\n\r\nplease pass this on\r\n"
	if err := sendMX(t, n, cfg, "carol@remote.test", []string{"fwd@example.test"}, msg); err != nil {
		t.Fatalf("send to the alias: %v", err)
	}
	if got := inbox(t, n); len(got) != 1 || !strings.Contains(got[0], "Subject: fwd1") {
		t.Fatalf("alice's INBOX: %d messages, want the forwarded one", len(got))
	}
	waitFor(t, "the forwarded copy at the remote MTA", func() bool { return len(sink.Messages(t)) >= 1 })
	got := sink.Messages(t)[0]
	for _, want := range []string{"X-Rcpt-Args: <bob@remote.test>", "From: Carol <carol@remote.test>", "Subject: fwd1", "Message-ID: <fwd1@remote.test>", "please pass this on", "Received: from "} {
		if !strings.Contains(got, want) {
			t.Errorf("forwarded copy lacks %q:\n%s", want, got)
		}
	}
	m := srsMailArgs.FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("forwarded copy's MAIL FROM is not SRS0=...@example.test:\n%s", got)
	}
	srsAddr := m[1]
	if !strings.Contains(srsAddr, "=remote.test=carol@") {
		t.Errorf("SRS address %q does not encode carol@remote.test", srsAddr)
	}
	waitFor(t, "the forwarding queue entry to finish", func() bool { return finished(queueEntries(t, n)) })

	// The remote bounces to the SRS address: it goes back to carol.
	bounce := "From: MAILER-DAEMON@remote.test\r\nTo: <" + srsAddr + ">\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nyour message could not be delivered\r\n"
	if err := sendMX(t, n, cfg, "", []string{srsAddr}, bounce); err != nil {
		t.Fatalf("bounce to the SRS address: %v", err)
	}
	waitFor(t, "the relayed bounce at the remote MTA", func() bool { return len(sink.Messages(t)) >= 2 })
	relayed := ""
	for _, m := range sink.Messages(t) {
		if strings.Contains(m, "Subject: Undelivered Mail") {
			relayed = m
		}
	}
	for _, want := range []string{"X-Mail-Args: <>", "X-Rcpt-Args: <carol@remote.test>", "your message could not be delivered"} {
		if !strings.Contains(relayed, want) {
			t.Errorf("relayed bounce lacks %q:\n%s", want, relayed)
		}
	}
	if got := inbox(t, n); len(got) != 1 {
		t.Errorf("alice's INBOX has %d messages after the bounce, want 1", len(got))
	}

	// A forged SRS address is refused, even where a catch-all would
	// take any other unknown local part.
	if err := n.Directory().SetCatchAll(ctx, "example.test", "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	var se *gosmtp.SMTPError
	forged := strings.Replace(srsAddr, "=carol@", "=mallory@", 1)
	if err := sendMX(t, n, cfg, "", []string{forged}, bounce); !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("bounce to a forged SRS address: %v, want 550", err)
	}
	looped := strings.Repeat("Received: from a.test by b.test; Thu, 1 Jan 2025 00:00:00 +0000\r\n", 31) + msg
	if err := sendMX(t, n, cfg, "carol@remote.test", []string{"fwd@example.test"}, looped); !errors.As(err, &se) || se.Code != 554 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 4, 6}) {
		t.Errorf("looping message: %v, want 554 5.4.6", err)
	}
	if got := len(sink.Messages(t)); got != 2 {
		t.Errorf("remote MTA got %d transactions, want 2", got)
	}
}

// TestForwardFailureReportsToOriginalSender: a forwarding that fails
// for good (a null MX) gives the original sender, not a mailbox of
// ours, one delivery status notification, sent with the null sender.
func TestForwardFailureReportsToOriginalSender(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := outboundNode(t, port)
	ctx := context.Background()
	if _, err := n.Directory().AddAlias(ctx, "gone@example.test", []string{"eve@noplace.test"}); err != nil {
		t.Fatal(err)
	}
	msg := "From: <carol@remote.test>\r\nTo: <gone@example.test>\r\nSubject: fwd2\r\nMessage-ID: <fwd2@remote.test>\r\n\r\nto nowhere\r\n"
	if err := sendMX(t, n, cfg, "carol@remote.test", []string{"gone@example.test"}, msg); err != nil {
		t.Fatalf("send to the alias: %v", err)
	}
	waitFor(t, "the report at the remote MTA", func() bool { return len(sink.Messages(t)) >= 1 })
	got := sink.Messages(t)
	if len(got) != 1 {
		t.Fatalf("remote MTA got %d transactions, want the one report", len(got))
	}
	for _, want := range []string{"X-Mail-Args: <>", "X-Rcpt-Args: <carol@remote.test>", "multipart/report", "eve@noplace.test"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("report lacks %q:\n%s", want, got[0])
		}
	}
	if msgs := inbox(t, n); len(msgs) != 0 {
		t.Errorf("alice's INBOX has %d messages, want none", len(msgs))
	}
}

// TestForwardingConfig: [forwarding] srs_domain is read and checked.
func TestForwardingConfig(t *testing.T) {
	cfg, err := Parse("test.toml", []byte("[forwarding]\nsrs_domain = \"fwd.example.com\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Forwarding.SRSDomain != "fwd.example.com" {
		t.Fatalf("srs_domain %q", cfg.Forwarding.SRSDomain)
	}
	c := Default()
	c.DataDir = t.TempDir()
	c.Forwarding.SRSDomain = "not a domain!"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "forwarding.srs_domain") {
		t.Errorf("Validate() = %v, want an error about forwarding.srs_domain", err)
	}
}

// TestForwardSRSDomain: with [forwarding] srs_domain, forwarded mail
// leaves from SRS addresses in that domain, a retried transaction is
// queued once, and bounces to the SRS addresses are relayed.
func TestForwardSRSDomain(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dnstest.StartNSD(t, outboundZones())}, Timeout: 2 * time.Second}
	cfg.Outbound = OutboundConfig{Port: port, RetryBase: 300 * time.Millisecond, Poll: 200 * time.Millisecond}
	cfg.Forwarding.SRSDomain = "fwd.test"
	n := startNode(t, cfg)
	ctx := context.Background()
	for _, d := range []string{"example.test", "fwd.test"} {
		if err := n.Directory().AddDomain(ctx, d, directory.KeyModeUser, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Directory().AddAlias(ctx, "out@example.test", []string{"bob@remote.test"}); err != nil {
		t.Fatal(err)
	}
	msg := "From: <carol@remote.test>\r\nTo: <out@example.test>\r\nSubject: fwd3\r\nMessage-ID: <fwd3@remote.test>\r\n\r\nvia fwd.test\r\n"
	if err := sendMX(t, n, cfg, "carol@remote.test", []string{"out@example.test"}, msg); err != nil {
		t.Fatalf("send to the alias: %v", err)
	}
	waitFor(t, "the forwarded copy", func() bool { return len(sink.Messages(t)) >= 1 })
	m := regexp.MustCompile(`X-Mail-Args: <(SRS0=[^>]+@fwd\.test)>`).FindStringSubmatch(sink.Messages(t)[0])
	if m == nil {
		t.Fatalf("forwarded copy's MAIL FROM is not SRS0=...@fwd.test:\n%s", sink.Messages(t)[0])
	}
	// A sender's retry of the same message (same sender, Message-ID and
	// content: its 250 lost) finds the entry the first one made.
	if err := sendMX(t, n, cfg, "carol@remote.test", []string{"out@example.test"}, msg); err != nil {
		t.Fatalf("send again: %v", err)
	}
	if es := queueEntries(t, n); len(es) != 1 {
		t.Errorf("%d queue entries after a retried forwarding, want 1", len(es))
	}
	if err := sendMX(t, n, cfg, "", []string{m[1]}, "Subject: bounce3\r\n\r\nreturned\r\n"); err != nil {
		t.Fatalf("bounce to the SRS address: %v", err)
	}
	waitFor(t, "the relayed bounce", func() bool { return len(sink.Messages(t)) >= 2 })
	found := false
	for _, m := range sink.Messages(t) {
		found = found || (strings.Contains(m, "Subject: bounce3") && strings.Contains(m, "X-Rcpt-Args: <carol@remote.test>"))
	}
	if !found {
		t.Errorf("the bounce did not reach carol@remote.test")
	}
}
