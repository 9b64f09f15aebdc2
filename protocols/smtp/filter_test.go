package smtp

import (
	"context"
	"net"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols/filter"
	"github.com/mailcluster/mailcluster/protocols/filter/filtertest"
)

// mailboxMessages returns the bodies of the messages in a mailbox of user.
func (f *fixture) mailboxMessages(user, password, name string) []string {
	f.t.Helper()
	ctx := context.Background()
	acct := f.env.Login(f.t, user, password)
	mb, err := acct.Mailbox(ctx, name)
	if err != nil {
		return nil
	}
	snap, err := acct.Snapshot(ctx, mb.ID)
	if err != nil {
		f.t.Fatalf("snapshot %s of %s: %v", name, user, err)
	}
	var out []string
	for _, m := range snap.Messages {
		b, err := acct.Body(ctx, m.Blob)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// send runs one MX transaction and returns the DATA reply's error.
func sendMX(t *testing.T, addr, from, to, msg string) error {
	t.Helper()
	c := dialMX(t, addr)
	if err := c.Mail(from, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	return sendData(c, msg)
}

// TestContentFilters: with the real clamd and rspamd in front of the
// store, a message carrying EICAR gets 554 and is not stored, a GTUBE
// message lands in Junk with X-Spam header fields (under a reject score
// of ours above it) or gets 550 (under rspamd's own advice), and a plain
// message lands in INBOX with its score recorded.
func TestContentFilters(t *testing.T) {
	clamd, rspamd := filtertest.Clamd(t), filtertest.Rspamd(t)
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.Filter = &filter.Chain{Scanners: []filter.Scanner{
		&filter.Clamd{Address: clamd},
		&filter.Rspamd{URL: rspamd, JunkScore: 12, RejectScore: 50},
	}}
	addr, _ := f.start(cfg, false)

	virus := testMessage("x@remote.example", bob, "virus") + filtertest.EICAR + "\r\n"
	wantCode(t, "EICAR", sendMX(t, addr, "x@remote.example", bob, virus), 554, gosmtp.EnhancedCode{5, 7, 1})
	if err := sendMX(t, addr, "x@remote.example", bob, testMessage("x@remote.example", bob, "spam")+filtertest.GTUBE+"\r\n"); err != nil {
		t.Fatalf("GTUBE under a reject score of 50: %v", err)
	}
	if err := sendMX(t, addr, "x@remote.example", bob, testMessage("x@remote.example", bob, "plain")); err != nil {
		t.Fatalf("plain message: %v", err)
	}
	inbox := f.inbox(bob, bobPW)
	if len(inbox) != 1 || !strings.Contains(inbox[0], "Body plain") || !strings.Contains(headerSection(inbox[0]), "X-Spam-Status: No, score=") {
		t.Fatalf("INBOX: %q", inbox)
	}
	junk := f.mailboxMessages(bob, bobPW, "Junk")
	if len(junk) != 1 || !strings.Contains(headerSection(junk[0]), "X-Spam: Yes\r\n") || strings.Contains(junk[0], "EICAR") {
		t.Fatalf("Junk: %q", junk)
	}

	// Under rspamd's own advice GTUBE is refused.
	strict := f.config(ModeMX)
	strict.Filter = &filter.Chain{Scanners: []filter.Scanner{&filter.Rspamd{URL: rspamd}}}
	strictAddr, _ := f.start(strict, false)
	wantCode(t, "GTUBE", sendMX(t, strictAddr, "x@remote.example", carol, testMessage("x@remote.example", carol, "gtube")+filtertest.GTUBE+"\r\n"),
		550, gosmtp.EnhancedCode{5, 7, 1})
	if got := f.inbox(carol, carolPW); len(got) != 0 {
		t.Errorf("refused spam stored: %d messages", len(got))
	}
}

// TestContentFilterDown: a scanner that cannot be reached lets mail in
// unscanned by default, and defers it with 451 when so configured.
func TestContentFilterDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "tcp://" + ln.Addr().String()
	ln.Close()
	f := newFixture(t)
	var failures int
	open := f.config(ModeMX)
	open.Filter = &filter.Chain{Scanners: []filter.Scanner{&filter.Clamd{Address: down}},
		OnResult: func(_ string, _ filter.Verdict, err error) {
			if err != nil {
				failures++
			}
		}}
	openAddr, _ := f.start(open, false)
	if err := sendMX(t, openAddr, "x@remote.example", bob, testMessage("x@remote.example", bob, "open")); err != nil {
		t.Fatalf("scanner down, fail open: %v", err)
	}
	if len(f.inbox(bob, bobPW)) != 1 || failures != 1 {
		t.Fatalf("fail open: inbox %d, failures reported %d", len(f.inbox(bob, bobPW)), failures)
	}
	closed := f.config(ModeMX)
	closed.Filter = &filter.Chain{Scanners: []filter.Scanner{&filter.Clamd{Address: down}}, DeferOnFailure: true}
	closedAddr, _ := f.start(closed, false)
	wantCode(t, "scanner down, defer", sendMX(t, closedAddr, "x@remote.example", carol, testMessage("x@remote.example", carol, "closed")),
		451, gosmtp.EnhancedCode{4, 7, 1})
	if got := f.inbox(carol, carolPW); len(got) != 0 {
		t.Errorf("deferred message stored")
	}
}
