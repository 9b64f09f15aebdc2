package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net/smtp"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// smtpCode returns the reply code carried by an SMTP client error of
// either library, or 0.
func smtpCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// TestMailFlow sends mail over every SMTP entry point (MX with STARTTLS,
// submission with STARTTLS and AUTH PLAIN or LOGIN, implicit-TLS
// submission), checks what must be refused, then reads the mail over
// IMAP (STARTTLS and implicit TLS) and POP3 (STLS and implicit TLS), and
// shows that both protocols see the same INBOX.
func TestMailFlow(t *testing.T) {
	t.Parallel()
	n := sharedNode(t)
	user, pass := n.newUser(t, "flow")
	const external = "sender@remote.example"

	// 1. MX with STARTTLS (net/smtp): no AUTH on MX, TLS 1.2 or newer.
	c, err := netSMTPDial(n, "smtp")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Error("MX does not offer STARTTLS")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("MX offers AUTH")
	}
	if err := c.StartTLS(n.clientTLS); err != nil {
		t.Fatalf("MX STARTTLS: %v", err)
	}
	if st, ok := c.TLSConnectionState(); !ok || st.Version < tls.VersionTLS12 {
		t.Errorf("MX TLS state %v %x", ok, st.Version)
	}
	if err := netSMTPTransaction(c, external, []string{user}, simpleMessage(external, user, "flow 1 mx", "over MX")); err != nil {
		t.Fatalf("MX delivery: %v", err)
	}
	// A remote recipient and an unknown local user are refused at RCPT.
	for _, rcpt := range []string{"someone@remote.example", "nobody@" + testDomain} {
		if err := c.Mail(external); err != nil {
			t.Fatal(err)
		}
		err := c.Rcpt(rcpt)
		if code := smtpCode(err); code != 550 {
			t.Errorf("MX RCPT %s: %v, want 550", rcpt, err)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Errorf("MX QUIT: %v", err)
	}

	// 2. Submission: AUTH is neither offered nor accepted before TLS.
	rc := dialRaw(t, n.addr("submission"), nil)
	if g := rc.smtpReply(); !strings.HasPrefix(g[0], "220 "+n.hostname) {
		t.Errorf("submission greeting %q, want 220 %s", g[0], n.hostname)
	}
	rc.send("EHLO client.e2e.test")
	ehlo := rc.smtpReply()
	if !slices.ContainsFunc(ehlo, func(l string) bool { return strings.Contains(l, "STARTTLS") }) {
		t.Errorf("submission EHLO without STARTTLS: %q", ehlo)
	}
	if slices.ContainsFunc(ehlo, func(l string) bool { return strings.Contains(l, "AUTH") }) {
		t.Errorf("submission offers AUTH before TLS: %q", ehlo)
	}
	rc.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
	if r := rc.smtpReply(); !strings.HasPrefix(r[len(r)-1], "5") {
		t.Errorf("AUTH PLAIN before TLS answered %q, want 5xx", r)
	}
	rc.send("MAIL FROM:<" + user + ">")
	if r := rc.smtpReply(); !strings.HasPrefix(r[0], "530") {
		t.Errorf("MAIL without AUTH answered %q, want 530", r)
	}

	// 3. Submission with STARTTLS and AUTH PLAIN (net/smtp). A wrong
	// password is refused (net/smtp then quits).
	c, err = netSMTPDial(n, "submission")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(n.clientTLS); err != nil {
		t.Fatalf("submission STARTTLS: %v", err)
	}
	if err := c.Auth(smtp.PlainAuth("", user, "wrong-password", n.hostname)); smtpCode(err) != 535 {
		t.Errorf("AUTH with a wrong password: %v, want 535", err)
	}
	c.Close()
	c, err = netSMTPDial(n, "submission")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(n.clientTLS); err != nil {
		t.Fatalf("submission STARTTLS: %v", err)
	}
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
		t.Errorf("submission AUTH after TLS: %v %q, want PLAIN and LOGIN", ok, mechs)
	}
	if err := c.Auth(smtp.PlainAuth("", user, pass, n.hostname)); err != nil {
		t.Fatalf("submission AUTH PLAIN: %v", err)
	}
	if err := netSMTPTransaction(c, user, []string{user}, simpleMessage(user, user, "flow 2 submission plain", "over 587")); err != nil {
		t.Fatalf("submission delivery: %v", err)
	}
	// A remote recipient is accepted into the outbound queue (delivery
	// itself is tested against a real Postfix in node and
	// protocols/outbound); a foreign sender address is refused.
	if err := netSMTPTransaction(c, user, []string{"friend@remote.example"}, simpleMessage(user, "friend@remote.example", "flow 2 to a remote", "queued")); err != nil {
		t.Errorf("submission to a remote recipient: %v, want it queued", err)
	}
	if out, err := n.cli("", "queue", "list", "--json"); err != nil || !strings.Contains(out, "friend@remote.example") {
		t.Errorf("the message to a remote recipient is not in the queue: %v\n%s", err, out)
	}
	if err := c.Mail("someone-else@" + testDomain); smtpCode(err) != 553 {
		t.Errorf("submission with another sender: %v, want 553", err)
	}
	if err := c.Quit(); err != nil {
		t.Errorf("submission QUIT: %v", err)
	}

	// 4. Submission with STARTTLS and AUTH LOGIN (go-smtp).
	gc, err := gosmtp.DialStartTLS(n.addr("submission"), n.clientTLS)
	if err != nil {
		t.Fatalf("go-smtp STARTTLS: %v", err)
	}
	if err := gc.Auth(sasl.NewLoginClient(user, pass)); err != nil {
		t.Fatalf("submission AUTH LOGIN: %v", err)
	}
	if err := gc.SendMail(user, []string{user}, bytes.NewReader(simpleMessage(user, user, "flow 3 submission login", "AUTH LOGIN"))); err != nil {
		t.Fatalf("submission (LOGIN) delivery: %v", err)
	}
	if err := gc.Quit(); err != nil {
		t.Errorf("QUIT: %v", err)
	}

	// 5. Implicit-TLS submission (go-smtp DialTLS) with AUTH PLAIN.
	gc, err = gosmtp.DialTLS(n.addr("submissions"), n.clientTLS)
	if err != nil {
		t.Fatalf("go-smtp implicit TLS: %v", err)
	}
	if st, ok := gc.TLSConnectionState(); !ok || st.Version < tls.VersionTLS12 {
		t.Errorf("submissions TLS state %v %x", ok, st.Version)
	}
	if err := gc.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatalf("submissions AUTH PLAIN: %v", err)
	}
	if err := gc.SendMail(user, []string{user}, bytes.NewReader(simpleMessage(user, user, "flow 4 submissions", "implicit TLS"))); err != nil {
		t.Fatalf("submissions delivery: %v", err)
	}
	if err := gc.Quit(); err != nil {
		t.Errorf("QUIT: %v", err)
	}

	want := []string{"flow 1 mx", "flow 2 submission plain", "flow 3 submission login", "flow 4 submissions"}

	// 6. IMAP with STARTTLS and LOGIN, and IMAPS with AUTHENTICATE PLAIN,
	// see the four messages; the Received header of the MX message
	// records the TLS version.
	ic := imapDialStartTLS(t, n, user, pass, nil)
	if sel := selectBox(t, ic, "INBOX", true); sel.NumMessages != 4 {
		t.Fatalf("IMAP INBOX has %d messages, want 4", sel.NumMessages)
	}
	if got := subjects(t, ic); !slices.Equal(got, want) {
		t.Errorf("IMAP (STARTTLS) subjects %q, want %q", got, want)
	}
	received := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Received"}, Peek: true}
	msgs, err := ic.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{received}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch Received: %v", err)
	}
	if r := string(msgs[0].FindBodySection(received)); !strings.Contains(r, "version=TLS1.") || !strings.Contains(r, n.hostname) {
		t.Errorf("Received header %q does not record TLS and the node's hostname", r)
	}
	if err := ic.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
	ic = imapDialTLS(t, n, user, pass, nil)
	selectBox(t, ic, "INBOX", false)
	if got := subjects(t, ic); !slices.Equal(got, want) {
		t.Errorf("IMAPS subjects %q, want %q", got, want)
	}

	// 7. POP3 with STLS (USER/PASS) and POP3S (AUTH PLAIN) see the same
	// four messages.
	s := pop3Run(t, n, "stls", step("capa"), step("stls"), step("user", user), step("pass", pass), step("stat"), step("uidl"), step("retr", 4), step("quit")).mustOK(t)
	if _, ok := s.Results[0].Capa["STLS"]; !ok {
		t.Errorf("POP3 CAPA before TLS lacks STLS: %v", s.Results[0].Capa)
	}
	if st := s.Results[4]; st.Count != 4 {
		t.Fatalf("POP3 STAT %d messages, want 4", st.Count)
	}
	uidls := s.Results[5].Lines
	if !slices.Contains(s.Results[6].Lines, "Subject: flow 4 submissions") {
		t.Errorf("POP3 RETR 4 is not the last message: %q", s.Results[6].Lines)
	}
	s = pop3Run(t, n, "implicit", step("auth_plain", user, pass), step("stat"), step("uidl"), step("quit")).mustOK(t)
	if s.Results[1].Count != 4 || !slices.Equal(s.Results[2].Lines, uidls) {
		t.Errorf("POP3S sees %d messages %q, POP3 saw 4 %q", s.Results[1].Count, s.Results[2].Lines, uidls)
	}

	// 8. A POP3 DELE committed at QUIT is visible to IMAP.
	pop3Run(t, n, "implicit", step("user", user), step("pass", pass), step("dele", 1), step("quit")).mustOK(t)
	ic2 := imapDialTLS(t, n, user, pass, nil)
	selectBox(t, ic2, "INBOX", false)
	if got := subjects(t, ic2); !slices.Equal(got, want[1:]) {
		t.Errorf("IMAP after POP3 DELE 1: %q, want %q", got, want[1:])
	}

	// 9. An IMAP expunge is visible to a new POP3 session.
	if err := ic2.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatalf("STORE \\Deleted: %v", err)
	}
	if _, err := ic2.Expunge().Collect(); err != nil {
		t.Fatalf("EXPUNGE: %v", err)
	}
	s = pop3Run(t, n, "implicit", step("user", user), step("pass", pass), step("stat"), step("uidl"), step("retr", 1), step("quit")).mustOK(t)
	if s.Results[2].Count != 2 {
		t.Errorf("POP3 after IMAP EXPUNGE: %d messages, want 2", s.Results[2].Count)
	}
	if got := uidlIDs(s.Results[3].Lines); !slices.Equal(got, uidlIDs(uidls)[2:]) {
		t.Errorf("POP3 UIDLs after IMAP EXPUNGE %q, want %q", got, uidlIDs(uidls)[2:])
	}
	if !slices.Contains(s.Results[4].Lines, "Subject: flow 3 submission login") {
		t.Errorf("POP3 RETR 1 after the expunge: %q", s.Results[4].Lines)
	}
}

// uidlIDs returns the unique-ids of "n uid" UIDL lines.
func uidlIDs(lines []string) []string {
	var ids []string
	for _, l := range lines {
		if _, id, ok := strings.Cut(l, " "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}
