package node

import (
	"context"
	"errors"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
)

// TestPostmaster: mail to postmaster@ of any served domain reaches the
// configured postmaster when the domain has no postmaster of its own
// (RFC 5321 section 4.5.1); a domain's own postmaster alias wins.
func TestPostmaster(t *testing.T) {
	cfg := testConfig(t)
	cfg.Postmaster = "admin@example.test"
	n := startNode(t, cfg)
	ctx := context.Background()
	for _, d := range []string{"example.test", "other.test", "own.test"} {
		if err := n.Directory().AddDomain(ctx, d, directory.KeyModeUser, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"admin@example.test", "boss@own.test"} {
		if err := n.Directory().AddUser(ctx, u, "password-123"); err != nil {
			t.Fatal(err)
		}
	}
	mustCLI(t, "", "alias", "add", "--data", cfg.DataDir, "postmaster@own.test", "boss@own.test")
	send := func(rcpt string) error {
		c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.SendMail("x@remote.example", []string{rcpt}, strings.NewReader("Subject: to "+rcpt+"\r\n\r\nhi\r\n"))
	}
	// "postmaster" without a domain: the primary domain is the
	// postmaster setting's (example.test), which has no postmaster of
	// its own.
	for _, rcpt := range []string{"postmaster@other.test", "PostMaster@example.test", "postmaster@own.test", "Postmaster"} {
		if err := send(rcpt); err != nil {
			t.Fatalf("RCPT %s: %v", rcpt, err)
		}
	}
	var se *gosmtp.SMTPError
	if err := send("nobody@other.test"); !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("unknown recipient: %v, want 550", err)
	}
	count := func(user string) uint32 {
		acct, err := n.store.AccountOf(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		defer acct.Close()
		info, err := acct.Mailbox(ctx, "INBOX")
		if err != nil {
			t.Fatal(err)
		}
		return info.Messages
	}
	if got := count("admin@example.test"); got != 3 {
		t.Errorf("the configured postmaster got %d messages, want 3", got)
	}
	if got := count("boss@own.test"); got != 1 {
		t.Errorf("own.test's postmaster alias got %d messages, want 1", got)
	}
}
