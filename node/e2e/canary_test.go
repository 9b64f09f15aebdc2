package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// secretForm is one byte pattern that must not appear in the node's
// files. fold makes the match case-insensitive (pattern in lower case).
type secretForm struct {
	name    string
	pattern []byte
	fold    bool
}

// secretForms returns the forms of s to look for: s itself in any case,
// and the three base64 encodings of s, one per alignment of s within the
// encoded bytes (only the characters that depend on s alone).
func secretForms(name, s string) []secretForm {
	forms := []secretForm{{name: name, pattern: []byte(strings.ToLower(s)), fold: true}}
	for k := 0; k < 3; k++ {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, k), s...))
		start, end := (8*k+5)/6, 8*(k+len(s))/6
		forms = append(forms, secretForm{name: fmt.Sprintf("%s (base64, offset %d)", name, k), pattern: []byte(enc[start:end])})
	}
	return forms
}

// secretHit is one occurrence of a form in a file.
type secretHit struct {
	path   string
	offset int
	form   string
}

func (h secretHit) String() string {
	return fmt.Sprintf("%s at offset %d: %s", h.path, h.offset, h.form)
}

// scanFile returns every occurrence of every form in one file.
func scanFile(path string, forms []secretForm) ([]secretHit, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	lower := bytes.ToLower(data)
	var hits []secretHit
	for _, f := range forms {
		hay := data
		if f.fold {
			hay = lower
		}
		for off := 0; ; {
			i := bytes.Index(hay[off:], f.pattern)
			if i < 0 {
				break
			}
			hits = append(hits, secretHit{path: path, offset: off + i, form: f.name})
			off += i + 1
		}
	}
	return hits, len(data), nil
}

// scanTree scans every regular file under root, and returns the hits and
// the files scanned.
func scanTree(root string, forms []secretForm) ([]secretHit, []string, int64, error) {
	var hits []secretHit
	var files []string
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil // directories, the admin socket
		}
		h, size, err := scanFile(path, forms)
		if err != nil {
			return err
		}
		hits = append(hits, h...)
		files = append(files, path)
		total += int64(size)
		return nil
	})
	return hits, files, total, err
}

// TestCanaryNeverStoredInClear sends a canary string in a subject, a
// body, a text attachment, a base64 attachment and a From address, over
// MX and submission and by IMAP APPEND, also as a flag keyword and in a
// mailbox name, and the password as a second secret. After reading it
// all back, forcing Raft snapshots (mailnode compact) and stopping the
// node, no form of either secret may appear in any byte of any file
// under the data directory, nor in the node's log.
func TestCanaryNeverStoredInClear(t *testing.T) {
	t.Parallel()
	canary := "cnry" + randomHex(12)
	password := "pw" + randomHex(12)
	forms := append(secretForms("canary", canary), secretForms("password", password)...)

	// The scan must be able to fail: every form planted in a scratch
	// file is found at the offset where it was put.
	scratch := filepath.Join(t.TempDir(), "planted")
	for _, f := range forms {
		planted := append(append([]byte("0123456789"), f.pattern...), "tail"...)
		if f.fold {
			planted = append(append([]byte("0123456789"), strings.ToUpper(string(f.pattern))...), "tail"...)
		}
		if err := os.WriteFile(scratch, planted, 0o600); err != nil {
			t.Fatal(err)
		}
		hits, _, err := scanFile(scratch, []secretForm{f})
		if err != nil || len(hits) != 1 || hits[0].offset != 10 {
			t.Fatalf("self-check: planted %s not found at offset 10: %v %v", f.name, hits, err)
		}
	}

	n := startNode(t, nodeOptions{})
	if err := n.addDomain(testDomain); err != nil {
		t.Fatal(err)
	}
	const user = "canary@" + testDomain
	n.addUser(t, user, password)
	sender := canary + "@canary-sender.example"

	// A base64 attachment with the canary at all three alignments, each
	// within one encoded line.
	blob := bytes.Repeat([]byte{0xA5}, 171)
	for _, off := range []int{0, 58, 116} {
		copy(blob[off:], canary)
	}
	spec := mailSpec{
		From: "Canary Sender <" + sender + ">", To: user,
		Subject: "quarterly " + canary + " report", MessageID: uniqueID("canary"),
		Text: "The body mentions " + canary + " in plain text.\n",
		Attachments: []attachment{
			{Name: "notes.txt", ContentType: "text/plain", Data: []byte("attached text with " + canary + "\n")},
			{Name: "data.bin", ContentType: "application/octet-stream", Data: blob, Base64: true},
		},
	}
	msg := spec.build()
	for _, f := range forms[:4] {
		if !bytes.Contains(bytes.ToLower(msg), f.pattern) && !bytes.Contains(msg, f.pattern) {
			t.Fatalf("the canary message does not carry %s", f.name)
		}
	}

	// In over MX (envelope sender is the canary too), over submission,
	// and by APPEND into a mailbox named after the canary, with a
	// keyword named after it.
	smtpSend(t, n, sender, []string{user}, msg)
	sc, err := gosmtp.DialTLS(n.addr("submissions"), n.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		t.Fatalf("submission AUTH: %v", err)
	}
	// Submission takes only the user's own From: address; the canary is
	// then in the display name, and everywhere else as before.
	own := spec
	own.From = "Sender " + canary + " <" + user + ">"
	if err := sc.SendMail(user, []string{user}, bytes.NewReader(own.build())); err != nil {
		t.Fatalf("submission: %v", err)
	}
	sc.Quit()
	box := "Projects/" + canary
	keyword := imap.Flag("$" + canary)
	c := imapDialTLS(t, n, user, password, nil)
	if err := c.Create(box, nil).Wait(); err != nil {
		t.Fatalf("CREATE: %v", err)
	}
	appendMessage(t, c, box, msg, &imap.AppendOptions{Flags: []imap.Flag{keyword}})

	// Everything reads back, so the canary really went in.
	if _, ok := listMailboxes(t, c, nil)[box]; !ok {
		t.Fatalf("mailbox %s not listed", box)
	}
	for _, b := range []string{"INBOX", box} {
		selectBox(t, c, b, true)
		att := &imap.FetchItemBinarySection{Part: []int{3}, Peek: true}
		got := fetchAll(t, c, &imap.FetchOptions{Envelope: true, Flags: true, BinarySection: []*imap.FetchItemBinarySection{att}})
		want := map[string]int{"INBOX": 2, box: 1}[b]
		if len(got) != want {
			t.Fatalf("%s has %d messages, want %d", b, len(got), want)
		}
		for _, m := range got {
			// The copy that came over submission is from the user.
			if m.Envelope.Subject != spec.Subject || len(m.Envelope.From) != 1 ||
				(m.Envelope.From[0].Addr() != sender && (b != "INBOX" || m.Envelope.From[0].Addr() != user)) {
				t.Errorf("%s: envelope %+v", b, m.Envelope)
			}
			if !bytes.Equal(m.FindBinarySection(att), blob) {
				t.Errorf("%s: base64 attachment does not decode to what was sent", b)
			}
			if b == box && !slices.Contains(m.Flags, keyword) {
				t.Errorf("appended message flags %v, want %s", m.Flags, keyword)
			}
		}
	}
	res, err := c.Search(&imap.SearchCriteria{Body: []string{canary}}, nil).Wait()
	if err != nil || len(res.AllSeqNums()) != 1 {
		t.Errorf("SEARCH BODY canary in %s: %v %v", box, res, err)
	}
	c.Logout()
	// A failed login with the password as user name must not log it either.
	rc := dialRaw(t, n.addr("imaps"), n.clientTLS)
	rc.line()
	rc.send("a LOGIN " + password + "@" + testDomain + " " + password)
	rc.imapTagged("a")

	// Snapshot every shard (truncating the Raft logs), then stop.
	if out, err := n.cli("", "compact"); err != nil {
		t.Fatalf("compact: %v", err)
	} else if !strings.Contains(out, "snapshotted") {
		t.Errorf("compact said %q", out)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}

	hits, files, total, err := scanTree(n.data, forms)
	if err != nil {
		t.Fatal(err)
	}
	logHits, logSize, err := scanFile(n.logPath, forms)
	if err != nil {
		t.Fatal(err)
	}
	hits = append(hits, logHits...)
	var snapshots, raftLogs, states int
	for _, f := range files {
		switch {
		case strings.Contains(f, string(filepath.Separator)+"snapshots"+string(filepath.Separator)):
			snapshots++
		case filepath.Ext(f) == ".wal": // a Raft log segment
			raftLogs++
		case filepath.Base(f) == "state.db":
			states++
		}
	}
	t.Logf("canary scan: %d files, %d bytes under the data directory, %d bytes of log", len(files), total, logSize)
	if raftLogs < 3 || states < 3 || snapshots < 3 || logSize == 0 {
		t.Errorf("scan covered %d raft logs, %d state files, %d snapshot files, %d log bytes: %q", raftLogs, states, snapshots, logSize, files)
	}
	for _, h := range hits {
		t.Errorf("secret in clear: %s", h)
	}
}
