package mailimport

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// seeded is one message put on the source server.
type seeded struct {
	mailbox string
	subject string
	flags   []string
	date    time.Time
}

// seedDovecot fills the Dovecot user's mailboxes over IMAP and returns
// what it put there.
func seedDovecot(t *testing.T, d *dovecot, user string, perInbox int) []seeded {
	t.Helper()
	c, err := imapclient.DialStartTLS(d.addr, &imapclient.Options{TLSConfig: d.client})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, d.password).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, mb := range []string{"Work", "Work/Projects", "Old"} {
		if err := c.Create(mb, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	for _, mb := range []string{"Work/Projects"} {
		if err := c.Subscribe(mb).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	var out []seeded
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	add := func(mailbox string, i int, flags []string) {
		s := seeded{mailbox: mailbox, subject: fmt.Sprintf("%s message %d", mailbox, i), flags: flags, date: base.Add(time.Duration(i) * time.Hour)}
		msg := fmt.Sprintf("From: Ann <ann@example.net>\r\nTo: bob@example.org\r\nSubject: %s\r\nMessage-ID: <%s.%d@example.net>\r\nDate: %s\r\n\r\nbody %d\r\n%s\r\n",
			s.subject, strings.ReplaceAll(mailbox, "/", "-"), i, s.date.Format(time.RFC1123Z), i, strings.Repeat("line\r\n", i%7))
		var fl []imap.Flag
		for _, f := range flags {
			fl = append(fl, imap.Flag(f))
		}
		cmd := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: fl, Time: s.date})
		if _, err := cmd.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			t.Fatalf("APPEND to %s: %v", mailbox, err)
		}
		out = append(out, s)
	}
	for i := 0; i < perInbox; i++ {
		var flags []string
		if i%2 == 0 {
			flags = append(flags, `\Seen`)
		}
		if i%5 == 0 {
			flags = append(flags, `\Flagged`, "$Label1")
		}
		add("INBOX", i, flags)
	}
	for i := 0; i < 12; i++ {
		add("Work/Projects", i, []string{`\Answered`, "Project"})
	}
	add("Old", 0, []string{`\Seen`})
	add("Sent", 0, []string{`\Seen`})
	return out
}

// checkImported compares a target account with what was seeded.
func checkImported(t *testing.T, acct protocols.Account, want []seeded) {
	t.Helper()
	ctx := testCtx(t)
	byBox := map[string][]seeded{}
	for _, s := range want {
		byBox[s.mailbox] = append(byBox[s.mailbox], s)
	}
	for box, msgs := range byBox {
		info, err := acct.Mailbox(ctx, box)
		if err != nil {
			t.Fatalf("mailbox %s: %v", box, err)
		}
		snap, err := acct.Snapshot(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Messages) != len(msgs) {
			t.Fatalf("%s: %d messages, want %d", box, len(snap.Messages), len(msgs))
		}
		got := map[string]schema.MessageInfo{}
		for _, m := range snap.Messages {
			h, err := acct.Header(ctx, m.Blob)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(h), "\r\n") {
				if subj, ok := strings.CutPrefix(line, "Subject: "); ok {
					got[subj] = m
				}
			}
		}
		for _, s := range msgs {
			m, ok := got[s.subject]
			if !ok {
				t.Fatalf("%s: %q missing", box, s.subject)
			}
			if !m.InternalDate.Equal(s.date) {
				t.Errorf("%s: internal date %v, want %v", s.subject, m.InternalDate, s.date)
			}
			wantFlags := slices.Clone(s.flags)
			gotFlags := slices.Clone(m.Flags)
			for i := range wantFlags {
				wantFlags[i] = strings.ToLower(wantFlags[i])
			}
			for i := range gotFlags {
				gotFlags[i] = strings.ToLower(gotFlags[i])
			}
			slices.Sort(wantFlags)
			slices.Sort(gotFlags)
			if !slices.Equal(gotFlags, wantFlags) {
				t.Errorf("%s: flags %v, want %v", s.subject, m.Flags, s.flags)
			}
		}
	}
}

// TestImportFromDovecot: every mailbox of a real Dovecot account comes
// over IMAP with flags (keywords too), internal dates and subscriptions;
// a second run copies nothing; the same account's Maildir, read from
// Dovecot's files, gives the same mail.
func TestImportFromDovecot(t *testing.T) {
	const user = "olduser"
	d := startDovecot(t, user)
	want := seedDovecot(t, d, user, 150)
	env := protocoltest.NewStore(t)
	env.AddUser(t, "new@example.test", "new-password-1")
	acct := env.Login(t, "new@example.test", "new-password-1")
	ctx := testCtx(t)

	src, err := DialIMAP(ctx, "imap://"+d.addr, user, d.password, d.client)
	if err != nil {
		t.Fatal(err)
	}
	var progress int
	sum, err := Run(ctx, src, acct, Options{Progress: func(Progress) { progress++ }})
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Copied != len(want) || sum.Skipped != 0 || sum.Failed != 0 || progress < len(want) {
		t.Fatalf("first run: %+v (progress reports %d), want %d copied", sum, progress, len(want))
	}
	checkImported(t, acct, want)
	boxes, err := acct.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subscribed := map[string]bool{}
	for _, b := range boxes {
		subscribed[b.Name] = b.Subscribed
	}
	if !subscribed["Work/Projects"] || subscribed["Old"] {
		t.Errorf("subscriptions: %v", subscribed)
	}

	src, err = DialIMAP(ctx, "imap://"+d.addr, user, d.password, d.client)
	if err != nil {
		t.Fatal(err)
	}
	sum, err = Run(ctx, src, acct, Options{})
	src.Close()
	if err != nil || sum.Copied != 0 || sum.Skipped != len(want) {
		t.Fatalf("second run: %+v, %v; want everything skipped", sum, err)
	}
	checkImported(t, acct, want)

	// The Maildir Dovecot wrote (dovecot-keywords included).
	env.AddUser(t, "copy@example.test", "copy-password-1")
	other := env.Login(t, "copy@example.test", "copy-password-1")
	sum, err = Run(ctx, &Maildir{Root: filepath.Join(d.dir, user, "Maildir")}, other, Options{})
	if err != nil || sum.Copied != len(want) {
		t.Fatalf("maildir import: %+v, %v", sum, err)
	}
	// A Maildir has no internal date but the file's time; Dovecot set it
	// to the APPEND date.
	checkImported(t, other, want)
}

// TestImportMbox: an mbox file's messages, with the flags of Status,
// X-Status and X-Keywords (fields removed), "From " line dates and
// quoted ">From " lines; twice, without duplicates.
func TestImportMbox(t *testing.T) {
	mbox := "From ann@example.net Sat Jan  3 01:05:34 2026\n" +
		"From: ann@example.net\nSubject: one\nMessage-ID: <1@example.net>\nStatus: RO\nX-Status: AF\nX-Keywords: $Work Later\n\nhello\n>From the start\n>>From quoted twice\n\n" +
		"From bob@example.net Sun Jan  4 10:00:00 2026\n" +
		"From: bob@example.net\nSubject: two\nMessage-ID: <2@example.net>\nStatus: O\n\nsecond\n"
	path := filepath.Join(t.TempDir(), "old.mbox")
	if err := os.WriteFile(path, []byte(mbox), 0o600); err != nil {
		t.Fatal(err)
	}
	env := protocoltest.NewStore(t)
	env.AddUser(t, "m@example.test", "mbox-password-1")
	acct := env.Login(t, "m@example.test", "mbox-password-1")
	ctx := testCtx(t)
	for run := 1; run <= 2; run++ {
		sum, err := Run(ctx, &Mbox{Path: path}, acct, Options{Into: "Archive/2026"})
		if err != nil {
			t.Fatal(err)
		}
		if wantCopied := map[int]int{1: 2, 2: 0}[run]; sum.Copied != wantCopied || sum.Skipped != 2-wantCopied {
			t.Fatalf("run %d: %+v", run, sum)
		}
	}
	info, err := acct.Mailbox(ctx, "Archive/2026")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := acct.Snapshot(ctx, info.ID)
	if err != nil || len(snap.Messages) != 2 {
		t.Fatalf("Archive/2026: %d messages, %v", len(snap.Messages), err)
	}
	first := snap.Messages[0]
	body, err := acct.Body(ctx, first.Blob)
	if err != nil {
		t.Fatal(err)
	}
	b := string(body)
	if want := "From: ann@example.net\r\nSubject: one\r\nMessage-ID: <1@example.net>\r\n\r\nhello\r\nFrom the start\r\n>From quoted twice\r\n"; b != want {
		t.Errorf("first message: %q, want %q", b, want)
	}
	if !first.InternalDate.Equal(time.Date(2026, 1, 3, 1, 5, 34, 0, time.UTC)) {
		t.Errorf("internal date %v", first.InternalDate)
	}
	for _, f := range []string{`\Seen`, `\Answered`, `\Flagged`, "$Work", "Later"} {
		if !schema.ContainsFold(first.Flags, f) {
			t.Errorf("flags %v lack %s", first.Flags, f)
		}
	}
	if len(snap.Messages[1].Flags) != 0 {
		t.Errorf("second message flags %v, want none", snap.Messages[1].Flags)
	}
}
