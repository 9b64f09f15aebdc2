package node

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/filter/filtertest"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
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

// sendMXWith sends msg through the node's MX port over STARTTLS with
// the MAIL parameters opts.
func sendMXWith(t *testing.T, n *Node, cfg Config, from string, opts *gosmtp.MailOptions, to []string, msg string) error {
	t.Helper()
	c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, opts); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

// forwardEntry returns the queue entry that forwards to rcpt.
func forwardEntry(t *testing.T, n *Node, rcpt string) (schema.OutboundEntry, bool) {
	t.Helper()
	for _, e := range queueEntries(t, n) {
		for _, r := range e.State.Recipients {
			if r.Address == rcpt {
				return e, true
			}
		}
	}
	return schema.OutboundEntry{}, false
}

// TestForwardKeepsREQUIRETLS: a message that arrives on the MX port
// with REQUIRETLS (RFC 8689) for an alias that forwards out is queued
// with the flag; the remote MX (smtp-sink) has no TLS, so nothing is
// sent to it and the original sender gets one report with 5.7.10
// (headers only, never the body).
func TestForwardKeepsREQUIRETLS(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := outboundNode(t, port)
	ctx := context.Background()
	if _, err := n.Directory().AddAlias(ctx, "sec@example.test", []string{"bob@remote.test"}); err != nil {
		t.Fatal(err)
	}
	msg := "From: <carol@remote.test>\r\nTo: <sec@example.test>\r\nSubject: fwdtls1\r\nMessage-ID: <fwdtls1@remote.test>\r\n\r\nconfidential body\r\n"
	if err := sendMXWith(t, n, cfg, "carol@remote.test", &gosmtp.MailOptions{RequireTLS: true}, []string{"sec@example.test"}, msg); err != nil {
		t.Fatalf("send with REQUIRETLS: %v", err)
	}
	e, ok := forwardEntry(t, n, "bob@remote.test")
	if !ok || !e.State.RequireTLS {
		t.Fatalf("forwarding entry %+v (found %v), want one with REQUIRETLS", e.State, ok)
	}
	waitFor(t, "the forwarding to fail", func() bool {
		e, _ := forwardEntry(t, n, "bob@remote.test")
		return !e.Finished.IsZero()
	})
	e, _ = forwardEntry(t, n, "bob@remote.test")
	if r := e.State.Recipients[0]; r.Status != schema.RecipientFailed || r.Enhanced != "5.7.10" {
		t.Fatalf("recipient %+v, want failed 5.7.10", r)
	}
	waitFor(t, "the report at the remote MTA", func() bool { return len(sink.Messages(t)) >= 1 })
	got := sink.Messages(t)
	if len(got) != 1 {
		t.Fatalf("remote MTA got %d transactions, want only the report", len(got))
	}
	for _, want := range []string{"X-Mail-Args: <>", "X-Rcpt-Args: <carol@remote.test>", "5.7.10", "Subject: fwdtls1"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("report lacks %q:\n%s", want, got[0])
		}
	}
	if strings.Contains(got[0], "confidential body") {
		t.Errorf("report carries the body of a REQUIRETLS message:\n%s", got[0])
	}
}

// TestForwardEightBitAndSMTPUTF8: a forwarded 8-bit message to a remote
// without 8BITMIME (smtp-sink -8) is converted to 7-bit; a message that
// needs SMTPUTF8 (a UTF-8 header, sent with SMTPUTF8) is never
// downgraded: the forwarding fails with 5.6.7, reported to the sender.
func TestForwardEightBitAndSMTPUTF8(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port, "-8")
	n, cfg := outboundNode(t, port)
	ctx := context.Background()
	if _, err := n.Directory().AddAlias(ctx, "eight@example.test", []string{"bob@remote.test"}); err != nil {
		t.Fatal(err)
	}
	eight := "From: <carol@remote.test>\r\nTo: <eight@example.test>\r\nSubject: fwd8\r\nMessage-ID: <fwd8@remote.test>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
	if err := sendMXWith(t, n, cfg, "carol@remote.test", &gosmtp.MailOptions{Body: gosmtp.Body8BitMIME}, []string{"eight@example.test"}, eight); err != nil {
		t.Fatalf("send 8-bit: %v", err)
	}
	waitFor(t, "the converted copy at the remote MTA", func() bool { return len(sink.Messages(t)) >= 1 })
	got := sink.Messages(t)[0]
	if !strings.Contains(got, "Subject: fwd8") || !strings.Contains(got, "Gr=C3=BC=C3=9Fe") || strings.Contains(got, "Gr\xc3\xbc") {
		t.Fatalf("forwarded 8-bit copy not converted to 7-bit:\n%s", got)
	}

	utf := "From: <carol@remote.test>\r\nTo: <eight@example.test>\r\nSubject: Grüße fwdutf8\r\nMessage-ID: <fwdutf8@remote.test>\r\n\r\nhallo\r\n"
	if err := sendMXWith(t, n, cfg, "carol@remote.test", &gosmtp.MailOptions{UTF8: true, Body: gosmtp.Body8BitMIME}, []string{"eight@example.test"}, utf); err != nil {
		t.Fatalf("send SMTPUTF8: %v", err)
	}
	waitFor(t, "the SMTPUTF8 forwarding to fail", func() bool {
		for _, e := range queueEntries(t, n) {
			if e.State.UTF8 && !e.Finished.IsZero() {
				return true
			}
		}
		return false
	})
	for _, e := range queueEntries(t, n) {
		if e.State.UTF8 {
			if r := e.State.Recipients[0]; r.Status != schema.RecipientFailed || r.Enhanced != "5.6.7" {
				t.Errorf("SMTPUTF8 forwarding %+v, want failed 5.6.7", r)
			}
		}
	}
	waitFor(t, "the report to carol", func() bool { return len(sink.Messages(t)) >= 2 })
	for _, m := range sink.Messages(t) {
		if strings.Contains(m, "fwdutf8") && !strings.Contains(m, "X-Mail-Args: <>") {
			t.Errorf("the SMTPUTF8 message reached the remote MTA downgraded:\n%s", m)
		}
	}
}

// addJunkAliases adds the aliases the junk-withholding tests send to:
// only@ forwards outside only, both@ to alice and outside.
func addJunkAliases(t *testing.T, n *Node) {
	t.Helper()
	ctx := context.Background()
	if _, err := n.Directory().AddAlias(ctx, "only@example.test", []string{"bob@remote.test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Directory().AddAlias(ctx, "both@example.test", []string{"alice@example.test", "dan@remote.test"}); err != nil {
		t.Fatal(err)
	}
}

// TestForwardWithholdsJunk: mail that fails DMARC of a domain that
// publishes p=quarantine (Junk for a local user) is not forwarded out
// of the cluster: for an alias that only forwards it is refused at the
// end of DATA with 550 5.7.1; for an alias with a local target too the
// local copy goes to Junk and the forwarding is dropped and counted.
// Mail that passes is forwarded as usual.
func TestForwardWithholdsJunk(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	zones := outboundZones()
	zones["sender.test"] = dnstest.ZoneFile("sender.test", `@ IN TXT "v=spf1 ip4:127.0.0.1 -all"`, `_dmarc IN TXT "v=DMARC1; p=quarantine"`)
	zones["spoof.test"] = dnstest.ZoneFile("spoof.test", `@ IN TXT "v=spf1 -all"`, `_dmarc IN TXT "v=DMARC1; p=quarantine"`)
	n, cfg := outboundNodeWith(t, port, zones, func(cfg *Config) { cfg.Inbound.CheckSender = true })
	addJunkAliases(t, n)
	message := func(from, to, subject string) string {
		return "From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject + "@x.test>\r\n\r\nbuy now\r\n"
	}
	var se *gosmtp.SMTPError
	err := sendMX(t, n, cfg, "ceo@spoof.test", []string{"only@example.test"}, message("ceo@spoof.test", "only@example.test", "junk1"))
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("junk to a forward-only alias: %v, want 550 5.7.1", err)
	}
	if err := sendMX(t, n, cfg, "ceo@spoof.test", []string{"both@example.test"}, message("ceo@spoof.test", "both@example.test", "junk2")); err != nil {
		t.Fatalf("junk to an alias with a local target: %v", err)
	}
	if got := mailboxMessages(t, n, "Junk"); len(got) != 1 || !strings.Contains(got[0], "Subject: junk2") {
		t.Fatalf("alice's Junk has %d messages, want junk2", len(got))
	}
	if es := queueEntries(t, n); len(es) != 0 {
		t.Fatalf("%d queue entries after junk, want none", len(es))
	}
	if v := withheldCount(t, n, "dmarc-quarantine"); v != 2 {
		t.Errorf("mail_forward_withheld_total{reason=dmarc-quarantine} = %v, want 2", v)
	}

	// A sender that passes DMARC is forwarded.
	if err := sendMX(t, n, cfg, "ann@sender.test", []string{"only@example.test"}, message("ann@sender.test", "only@example.test", "good1")); err != nil {
		t.Fatalf("good mail to a forward-only alias: %v", err)
	}
	waitFor(t, "the forwarded copy", func() bool { return len(sink.Messages(t)) >= 1 })
	waitFor(t, "the forwarding queue entry to finish", func() bool { return finished(queueEntries(t, n)) })
	got := sink.Messages(t)
	if len(got) != 1 || !strings.Contains(got[0], "Subject: good1") {
		t.Fatalf("remote MTA got %d transactions, want only good1", len(got))
	}
}

// withheldCount reads mail_forward_withheld_total{reason}.
func withheldCount(t *testing.T, n *Node, reason string) float64 {
	t.Helper()
	var m dto.Metric
	if err := n.metrics.forwardsWithheld.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestForwardWithholdsSpam: with the real rspamd in front of the MX
// port, a GTUBE message (Junk under a reject score of ours above its
// score) is refused 550 5.7.1 for an alias that only forwards, and for
// an alias with a local target lands in that user's Junk without being
// forwarded.
func TestForwardWithholdsSpam(t *testing.T) {
	rspamd := filtertest.Rspamd(t)
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	n, cfg := outboundNodeWith(t, port, outboundZones(), func(cfg *Config) {
		cfg.Filters.Rspamd, cfg.Filters.JunkScore, cfg.Filters.RejectScore = rspamd, 12, 50
	})
	addJunkAliases(t, n)
	spam := func(to, subject string) string {
		return "From: <x@remote.test>\r\nTo: <" + to + ">\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject + "@remote.test>\r\n\r\n" + filtertest.GTUBE + "\r\n"
	}
	var se *gosmtp.SMTPError
	err := sendMX(t, n, cfg, "x@remote.test", []string{"only@example.test"}, spam("only@example.test", "spam1"))
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("spam to a forward-only alias: %v, want 550 5.7.1", err)
	}
	if err := sendMX(t, n, cfg, "x@remote.test", []string{"both@example.test"}, spam("both@example.test", "spam2")); err != nil {
		t.Fatalf("spam to an alias with a local target: %v", err)
	}
	if got := mailboxMessages(t, n, "Junk"); len(got) != 1 || !strings.Contains(got[0], "Subject: spam2") {
		t.Fatalf("alice's Junk has %d messages, want spam2", len(got))
	}
	if es := queueEntries(t, n); len(es) != 0 {
		t.Fatalf("%d queue entries after spam, want none", len(es))
	}
	if v := withheldCount(t, n, "spam"); v != 2 {
		t.Errorf("mail_forward_withheld_total{reason=spam} = %v, want 2", v)
	}
	if got := sink.Messages(t); len(got) != 0 {
		t.Errorf("remote MTA got %d transactions, want none", len(got))
	}
}
