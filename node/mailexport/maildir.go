package mailexport

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// maxMaildirKeywords is how many keywords a Maildir folder can carry:
// one letter each, a to z, named in its dovecot-keywords file.
const maxMaildirKeywords = 26

// maildirFolder returns a mailbox's folder below the Maildir++ root: ""
// for INBOX (the root's own cur/, new/ and tmp/), ".A.B" for A/B. A "."
// inside a level would read as a delimiter, so it is written %2E ("%"
// cannot occur in a mailbox name, so the form is unambiguous).
func maildirFolder(name string) string {
	if name == schema.InboxName {
		return ""
	}
	levels := strings.Split(name, schema.MailboxDelimiter)
	for i, l := range levels {
		levels[i] = strings.ReplaceAll(l, ".", "%2E")
	}
	return "." + strings.Join(levels, ".")
}

// maildirKeywords picks the keywords a folder's messages carry in their
// file names: the 26 most used, most used first (ties by name), with
// their letters. dropped counts keyword settings on messages that did not
// get a letter.
func maildirKeywords(msgs []schema.MessageInfo) (order []string, letter map[string]byte, dropped int) {
	count := map[string]int{}
	for _, m := range msgs {
		for _, f := range m.Flags {
			if !strings.HasPrefix(f, `\`) {
				count[f]++
			}
		}
	}
	for k := range count {
		order = append(order, k)
	}
	slices.SortFunc(order, func(a, b string) int {
		if c := cmp.Compare(count[b], count[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	if len(order) > maxMaildirKeywords {
		for _, k := range order[maxMaildirKeywords:] {
			dropped += count[k]
		}
		order = order[:maxMaildirKeywords]
	}
	letter = make(map[string]byte, len(order))
	for i, k := range order {
		letter[k] = byte('a' + i)
	}
	return order, letter, dropped
}

// dovecotKeywords renders a folder's dovecot-keywords file.
func dovecotKeywords(order []string) []byte {
	var b strings.Builder
	for i, k := range order {
		fmt.Fprintf(&b, "%d %s\n", i, k)
	}
	return []byte(b.String())
}

// maildirInfo returns the ":2," info of a message's file name: the
// system flags' letters (D draft, F flagged, R answered, S seen, T
// deleted) and its keywords' letters, in ASCII order as Maildir wants.
func maildirInfo(flags []string, letter map[string]byte) string {
	var b []byte
	for _, f := range []struct {
		flag   string
		letter byte
	}{{schema.FlagDraft, 'D'}, {schema.FlagFlagged, 'F'}, {schema.FlagAnswered, 'R'}, {schema.FlagSeen, 'S'}, {schema.FlagDeleted, 'T'}} {
		if schema.ContainsFold(flags, f.flag) {
			b = append(b, f.letter)
		}
	}
	var kw []byte
	for _, f := range flags {
		if l, ok := letter[f]; ok && !slices.Contains(kw, l) {
			kw = append(kw, l)
		}
	}
	slices.Sort(kw)
	return ":2," + string(append(b, kw...))
}

// maildirFileName names a message's file: unique in its folder (the UID
// and UIDVALIDITY), with the internal date in front and its size in S=,
// as Dovecot reads it.
func maildirFileName(m schema.MessageInfo, uidValidity uint32, letter map[string]byte) string {
	d := m.InternalDate
	return fmt.Sprintf("%d.M%dP%dV%d.mailnode,S=%d%s",
		d.Unix(), d.Nanosecond()/1000, m.UID, uidValidity, m.Size, maildirInfo(m.Flags, letter))
}

// subscriptionsFile renders Dovecot's subscriptions file: a version
// line, a blank line, then one name a line with a tab between levels.
func subscriptionsFile(names []string) []byte {
	var b strings.Builder
	b.WriteString("V\t2\n\n")
	for _, n := range names {
		b.WriteString(strings.ReplaceAll(n, schema.MailboxDelimiter, "\t"))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
