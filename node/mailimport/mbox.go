package mailimport

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// Mbox reads one mbox file (mboxrd: ">From " lines lose one ">"; mboxo
// files read the same way except for quoted lines that started with
// ">From " originally) as one mailbox. Flags come from the Status,
// X-Status and X-Keywords fields mail clients and Dovecot write, which
// are removed from the message; the internal date from the "From " line.
type Mbox struct {
	Path string
	// Name is the source mailbox's name (default INBOX); Options.Into
	// usually decides the target.
	Name string
}

// Mailboxes returns the file's one mailbox.
func (m *Mbox) Mailboxes(ctx context.Context) ([]Mailbox, error) {
	f, err := os.Open(m.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 5)
	if n, _ := f.Read(head); n > 0 && string(head[:n]) != "From "[:n] {
		return nil, fmt.Errorf("%s is not an mbox file (it does not start with \"From \")", m.Path)
	}
	name := m.Name
	if name == "" {
		name = "INBOX"
	}
	return []Mailbox{{Name: name, Subscribed: true, SpecialUse: specialUseByName(name)}}, ctx.Err()
}

// maxMboxLine bounds one line of an mbox file.
const maxMboxLine = 1 << 20

// Messages splits the file at its "From " lines.
func (m *Mbox) Messages(ctx context.Context, _ string, fn func(Message) error) error {
	f, err := os.Open(m.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxMboxLine)
	var (
		cur     bytes.Buffer
		from    string
		started bool
	)
	flush := func() error {
		if !started {
			return nil
		}
		data := cur.Bytes()
		// The line break before the next "From " line belongs to the
		// separator.
		data = bytes.TrimSuffix(data, []byte("\n"))
		msg, flags := mboxFlags(data)
		date := fromLineDate(from)
		if date.IsZero() {
			date = headerDate(msg)
		}
		cur.Reset()
		return fn(Message{Data: msg, Flags: flags, Date: date})
	}
	for sc.Scan() {
		if err := ctx.Err(); err != nil {
			return err
		}
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte("From ")) {
			if err := flush(); err != nil {
				return err
			}
			started, from = true, string(line)
			continue
		}
		if !started {
			return fmt.Errorf("%s is not an mbox file", m.Path)
		}
		if q := bytes.TrimLeft(line, ">"); len(q) < len(line) && bytes.HasPrefix(q, []byte("From ")) {
			line = line[1:]
		}
		if cur.Len()+len(line) > maxFileSize {
			return fmt.Errorf("%s: a message larger than %d bytes", m.Path, maxFileSize)
		}
		cur.Write(line)
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", m.Path, err)
	}
	return flush()
}

// Close does nothing.
func (m *Mbox) Close() error { return nil }

// fromLineDate parses the date of a "From sender date" line (asctime
// format, as mail delivery agents write it).
func fromLineDate(line string) time.Time {
	f := strings.Fields(line)
	if len(f) < 7 {
		return time.Time{}
	}
	// "From addr Sat Jan  3 01:05:34 1996" (optionally a zone before the year)
	rest := strings.Join(f[2:], " ")
	for _, layout := range []string{"Mon Jan 2 15:04:05 2006", "Mon Jan 2 15:04:05 MST 2006", "Mon Jan 2 15:04:05 -0700 2006"} {
		if t, err := time.Parse(layout, rest); err == nil {
			return t
		}
	}
	return time.Time{}
}

// mboxFlags takes the Status, X-Status and X-Keywords fields (and the
// other bookkeeping fields mbox writers add) out of a message's header
// and returns the message and the flags they carried.
func mboxFlags(data []byte) ([]byte, []string) {
	// The header section ends with its last field's line break; the
	// blank line after it stays with the body, so a field removed from
	// the end of the header (where Dovecot writes them) takes its own
	// line break along.
	end := bytes.Index(data, []byte("\n\n"))
	if end < 0 {
		end = len(data)
	} else {
		end++
	}
	header, body := data[:end], data[end:]
	var kept bytes.Buffer
	var flags []string
	skipping := false
	for _, line := range bytes.SplitAfter(header, []byte("\n")) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if !skipping {
				kept.Write(line)
			}
			continue
		}
		name, value, _ := strings.Cut(string(line), ":")
		value = strings.TrimSpace(value)
		skipping = true
		switch strings.ToLower(name) {
		case "status":
			if strings.Contains(value, "R") {
				flags = append(flags, `\Seen`)
			}
		case "x-status":
			for _, c := range value {
				switch c {
				case 'A':
					flags = append(flags, `\Answered`)
				case 'F':
					flags = append(flags, `\Flagged`)
				case 'T':
					flags = append(flags, `\Draft`)
				case 'D':
					flags = append(flags, `\Deleted`)
				}
			}
		case "x-keywords":
			for _, k := range strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ' ' }) {
				flags = append(flags, k)
			}
		case "x-uid", "x-imap", "x-imapbase":
		default:
			skipping = false
			kept.Write(line)
		}
	}
	return append(kept.Bytes(), body...), flags
}
