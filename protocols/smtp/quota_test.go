package smtp

import (
	"context"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
)

// TestQuotaRefusesOnlyTheFullRecipient: a recipient whose mailbox is
// full is refused at RCPT with 552 5.2.2 and the others of the
// transaction get the message; a mailbox that a message does not fit,
// found only at the end of DATA, gets 552 5.2.2 there; space freed makes
// delivery work again.
func TestQuotaRefusesOnlyTheFullRecipient(t *testing.T) {
	f := newFixture(t)
	addr, _ := f.start(f.config(ModeMX), false)
	first := testMessage(remote, alice, "first")
	c := dialMX(t, addr)
	if err := c.SendMail(remote, []string{alice}, strings.NewReader(first)); err != nil {
		t.Fatalf("first message: %v", err)
	}
	// The first message (with its trace fields) fills alice's mailbox.
	q, err := f.env.Login(t, alice, alicePW).Quota(context.Background())
	if err != nil || q.Usage == 0 || q.Messages != 1 {
		t.Fatalf("usage %+v, %v", q, err)
	}
	used := q.Usage
	if err := f.env.Mem.SetQuota(alice, used); err != nil {
		t.Fatal(err)
	}

	// Now alice is full: refused at RCPT, bob still gets the message.
	if err := c.Mail(remote, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "RCPT alice", c.Rcpt(alice, nil), 552, gosmtp.EnhancedCode{5, 2, 2})
	if err := c.Rcpt(bob, nil); err != nil {
		t.Fatalf("RCPT bob: %v", err)
	}
	if err := sendData(c, testMessage(remote, bob, "second")); err != nil {
		t.Fatalf("DATA for bob: %v", err)
	}
	if n := len(f.inbox(alice, alicePW)); n != 1 {
		t.Fatalf("alice has %d messages, want 1", n)
	}
	if n := len(f.inbox(bob, bobPW)); n != 1 {
		t.Fatalf("bob has %d messages, want 1", n)
	}

	// With room for a small message only, RCPT passes (no SIZE given)
	// and the end of DATA refuses the large one.
	if err := f.env.Mem.SetQuota(alice, used+100); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(remote, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatalf("RCPT alice with room left: %v", err)
	}
	wantCode(t, "DATA over quota", sendData(c, sizedMessage(t, 4096, "large")), 552, gosmtp.EnhancedCode{5, 2, 2})
	// The same with a second recipient who has room: the copy for bob
	// is stored, alice's is not, and SMTP's one reply is temporary.
	if err := c.Mail(remote, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{alice, bob} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	wantCode(t, "DATA over quota for one of two", sendData(c, sizedMessage(t, 4096, "large two")), 452, gosmtp.EnhancedCode{4, 2, 2})
	if n := len(f.inbox(bob, bobPW)); n != 2 {
		t.Fatalf("bob has %d messages, want 2", n)
	}
	// A declared SIZE over what is left is refused at RCPT.
	if err := c.Mail(remote, &gosmtp.MailOptions{Size: 4096}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "RCPT with SIZE", c.Rcpt(alice, nil), 552, gosmtp.EnhancedCode{5, 2, 2})
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}

	// Freeing space (here: a larger quota) lets mail in again.
	if err := f.env.Mem.SetQuota(alice, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(remote, []string{alice}, strings.NewReader(testMessage(remote, alice, "third"))); err != nil {
		t.Fatalf("after the quota was lifted: %v", err)
	}
	if n := len(f.inbox(alice, alicePW)); n != 2 {
		t.Fatalf("alice has %d messages, want 2", n)
	}
}
