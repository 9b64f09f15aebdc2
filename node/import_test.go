package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIImport: "mailnode import mbox" and "import maildir" run on the
// node through its admin socket; a second run copies nothing; bad
// arguments are usage errors.
func TestCLIImport(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, "carol-password\n", "user", "add", "--data", dir, "carol@example.test")

	src := t.TempDir()
	mbox := filepath.Join(src, "old.mbox")
	if err := os.WriteFile(mbox, []byte("From a@example.net Sat Jan  3 01:05:34 2026\nSubject: one\nMessage-ID: <1@x>\nStatus: RO\n\nhello\n\n"+
		"From a@example.net Sat Jan  3 02:05:34 2026\nSubject: two\nMessage-ID: <2@x>\n\nbye\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	maildir := filepath.Join(src, "Maildir")
	for _, sub := range []string{"cur", "new", "tmp", ".Lists.Go/cur", ".Lists.Go/new", ".Lists.Go/tmp"} {
		if err := os.MkdirAll(filepath.Join(maildir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"cur/1700000000.1.host:2,S":            "Subject: in inbox\r\nMessage-ID: <3@x>\r\n\r\nx\r\n",
		".Lists.Go/new/1700000001.2.host":      "Subject: in a folder\r\nMessage-ID: <4@x>\r\n\r\ny\r\n",
		".Lists.Go/cur/1700000002.3.host:2,FR": "Subject: flagged\r\nMessage-ID: <5@x>\r\n\r\nz\r\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(maildir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	for run := 0; run < 2; run++ {
		out := mustCLI(t, "", "import", "mbox", mbox, "--to", "carol@example.test/Archive", "--data", dir)
		want := map[int]string{0: "2 messages copied", 1: "0 messages copied"}[run]
		if !strings.Contains(out, want) {
			t.Errorf("run %d of import mbox: %q, want %q", run+1, out, want)
		}
		out = mustCLI(t, "", "import", "maildir", maildir, "--to", "carol@example.test", "--data", dir)
		want = map[int]string{0: "imported 2 mailboxes: 3 messages copied", 1: "0 messages copied (0.0 KiB), 3 already there"}[run]
		if !strings.Contains(out, want) {
			t.Errorf("run %d of import maildir: %q, want %q", run+1, out, want)
		}
	}
	ctx := context.Background()
	acct, err := n.store.AccountOf(ctx, "carol@example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer acct.Close()
	for name, count := range map[string]int{"Archive": 2, "INBOX": 1, "Lists/Go": 2} {
		info, err := acct.Mailbox(ctx, name)
		if err != nil || info.Messages != uint32(count) {
			t.Errorf("%s: %+v, %v; want %d messages", name, info, err, count)
		}
	}

	failCLI(t, ExitUsage, "--to", "", "import", "mbox", mbox, "--data", dir)
	failCLI(t, ExitUsage, "want imap, maildir or mbox", "", "import", "pst", mbox, "--to", "carol@example.test", "--data", dir)
	failCLI(t, ExitUsage, "--from URL", "", "import", "imap", "--to", "carol@example.test", "--data", dir)
	failCLI(t, ExitError, "no such user", "", "import", "mbox", mbox, "--to", "nobody@example.test", "--data", dir)
	failCLI(t, ExitError, "not a Maildir", "", "import", "maildir", src, "--to", "carol@example.test", "--data", dir)
}
