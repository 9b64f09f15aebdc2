package mailimport

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxFileSize bounds one message file read from a Maildir or an mbox
// message (the store's limit is lower; larger ones are reported failed).
const maxFileSize = 300 << 20

// Maildir reads a Maildir++ tree as Dovecot and Courier write it: the
// root's cur/ and new/ are INBOX, each ".A.B" directory is the mailbox
// A/B; flags come from the ":2," info suffix, keywords from the letters
// a-z mapped by dovecot-keywords, subscriptions from "subscriptions",
// the internal date from the file's modification time (Dovecot's
// received date).
type Maildir struct {
	Root string
}

// Mailboxes lists INBOX and every Maildir++ folder.
func (m *Maildir) Mailboxes(ctx context.Context) ([]Mailbox, error) {
	if !isMaildir(m.Root) {
		return nil, fmt.Errorf("%s is not a Maildir (no cur/ and new/)", m.Root)
	}
	subs := m.subscriptions()
	out := []Mailbox{{Name: "INBOX", Subscribed: true}}
	entries, err := os.ReadDir(m.Root)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || !strings.HasPrefix(n, ".") || n == "." || n == ".." || !isMaildir(filepath.Join(m.Root, n)) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		name := strings.ReplaceAll(strings.TrimPrefix(n, "."), ".", "/")
		out = append(out, Mailbox{Name: name, Subscribed: subs[name], SpecialUse: specialUseByName(name)})
	}
	return out, ctx.Err()
}

// subscriptions reads Dovecot's "subscriptions" file (version line, then
// names with tabs between levels) or Courier's "courierimapsubscribed".
func (m *Maildir) subscriptions() map[string]bool {
	subs := map[string]bool{}
	for _, file := range []string{"subscriptions", "courierimapsubscribed"} {
		f, err := os.Open(filepath.Join(m.Root, file))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "V\t") || line == "V" {
				continue
			}
			line = strings.TrimPrefix(line, "INBOX.")
			line = strings.NewReplacer("\t", "/", ".", "/").Replace(line)
			subs[line] = true
		}
		f.Close()
	}
	return subs
}

// Messages walks new/ then cur/ of a mailbox, oldest file first.
func (m *Maildir) Messages(ctx context.Context, mailbox string, fn func(Message) error) error {
	dir := m.Root
	if mailbox != "INBOX" {
		dir = filepath.Join(m.Root, "."+strings.ReplaceAll(mailbox, "/", "."))
	}
	keywords := m.keywords(dir)
	type file struct {
		path string
		info string
		mod  time.Time
	}
	var files []file
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			info := ""
			if i := strings.Index(e.Name(), ":2,"); i >= 0 {
				info = e.Name()[i+3:]
			}
			files = append(files, file{path: filepath.Join(dir, sub, e.Name()), info: info, mod: fi.ModTime()})
		}
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := readLimited(f.path)
		if err != nil {
			return err
		}
		if err := fn(Message{Data: data, Flags: maildirFlags(f.info, keywords), Date: f.mod}); err != nil {
			return err
		}
	}
	return nil
}

// keywords reads a mailbox's dovecot-keywords file: "N name" lines, N
// mapping to the letter 'a'+N in file names.
func (m *Maildir) keywords(dir string) map[byte]string {
	out := map[byte]string{}
	f, err := os.Open(filepath.Join(dir, "dovecot-keywords"))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		num, name, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(num)
		if ok && err == nil && n >= 0 && n < 26 && name != "" {
			out[byte('a'+n)] = name
		}
	}
	return out
}

// Close does nothing.
func (m *Maildir) Close() error { return nil }

// maildirFlags maps the info letters of a Maildir file name.
func maildirFlags(info string, keywords map[byte]string) []string {
	var out []string
	for i := 0; i < len(info); i++ {
		switch c := info[i]; {
		case c == 'S':
			out = append(out, `\Seen`)
		case c == 'R':
			out = append(out, `\Answered`)
		case c == 'F':
			out = append(out, `\Flagged`)
		case c == 'T':
			out = append(out, `\Deleted`)
		case c == 'D':
			out = append(out, `\Draft`)
		case c >= 'a' && c <= 'z':
			if k, ok := keywords[c]; ok {
				out = append(out, k)
			}
		}
	}
	return out
}

func isMaildir(dir string) bool {
	for _, sub := range []string{"cur", "new"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// readLimited reads a message file of at most maxFileSize bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// specialUseByName guesses the special use of a folder from its usual
// names, as clients do for servers without SPECIAL-USE.
func specialUseByName(name string) string {
	switch strings.ToLower(name) {
	case "sent", "sent items", "sent messages":
		return `\Sent`
	case "drafts":
		return `\Drafts`
	case "trash", "deleted items", "deleted messages":
		return `\Trash`
	case "junk", "spam":
		return `\Junk`
	case "archive", "archives":
		return `\Archive`
	}
	return ""
}

// headerDate returns the Date field of a message, or the zero time.
func headerDate(data []byte) time.Time {
	msg, err := mail.ReadMessage(strings.NewReader(string(data[:min(len(data), 64<<10)])))
	if err != nil {
		return time.Time{}
	}
	t, err := msg.Header.Date()
	if err != nil {
		return time.Time{}
	}
	return t
}
