package node

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/pquerna/otp/totp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/node/mailexport"
	"github.com/mailcluster/mailcluster/node/mailimport"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// storedMessage is one message as the store holds it.
type storedMessage struct {
	data  []byte
	flags []string
	date  time.Time
}

// storedMail reads every message of a user, by mailbox, in UID order.
func storedMail(t *testing.T, n *Node, address string) map[string][]storedMessage {
	t.Helper()
	ctx := context.Background()
	acct, err := n.store.AccountOf(ctx, address)
	if err != nil {
		t.Fatal(err)
	}
	defer acct.Close()
	boxes, err := acct.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]storedMessage{}
	for _, b := range boxes {
		snap, err := acct.Snapshot(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		out[b.Name] = []storedMessage{}
		for _, m := range snap.Messages {
			data, err := acct.Body(ctx, m.Blob)
			if err != nil {
				t.Fatal(err)
			}
			out[b.Name] = append(out[b.Name], storedMessage{data, m.Flags, m.InternalDate})
		}
	}
	return out
}

// tarEntry is one entry of an archive, read whole (the tests' are small).
type tarEntry struct {
	h    *tar.Header
	data []byte
}

func readArchive(t *testing.T, p string) []tarEntry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tarEntry
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsLocal(h.Name) {
			t.Errorf("entry %q leaves the directory", h.Name)
		}
		if h.Mode&0o077 != 0 {
			t.Errorf("entry %q has mode %o", h.Name, h.Mode)
		}
		out = append(out, tarEntry{h, b})
	}
}

// compareMessage checks one message read back against the stored one:
// bytes, flags and the internal date to the second.
func compareMessage(t *testing.T, what string, data []byte, flags []string, date time.Time, want storedMessage) {
	t.Helper()
	if !bytes.Equal(data, want.data) {
		t.Errorf("%s: %d bytes differ from the stored %d:\n got %.300q\nwant %.300q", what, len(data), len(want.data), data, want.data)
	}
	g, w := slices.Clone(flags), slices.Clone(want.flags)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("%s: flags %q, want %q", what, g, w)
	}
	if date.Unix() != want.date.Unix() {
		t.Errorf("%s: date %v, want %v", what, date, want.date)
	}
}

// mboxMessages reads the mbox files of an archive with mailnode import's
// reader, by mailbox name (from account.json's paths), and writes them
// out under dir.
func mboxMessages(t *testing.T, entries []tarEntry, root string, acct mailexport.AccountFile, dir string) map[string][]mailimport.Message {
	t.Helper()
	files := map[string][]byte{}
	for _, e := range entries {
		files[e.h.Name] = e.data
	}
	out := map[string][]mailimport.Message{}
	for _, b := range acct.Mailboxes {
		data, ok := files[root+b.Path]
		if !ok {
			t.Errorf("mailbox %s: no %s in the archive", b.Name, b.Path)
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(b.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out[b.Name] = []mailimport.Message{}
		err := (&mailimport.Mbox{Path: p}).Messages(context.Background(), b.Name, func(m mailimport.Message) error {
			m.Data = schema.NormalizeCRLF(m.Data)
			out[b.Name] = append(out[b.Name], m)
			return nil
		})
		if err != nil {
			t.Fatalf("read %s: %v", b.Path, err)
		}
	}
	return out
}

// maildirMessages parses the Maildir++ tree of an archive by hand: the
// folder names, the ":2," flags, dovecot-keywords and the file times.
func maildirMessages(t *testing.T, entries []tarEntry, root string) map[string][]mailimport.Message {
	t.Helper()
	keywords := map[string][]string{} // folder -> keyword by letter index
	for _, e := range entries {
		if folder, ok := strings.CutSuffix(e.h.Name, "/dovecot-keywords"); ok {
			for _, line := range strings.Split(strings.TrimSpace(string(e.data)), "\n") {
				var i int
				var k string
				if _, err := fmt.Sscanf(line, "%d %s", &i, &k); err != nil || i != len(keywords[folder]) {
					t.Fatalf("%s: line %q", e.h.Name, line)
				}
				keywords[folder] = append(keywords[folder], k)
			}
		}
	}
	letters := map[byte]string{'D': schema.FlagDraft, 'F': schema.FlagFlagged, 'R': schema.FlagAnswered, 'S': schema.FlagSeen, 'T': schema.FlagDeleted}
	out := map[string][]mailimport.Message{}
	for _, e := range entries {
		dir, file := path.Split(e.h.Name)
		folder, ok := strings.CutSuffix(dir, "/cur/")
		if !ok || e.h.Typeflag != tar.TypeReg {
			continue
		}
		rel := strings.TrimPrefix(folder, root+"Maildir")
		name := "INBOX"
		if rel != "" {
			name = strings.ReplaceAll(strings.TrimPrefix(rel, "/."), ".", "/")
		}
		_, info, ok := strings.Cut(file, ":2,")
		if !ok {
			t.Errorf("%s: no :2, info", e.h.Name)
		}
		m := mailimport.Message{Data: e.data, Date: e.h.ModTime}
		for _, c := range []byte(info) {
			if f, ok := letters[c]; ok {
				m.Flags = append(m.Flags, f)
			} else if kw := keywords[folder]; c >= 'a' && int(c-'a') < len(kw) {
				m.Flags = append(m.Flags, kw[c-'a'])
			} else {
				t.Errorf("%s: flag letter %c", e.h.Name, c)
			}
		}
		out[name] = append(out[name], m)
	}
	return out
}

// TestCLIUserExport: mail delivered over SMTP (to the user, an alias and
// the catch-all) and appended with flags and keywords to several
// mailboxes comes out of "mailnode user export" in both formats byte for
// byte, with its flags and internal dates; account.json has the
// directory's account data and no secret appears anywhere in the
// archive; the file is 0600 and no partial file is left. Then the mbox
// export, imported into another user with "mailnode import mbox", gives
// the same messages, flags and dates.
func TestCLIUserExport(t *testing.T) {
	cfg := testConfig(t)
	cfg.Hostname = "mx.example.test"
	n := startNode(t, cfg)
	dir := cfg.DataDir
	ctx := context.Background()
	// bob shares an alias with ada; eve gets ada's mail back in.
	const ada, bob, eve, password = "ada@example.test", "bob@example.test", "eve@example.test", "ada-password-1"
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, password+"\n", "user", "add", "--data", dir, ada)
	mustCLI(t, "bob-password-1\n", "user", "add", "--data", dir, bob)
	mustCLI(t, "eve-password-1\n", "user", "add", "--data", dir, eve)
	mustCLI(t, "", "alias", "add", "--data", dir, "team@example.test", ada+","+bob)
	mustCLI(t, "", "alias", "add", "--data", dir, "all@example.test", "team@example.test")
	mustCLI(t, "", "domain", "catch-all", "--data", dir, "example.test", ada)
	appPassword := strings.TrimSpace(mustCLI(t, "", "user", "app-password", "add", "--data", dir, "--name", "Phone", "--scope", "imap", ada))
	enrol := mustCLI(t, "", "user", "mfa", "enable", "--data", dir, ada)
	uri, err := url.Parse(strings.SplitN(enrol, "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	secret := uri.Query().Get("secret")
	code, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "", "user", "mfa", "confirm", "--data", dir, ada, code)
	login := directory.LoginRecord{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Node: "n9", Protocol: schema.ProtocolIMAP,
		Remote: "198.51.100.7", Credential: "Phone", Success: true}
	if err := n.Directory().RecordLogin(ctx, ada, login); err != nil {
		t.Fatal(err)
	}
	secrets := []string{password, appPassword, secret, "$argon2id$"}
	for _, l := range strings.Split(enrol, "\n") {
		if strings.HasPrefix(l, "  ") {
			secrets = append(secrets, strings.TrimSpace(l))
		}
	}

	// Mail over SMTP, to ada, the alias and the catch-all.
	c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	for i, rcpt := range []string{ada, "team@example.test", "nobody@example.test"} {
		msg := fmt.Sprintf("From: carol@sender.test\r\nTo: %s\r\nSubject: delivered %d\r\nMessage-ID: <d%d@sender.test>\r\n\r\nHello Ada.\r\nFrom the sea\r\n>From quoted\r\n", rcpt, i, i)
		if err := c.SendMail("carol@sender.test", []string{rcpt}, strings.NewReader(msg)); err != nil {
			t.Fatalf("send to %s: %v", rcpt, err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	// Appends with flags and keywords, to several mailboxes.
	acct, err := n.store.AccountOf(ctx, ada)
	if err != nil {
		t.Fatal(err)
	}
	if err := acct.CreateMailbox(ctx, "Archive/2025", ""); err != nil {
		t.Fatal(err)
	}
	if err := acct.SetSubscribed(ctx, "Junk", false); err != nil {
		t.Fatal(err)
	}
	date := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	big := "Subject: big\r\nMessage-ID: <big@x>\r\n\r\n" + strings.Repeat("From a line that needs quoting, and some more text to fill it.\r\n", 20000)
	for i, a := range []struct {
		box, msg string
		flags    []string
	}{
		{"INBOX", "Subject: seen and flagged\r\nMessage-ID: <a1@x>\r\n\r\nbody\r\n", []string{`\Seen`, `\Flagged`, "$Label1"}},
		{"Sent", "Subject: answered\r\nMessage-ID: <a2@x>\r\n\r\n>>From twice\r\n", []string{`\Seen`, `\Answered`}},
		{"Drafts", "Subject: draft\r\nMessage-ID: <a3@x>\r\n\r\n", []string{`\Draft`}},
		{"Trash", "Subject: deleted\r\nMessage-ID: <a4@x>\r\n\r\nx\r\n", []string{`\Deleted`, `\Seen`}},
		{"Archive/2025", "Subject: keywords\r\nMessage-ID: <a5@x>\r\n\r\ny\r\n", []string{"work", "$Forwarded"}},
		{"Archive/2025", big, nil},
	} {
		info, err := acct.Mailbox(ctx, a.box)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := acct.Append(ctx, info.ID, []byte(a.msg), a.flags, date.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsAdd, []string{`\Answered`, "$Important"}); err != nil {
		t.Fatal(err)
	}
	boxes, err := acct.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	acct.Close()
	stored := storedMail(t, n, ada)
	if len(stored["INBOX"]) != 4 || len(stored["Archive/2025"]) != 2 {
		t.Fatalf("stored: INBOX %d, Archive/2025 %d messages", len(stored["INBOX"]), len(stored["Archive/2025"]))
	}

	out := t.TempDir()
	for _, format := range []string{"mbox", "maildir"} {
		t.Run(format, func(t *testing.T) {
			file := filepath.Join(out, "ada-"+format+".tar")
			res := mustCLI(t, "", "user", "export", ada, "--to", file, "--format", format, "--data", dir)
			if want := fmt.Sprintf("exported %d mailboxes, 9 messages", len(boxes)); !strings.Contains(res, want) || !strings.Contains(res, " as "+format+" ") {
				t.Errorf("export printed %q, want %q", res, want)
			}
			fi, err := os.Stat(file)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v, %v; want mode 0600", file, fi, err)
			}
			if _, err := os.Stat(file + ".partial"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("partial file left: %v", err)
			}
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range secrets {
				if bytes.Contains(raw, []byte(s)) {
					t.Errorf("the archive holds the secret %q", s)
				}
			}
			entries := readArchive(t, file)
			root := "ada@example.test/"
			var af mailexport.AccountFile
			for _, e := range entries {
				if e.h.Name == root+"account.json" {
					if err := json.Unmarshal(e.data, &af); err != nil {
						t.Fatal(err)
					}
				}
			}
			checkAccountFile(t, af, format, boxes)

			var got map[string][]mailimport.Message
			if format == "mbox" {
				got = mboxMessages(t, entries, root, af, filepath.Join(out, "mbox"))
			} else {
				got = maildirMessages(t, entries, root)
			}
			for box, want := range stored {
				if len(got[box]) != len(want) {
					t.Errorf("%s: %d messages in the archive, %d stored", box, len(got[box]), len(want))
					continue
				}
				for i, m := range got[box] {
					compareMessage(t, fmt.Sprintf("%s %s message %d", format, box, i+1), m.Data, m.Flags, m.Date, want[i])
				}
			}
		})
	}

	// Round trip: every mbox file into eve, then eve's mail is ada's.
	var af mailexport.AccountFile
	for _, e := range readArchive(t, filepath.Join(out, "ada-mbox.tar")) {
		if strings.HasSuffix(e.h.Name, "/account.json") {
			if err := json.Unmarshal(e.data, &af); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, b := range af.Mailboxes {
		mustCLI(t, "", "import", "mbox", filepath.Join(out, "mbox", filepath.FromSlash(b.Path)), "--to", eve+"/"+b.Name, "--data", dir)
	}
	eves := storedMail(t, n, eve)
	for box, want := range stored {
		got := eves[box]
		if len(got) != len(want) {
			t.Errorf("eve's %s after the import: %d messages, want %d", box, len(got), len(want))
			continue
		}
		for i := range want {
			compareMessage(t, fmt.Sprintf("imported %s message %d", box, i+1), got[i].data, got[i].flags, got[i].date, want[i])
		}
	}

	// With progress asked for (as on a terminal), progress lines come
	// between the archive's bytes, one per mailbox at least.
	client := newBackupClient(dir)
	defer client.close()
	resp, err := client.requestBody(ctx, http.MethodPost, pathExport+"?progress=1", []byte(`{"address":"ada@example.test"}`))
	if err != nil {
		t.Fatal(err)
	}
	var progress, data int
	var result mailexport.Summary
	dec := json.NewDecoder(resp.Body)
	for {
		var ev exportEvent
		if err := dec.Decode(&ev); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.Progress != "":
			progress++
		case ev.Data != nil && ev.At == nil:
			data += len(ev.Data)
		case ev.Result != nil:
			if err := json.Unmarshal(ev.Result, &result); err != nil {
				t.Fatal(err)
			}
		}
	}
	resp.Body.Close()
	if progress < len(boxes) || int64(data) != result.Size || result.Messages != 9 {
		t.Errorf("streamed with progress: %d progress lines, %d bytes, result %+v", progress, data, result)
	}

	// Refusals: no file written for any.
	file := filepath.Join(out, "refused.tar")
	failCLI(t, ExitUsage, "--to FILE", "", "user", "export", ada, "--data", dir)
	failCLI(t, ExitUsage, "want mbox or maildir", "", "user", "export", ada, "--to", file, "--format", "pst", "--data", dir)
	failCLI(t, ExitError, "no such user", "", "user", "export", "nobody@example.test", "--to", file, "--data", dir)
	failCLI(t, ExitError, "already exists", "", "user", "export", ada, "--to", filepath.Join(out, "ada-mbox.tar"), "--data", dir)
	for _, p := range []string{file, file + ".partial"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after refused exports: %v", p, err)
		}
	}
}

// checkAccountFile checks account.json against what the test set up.
func checkAccountFile(t *testing.T, af mailexport.AccountFile, format string, boxes []schema.MailboxInfo) {
	t.Helper()
	if af.Address != "ada@example.test" || af.Domain != "example.test" || af.Format != format || af.MFA != "on" ||
		af.Created.IsZero() || af.Exported.IsZero() {
		t.Errorf("account.json: %+v", af)
	}
	if len(af.AppPasswords) != 1 || af.AppPasswords[0].Name != "Phone" || !slices.Equal(af.AppPasswords[0].Scope, []string{"imap"}) ||
		af.AppPasswords[0].Created.IsZero() {
		t.Errorf("account.json app passwords: %+v", af.AppPasswords)
	}
	wantAliases := []mailexport.Alias{
		{Address: "@example.test", CatchAll: true, Direct: true},
		{Address: "all@example.test"},
		{Address: "team@example.test", Direct: true},
	}
	if !slices.Equal(af.Aliases, wantAliases) {
		t.Errorf("account.json aliases: %+v, want %+v", af.Aliases, wantAliases)
	}
	wantLogins := []mailexport.Login{{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Node: "n9", Protocol: schema.ProtocolIMAP,
		Remote: "198.51.100.7", Credential: "Phone", Success: true}}
	if !slices.EqualFunc(af.Logins, wantLogins, func(a, b mailexport.Login) bool {
		return a.Time.Equal(b.Time) && a.Node == b.Node &&
			a.Protocol == b.Protocol && a.Remote == b.Remote && a.Credential == b.Credential && a.Success == b.Success
	}) {
		t.Errorf("account.json logins: %+v, want %+v", af.Logins, wantLogins)
	}
	if len(af.Mailboxes) != len(boxes) {
		t.Fatalf("account.json: %d mailboxes, want %d", len(af.Mailboxes), len(boxes))
	}
	for i, b := range boxes {
		m := af.Mailboxes[i]
		if m.Name != b.Name || m.SpecialUse != b.SpecialUse || m.Subscribed != b.Subscribed || m.UIDValidity != b.UIDValidity {
			t.Errorf("account.json mailbox %+v, want %+v", m, b)
		}
	}
	if !slices.Contains(af.Subscriptions, "Sent") || slices.Contains(af.Subscriptions, "Junk") {
		t.Errorf("account.json subscriptions: %q", af.Subscriptions)
	}
}

// fakeExportNode serves the export endpoint on an admin socket with
// answer, to see what the CLI does with a stream that breaks.
func fakeExportNode(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "exp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", admin.SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(answer)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return dir
}

// TestCLIExportInterrupted: a stream that ends without a result, with an
// error, with fewer bytes than the result says, or that the operator
// interrupts leaves no file under the name given, nor a partial one.
func TestCLIExportInterrupted(t *testing.T) {
	sendData := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		json.NewEncoder(w).Encode(exportEvent{Data: bytes.Repeat([]byte("x"), 1024)})
		w.(http.Flusher).Flush()
	}
	sent := make(chan struct{}, 1)
	for _, tc := range []struct {
		name, want string
		answer     func(w http.ResponseWriter, r *http.Request)
		cancel     bool
	}{
		{"node stops", "without a result", func(w http.ResponseWriter, r *http.Request) { sendData(w) }, false},
		{"error", "mailbox vanished", func(w http.ResponseWriter, r *http.Request) {
			sendData(w)
			json.NewEncoder(w).Encode(exportEvent{Error: "mailbox vanished"})
		}, false},
		{"short", "1024 archive bytes received, the node sent 2048", func(w http.ResponseWriter, r *http.Request) {
			sendData(w)
			json.NewEncoder(w).Encode(exportEvent{Result: json.RawMessage(`{"size":2048}`)})
		}, false},
		{"rewrite beyond", "a rewrite of bytes", func(w http.ResponseWriter, r *http.Request) {
			sendData(w)
			at := int64(1000)
			json.NewEncoder(w).Encode(exportEvent{Data: make([]byte, 512), At: &at})
		}, false},
		{"interrupted", "context canceled", func(w http.ResponseWriter, r *http.Request) {
			sendData(w)
			sent <- struct{}{}
			<-r.Context().Done()
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fakeExportNode(t, tc.answer)
			file := filepath.Join(t.TempDir(), "out.tar")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				go func() {
					<-sent
					// The partial file exists while the stream runs.
					if _, err := os.Stat(file + ".partial"); err != nil {
						t.Errorf("during the export: %v", err)
					}
					cancel()
				}()
			}
			r := runCLI(t, ctx, "", "user", "export", "ada@example.test", "--to", file, "--data", dir)
			if r.code != ExitError || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %q", r.code, r.stderr, tc.want)
			}
			for _, p := range []string{file, file + ".partial"} {
				if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s: %v, want none", p, err)
				}
			}
		})
	}
}
