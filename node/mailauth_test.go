package node

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
)

// TestNodeSenderChecks: a node whose resolver is a real NSD on loopback
// refuses mail from a domain publishing DMARC p=reject that fails SPF,
// and records spf=pass and dmarc=pass in the Authentication-Results of
// mail from a domain whose SPF lets 127.0.0.1 send.
func TestNodeSenderChecks(t *testing.T) {
	dns := dnstest.StartNSD(t, map[string]string{
		"sender.test": dnstest.ZoneFile("sender.test", `@ IN TXT "v=spf1 ip4:127.0.0.1 -all"`, `_dmarc IN TXT "v=DMARC1; p=reject"`),
		"spoof.test":  dnstest.ZoneFile("spoof.test", `@ IN TXT "v=spf1 -all"`, `_dmarc IN TXT "v=DMARC1; p=reject"`),
	})
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}
	cfg.Inbound.CheckSender = true
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "bob@example.test", "bob-password"); err != nil {
		t.Fatal(err)
	}
	send := func(from string) error {
		c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := "From: <" + from + ">\r\nTo: bob@example.test\r\nSubject: checks\r\n\r\nhello\r\n"
		return c.SendMail(from, []string{"bob@example.test"}, strings.NewReader(msg))
	}
	var se *gosmtp.SMTPError
	if err := send("ceo@spoof.test"); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("spoofed sender: %v, want 550", err)
	}
	if err := send("ann@sender.test"); err != nil {
		t.Fatalf("sender with SPF pass: %v", err)
	}
	acct, err := n.store.AccountOf(ctx, "bob@example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer acct.Close()
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acct.Snapshot(ctx, inbox.ID)
	if err != nil || len(snap.Messages) != 1 {
		t.Fatalf("INBOX: %d messages, %v; want the one that passed", len(snap.Messages), err)
	}
	h, err := acct.Header(ctx, snap.Messages[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(h)))
	var ar string
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Authentication-Results:") {
			ar = sc.Text()
		}
	}
	if !strings.Contains(ar, cfg.Hostname) || !strings.Contains(ar, "spf=pass") {
		t.Errorf("Authentication-Results %q; header:\n%s", ar, h)
	}
	if !strings.Contains(string(h), "dmarc=pass") {
		t.Errorf("no dmarc=pass in:\n%s", h)
	}
}
