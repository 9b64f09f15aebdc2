package mailexport

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node/mailimport"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// fakeSource is an account in memory.
type fakeSource struct {
	boxes []schema.MailboxInfo
	msgs  map[schema.ID][]schema.MessageInfo
	blobs map[schema.ID][]byte
	subs  []string
	// gone lists mailboxes deleted after the listing.
	gone map[schema.ID]bool
}

func (f *fakeSource) Mailboxes(context.Context) ([]schema.MailboxInfo, error) { return f.boxes, nil }

func (f *fakeSource) Snapshot(_ context.Context, id schema.ID) (schema.MailboxSnapshot, error) {
	if f.gone[id] {
		return schema.MailboxSnapshot{}, fmt.Errorf("read mailbox: %w", schema.ErrNoSuchMailbox)
	}
	for _, b := range f.boxes {
		if b.ID == id {
			return schema.MailboxSnapshot{Mailbox: b, Messages: f.msgs[id]}, nil
		}
	}
	return schema.MailboxSnapshot{}, schema.ErrNoSuchMailbox
}

func (f *fakeSource) Body(_ context.Context, blob schema.ID) ([]byte, error) {
	b, ok := f.blobs[blob]
	if !ok {
		return nil, fmt.Errorf("read message: %w", schema.ErrNoSuchMessage)
	}
	return bytes.Clone(b), nil
}

func (f *fakeSource) Subscriptions(context.Context) ([]string, error) { return f.subs, nil }

// add puts a message into a mailbox; a nil body stands for one expunged
// after the snapshot.
func (f *fakeSource) add(box int, body []byte, date time.Time, flags ...string) {
	id := f.boxes[box].ID
	m := schema.MessageInfo{UID: schema.UID(len(f.msgs[id]) + 1), ID: schema.NewID(), Blob: schema.NewID(),
		Size: uint64(len(body)), Flags: flags, InternalDate: date}
	if body != nil {
		f.blobs[m.Blob] = body
	}
	f.msgs[id] = append(f.msgs[id], m)
}

type testMessage struct {
	box   string
	body  string
	date  time.Time
	flags []string
}

func newFakeSource(t *testing.T, names ...string) *fakeSource {
	t.Helper()
	f := &fakeSource{msgs: map[schema.ID][]schema.MessageInfo{}, blobs: map[schema.ID][]byte{}, gone: map[schema.ID]bool{}}
	for i, n := range names {
		f.boxes = append(f.boxes, schema.MailboxInfo{ID: schema.NewID(), Name: n, UIDValidity: uint32(100 + i), Subscribed: i%2 == 0})
	}
	return f
}

// testMessages covers mboxrd quoting, stored status fields, a message
// without a body, keywords and every system flag.
func testMessages(base time.Time) []testMessage {
	return []testMessage{
		{"INBOX", "From: a@x.test\r\nSubject: one\r\nMessage-ID: <1@x>\r\n\r\nFrom the start\r\n>From quoted\r\n>>From twice\r\nFromage\r\n", base, []string{`\Seen`}},
		{"INBOX", "Return-Path: <bounce@x.test>\r\nSubject: two\r\nStatus: RO\r\nX-Keywords: stale\r\n  folded\r\nMessage-ID: <2@x>\r\n\r\nbody\r\n", base.Add(time.Hour), []string{`\Answered`, `\Flagged`, `$Label1`, "work"}},
		{"INBOX", "Subject: only a header\r\n", base.Add(2 * time.Hour), []string{`\Draft`, `\Deleted`}},
		{"Lists/Go", "Subject: three\r\nMessage-ID: <3@x>\r\n\r\n\r\nblank lines\r\n\r\n", base.Add(3 * time.Hour), nil},
		{"Entwürfe.2026", "Subject: dotted and not ASCII\r\n\r\nx\r\n", base.Add(4 * time.Hour), []string{"$Forwarded"}},
	}
}

// exportToFile runs an export into a file and returns the file's path.
func exportToFile(t *testing.T, src Source, opts Options) (string, Summary) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "export.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := Run(context.Background(), src, f, opts)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != sum.Size {
		t.Fatalf("archive of %v bytes, summary says %d (%v)", fi.Size(), sum.Size, err)
	}
	return p, sum
}

// extract unpacks an archive as tar would, checking that every entry
// stays below dir and that file times are kept; it returns the regular
// files' names.
func extract(t *testing.T, archive, dir string) []string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		if !filepath.IsLocal(h.Name) {
			t.Fatalf("entry %q leaves the directory", h.Name)
		}
		if h.Mode&0o077 != 0 {
			t.Errorf("%s has mode %o: open to others", h.Name, h.Mode)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, h.ModTime, h.ModTime); err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
		default:
			t.Fatalf("entry %q of type %c", h.Name, h.Typeflag)
		}
	}
	return names
}

// imported reads a source back with mailimport, as mailnode import does.
func imported(t *testing.T, src mailimport.Source) map[string][]mailimport.Message {
	t.Helper()
	ctx := context.Background()
	boxes, err := src.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]mailimport.Message{}
	for _, b := range boxes {
		err := src.Messages(ctx, b.Name, func(m mailimport.Message) error {
			m.Data = schema.NormalizeCRLF(m.Data)
			out[b.Name] = append(out[b.Name], m)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// withoutStatus is a message as the mbox form carries it: the stored
// mbox status fields left out.
func withoutStatus(body string) string {
	var out []string
	skipping := false
	lines := strings.SplitAfter(body, "\r\n")
	for i, l := range lines {
		if l == "\r\n" || l == "" {
			out = append(out, lines[i:]...)
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			if !skipping {
				out = append(out, l)
			}
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		skipping = mboxStatusFields[strings.ToLower(name)]
		if !skipping {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

func sameFlags(got, want []string) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

// TestExportReadBack: both formats, read back by mailnode import's
// readers, give every message byte for byte (mbox: but the stored mbox
// status fields), with its flags, keywords and internal date;
// account.json lists the mailboxes and subscriptions; a message and a
// mailbox deleted during the export are left out and counted.
func TestExportReadBack(t *testing.T) {
	base := time.Date(2026, 1, 3, 1, 5, 34, 0, time.UTC)
	names := []string{"Entwürfe.2026", "Gone", "INBOX", "Lists/Go"}
	for _, format := range []string{FormatMbox, FormatMaildir} {
		t.Run(format, func(t *testing.T) {
			src := newFakeSource(t, names...)
			idx := map[string]int{}
			for i, n := range names {
				idx[n] = i
			}
			msgs := testMessages(base)
			for _, m := range msgs {
				src.add(idx[m.box], []byte(m.body), m.date, m.flags...)
			}
			src.add(idx["INBOX"], nil, base) // expunged during the export
			src.gone[src.boxes[idx["Gone"]].ID] = true
			src.subs = []string{"INBOX", "Lists/Go", "Old/Deleted"}

			acct := AccountFile{Address: "ada@example.test", Domain: "example.test", MFA: "on"}
			p, sum := exportToFile(t, src, Options{Format: format, Account: acct, Now: func() time.Time { return base }})
			if sum.Messages != len(msgs) || sum.Mailboxes != 3 || sum.Vanished != 2 {
				t.Errorf("summary %+v: want %d messages in 3 mailboxes, 2 vanished", sum, len(msgs))
			}
			dir := t.TempDir()
			files := extract(t, p, dir)
			root := filepath.Join(dir, "ada@example.test")

			var got map[string][]mailimport.Message
			if format == FormatMbox {
				got = map[string][]mailimport.Message{}
				for _, n := range []string{"INBOX", "Lists/Go", "Entwürfe.2026"} {
					one := imported(t, &mailimport.Mbox{Path: filepath.Join(root, filepath.FromSlash(mboxPath(n))), Name: n})
					got[n] = one[n]
				}
				for _, f := range files {
					if strings.HasSuffix(f, ".mbox") {
						checkMboxQuoting(t, filepath.Join(dir, f))
					}
				}
			} else {
				got = imported(t, &mailimport.Maildir{Root: filepath.Join(root, "Maildir")})
				// The dotted name comes back with its "." escaped.
				got["Entwürfe.2026"] = got["Entwürfe%2E2026"]
				delete(got, "Entwürfe%2E2026")
			}
			seen := map[string]int{}
			for _, m := range msgs {
				i := seen[m.box]
				seen[m.box]++
				if i >= len(got[m.box]) {
					t.Errorf("%s: message %d missing", m.box, i+1)
					continue
				}
				g := got[m.box][i]
				want := m.body
				if format == FormatMbox {
					want = withoutStatus(m.body)
				}
				if string(g.Data) != want {
					t.Errorf("%s message %d:\n got %q\nwant %q", m.box, i+1, g.Data, want)
				}
				if !sameFlags(g.Flags, m.flags) {
					t.Errorf("%s message %d: flags %q, want %q", m.box, i+1, g.Flags, m.flags)
				}
				if !g.Date.Equal(m.date) {
					t.Errorf("%s message %d: date %v, want %v", m.box, i+1, g.Date, m.date)
				}
			}
			for box, ms := range got {
				if len(ms) != seen[box] {
					t.Errorf("%s: %d messages read back, want %d", box, len(ms), seen[box])
				}
			}

			var af AccountFile
			raw := mustRead(t, filepath.Join(root, "account.json"))
			if err := json.Unmarshal(raw, &af); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(raw, []byte("null")) {
				t.Errorf("account.json has a null list:\n%s", raw)
			}
			if af.Address != acct.Address || af.MFA != "on" || af.Format != format || !af.Exported.Equal(base) {
				t.Errorf("account.json: %+v", af)
			}
			if !slices.Equal(af.Subscriptions, src.subs) {
				t.Errorf("account.json subscriptions %q, want %q", af.Subscriptions, src.subs)
			}
			var boxes []string
			for _, b := range af.Mailboxes {
				boxes = append(boxes, b.Name)
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(b.Path))); err != nil {
					t.Errorf("account.json names %s for %s: %v", b.Path, b.Name, err)
				}
				if b.Messages != seen[b.Name] {
					t.Errorf("account.json: %s has %d messages, want %d", b.Name, b.Messages, seen[b.Name])
				}
			}
			if want := []string{"Entwürfe.2026", "INBOX", "Lists/Go"}; !slices.Equal(boxes, want) {
				t.Errorf("account.json mailboxes %q, want %q", boxes, want)
			}
			if format == FormatMaildir {
				subs := string(mustRead(t, filepath.Join(root, "Maildir", "subscriptions")))
				if subs != "V\t2\n\nINBOX\nLists\tGo\nOld\tDeleted\n" {
					t.Errorf("subscriptions file %q", subs)
				}
			}
		})
	}
}

// checkMboxQuoting: the only unquoted "From " lines of an mbox file are
// message separators, each after a blank line.
func checkMboxQuoting(t *testing.T, path string) {
	t.Helper()
	lines := strings.Split(string(mustRead(t, path)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "From ") && i > 0 && lines[i-1] != "" {
			t.Errorf("%s line %d: unquoted %q", path, i+1, l)
		}
		if strings.Contains(l, "\r") {
			t.Errorf("%s line %d: a CR left in %q", path, i+1, l)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMaildirKeywordLimit: past 26 keywords in a folder the least used
// get no letter and are counted; the others keep theirs.
func TestMaildirKeywordLimit(t *testing.T) {
	src := newFakeSource(t, "INBOX")
	date := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	var all []string
	for i := range 28 {
		all = append(all, fmt.Sprintf("kw%02d", i))
	}
	src.add(0, []byte("Subject: a\r\n\r\n"), date, all...)
	src.add(0, []byte("Subject: b\r\n\r\n"), date, all[:26]...)
	p, sum := exportToFile(t, src, Options{Format: FormatMaildir, Account: AccountFile{Address: "a@b.test"}})
	if sum.KeywordsDropped != 2 {
		t.Errorf("%d keywords dropped, want 2", sum.KeywordsDropped)
	}
	dir := t.TempDir()
	extract(t, p, dir)
	got := imported(t, &mailimport.Maildir{Root: filepath.Join(dir, "a@b.test", "Maildir")})
	if ms := got["INBOX"]; len(ms) != 2 || !sameFlags(ms[0].Flags, all[:26]) || !sameFlags(ms[1].Flags, all[:26]) {
		t.Errorf("read back %+v", ms)
	}
}

// TestTarHeaderRewrite: an entry of unknown size gets its size in place,
// with long and non-ASCII names and sizes that end on a block and not.
func TestTarHeaderRewrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := &tarWriter{s: f}
	mtime := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	long := strings.Repeat("verschachtelt/", 12) + "Grüße.mbox"
	want := map[string][]byte{
		"short.mbox": bytes.Repeat([]byte("x"), 700),
		long:         bytes.Repeat([]byte("y"), 1024),
		"empty.mbox": nil,
		"known":      []byte("z"),
	}
	for _, name := range []string{"short.mbox", long, "empty.mbox"} {
		if err := w.begin(name, mtime); err != nil {
			t.Fatal(err)
		}
		data := want[name]
		for len(data) > 0 {
			n := min(len(data), 300)
			if err := w.add(data[:n]); err != nil {
				t.Fatal(err)
			}
			data = data[n:]
		}
		if err := w.begin("nested", mtime); !errors.Is(err, errEntryOpen) {
			t.Errorf("begin while open: %v", err)
		}
		if err := w.end(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.file("known", mtime, want["known"]); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	got := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(mtime) {
			t.Errorf("%s: mtime %v", h.Name, h.ModTime)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = b
	}
	if len(got) != len(want) {
		t.Errorf("entries %d, want %d", len(got), len(want))
	}
	for name, w := range want {
		if !bytes.Equal(got[name], w) {
			t.Errorf("%s: %d bytes, want %d", name, len(got[name]), len(w))
		}
	}
}

// TestRootAndPaths: no user or mailbox name makes a path that leaves
// the archive's directory.
func TestRootAndPaths(t *testing.T) {
	for _, addr := range []string{"a/b@x.test", "..@x.test", "..", "ünï@x.test"} {
		r := Root(addr)
		if !filepath.IsLocal(r) || strings.ContainsAny(r, "/\\") || r == "." || r == ".." {
			t.Errorf("Root(%q) = %q", addr, r)
		}
	}
	for _, name := range []string{"..", "a/../b", "./x", "INBOX"} {
		if p := mboxPath(name); !filepath.IsLocal(p) || strings.Contains("/"+p+"/", "/../") {
			t.Errorf("mboxPath(%q) = %q", name, p)
		}
		if f := maildirFolder(name); strings.Contains(f, "/") || f == "." || f == ".." {
			t.Errorf("maildirFolder(%q) = %q", name, f)
		}
	}
}
