// Package mailimport brings existing mail into a user's account: from
// another IMAP server, a Maildir (Maildir++ folders, Dovecot keywords) or
// an mbox file. It keeps flags, internal dates and subscriptions, and it
// is resumable: a message already in the target mailbox (same Message-ID,
// internal date and size) is not copied again, so a second run copies
// only what is missing.
package mailimport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Message is one message read from a source.
type Message struct {
	Data  []byte
	Flags []string  // system flags (\Seen...) and keywords; \Recent is dropped
	Date  time.Time // internal date; zero means now
}

// Mailbox is one mailbox of a source.
type Mailbox struct {
	// Name uses "/" between levels, INBOX for the inbox.
	Name       string
	Subscribed bool
	// SpecialUse is a schema.Special* attribute, or "".
	SpecialUse string
}

// Source is where mail comes from.
type Source interface {
	// Mailboxes lists the source's mailboxes.
	Mailboxes(ctx context.Context) ([]Mailbox, error)
	// Messages calls fn for every message of a mailbox, in order; an error
	// from fn stops the walk and is returned.
	Messages(ctx context.Context, mailbox string, fn func(Message) error) error
	// Close releases the source.
	Close() error
}

// Target is the account mail goes to (protocols.Account has these).
type Target interface {
	Mailboxes(ctx context.Context) ([]schema.MailboxInfo, error)
	Mailbox(ctx context.Context, name string) (schema.MailboxInfo, error)
	CreateMailbox(ctx context.Context, name, specialUse string) error
	SetSubscribed(ctx context.Context, name string, subscribed bool) error
	Snapshot(ctx context.Context, mailbox schema.ID) (schema.MailboxSnapshot, error)
	Header(ctx context.Context, blob schema.ID) ([]byte, error)
	Append(ctx context.Context, mailbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error)
}

// Options adjust a run.
type Options struct {
	// Into, when set, puts every source mailbox's messages into this one
	// mailbox (mbox and single-folder imports: --to USER/MAILBOX).
	Into string
	// Progress, when set, is told after each message and mailbox.
	Progress func(Progress)
}

// Progress is where a run stands.
type Progress struct {
	Mailbox         string // the source mailbox being copied
	Mailboxes, Done int    // mailboxes in the source, mailboxes finished
	Copied, Skipped int    // messages so far, over all mailboxes
	Failed          int
	Bytes           int64 // bytes copied so far
	MailboxFinished bool
}

// Summary is what a run did.
type Summary struct {
	Mailboxes int   `json:"mailboxes"`
	Copied    int   `json:"copied"`
	Skipped   int   `json:"skipped"` // already in the target
	Failed    int   `json:"failed"`  // refused by the store (too large, invalid)
	Bytes     int64 `json:"bytes"`
	// Errors holds one line per failed message (at most maxErrors).
	Errors []string `json:"errors,omitempty"`
}

const maxErrors = 100

// Run copies every mailbox of src into dst.
func Run(ctx context.Context, src Source, dst Target, opts Options) (Summary, error) {
	var sum Summary
	boxes, err := src.Mailboxes(ctx)
	if err != nil {
		return sum, fmt.Errorf("list source mailboxes: %w", err)
	}
	p := Progress{Mailboxes: len(boxes)}
	for _, mb := range boxes {
		target := mb.Name
		if opts.Into != "" {
			target = opts.Into
		}
		id, err := ensureMailbox(ctx, dst, target, mb)
		if err != nil {
			return sum, err
		}
		seen, err := existing(ctx, dst, id)
		if err != nil {
			return sum, fmt.Errorf("read target mailbox %s: %w", target, err)
		}
		p.Mailbox = mb.Name
		err = src.Messages(ctx, mb.Name, func(m Message) error {
			data := schema.NormalizeCRLF(m.Data)
			k := keyOf(data, m.Date)
			if seen[k] {
				sum.Skipped++
				p.Skipped++
				report(opts, p)
				return nil
			}
			flags := importFlags(m.Flags)
			if _, err := dst.Append(ctx, id, data, flags, m.Date); err != nil {
				if errors.Is(err, schema.ErrTooLarge) || errors.Is(err, schema.ErrInvalid) {
					sum.Failed++
					p.Failed++
					if len(sum.Errors) < maxErrors {
						sum.Errors = append(sum.Errors, fmt.Sprintf("%s: message of %d bytes: %v", mb.Name, len(data), err))
					}
					report(opts, p)
					return nil
				}
				return fmt.Errorf("append to %s: %w", target, err)
			}
			seen[k] = true
			sum.Copied++
			sum.Bytes += int64(len(data))
			p.Copied++
			p.Bytes += int64(len(data))
			report(opts, p)
			return nil
		})
		if err != nil {
			return sum, fmt.Errorf("copy %s: %w", mb.Name, err)
		}
		sum.Mailboxes++
		p.Done++
		p.MailboxFinished = true
		report(opts, p)
		p.MailboxFinished = false
	}
	return sum, nil
}

func report(opts Options, p Progress) {
	if opts.Progress != nil {
		opts.Progress(p)
	}
}

// ensureMailbox creates the target mailbox if needed (with the source's
// special use when the name is free of one) and carries the
// subscription over; it returns the mailbox's id.
func ensureMailbox(ctx context.Context, dst Target, name string, src Mailbox) (schema.ID, error) {
	info, err := dst.Mailbox(ctx, name)
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		use := src.SpecialUse
		if use != "" && specialUseTaken(ctx, dst, use) {
			use = ""
		}
		if err := dst.CreateMailbox(ctx, name, use); err != nil && !errors.Is(err, schema.ErrMailboxExists) {
			return schema.ID{}, fmt.Errorf("create mailbox %s: %w", name, err)
		}
		info, err = dst.Mailbox(ctx, name)
	}
	if err != nil {
		return schema.ID{}, fmt.Errorf("mailbox %s: %w", name, err)
	}
	if src.Subscribed && !info.Subscribed {
		if err := dst.SetSubscribed(ctx, name, true); err != nil {
			return schema.ID{}, fmt.Errorf("subscribe to %s: %w", name, err)
		}
	}
	return info.ID, nil
}

// specialUseTaken reports whether a mailbox of dst already has use.
func specialUseTaken(ctx context.Context, dst Target, use string) bool {
	boxes, err := dst.Mailboxes(ctx)
	if err != nil {
		return true // in doubt, create the mailbox without it
	}
	for _, b := range boxes {
		if b.SpecialUse == use {
			return true
		}
	}
	return false
}

// dedupKey identifies a message across runs: its Message-ID (or, without
// one, nothing), internal date to the second, and size.
type dedupKey struct {
	messageID string
	date      int64
	size      int
}

func keyOf(data []byte, date time.Time) dedupKey {
	var d int64
	if !date.IsZero() {
		d = date.Unix()
	}
	return dedupKey{messageID: messageID(data), date: d, size: len(data)}
}

// existing returns the keys of the messages already in a target mailbox.
func existing(ctx context.Context, dst Target, id schema.ID) (map[dedupKey]bool, error) {
	snap, err := dst.Snapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	seen := make(map[dedupKey]bool, len(snap.Messages))
	for _, m := range snap.Messages {
		h, err := dst.Header(ctx, m.Blob)
		if err != nil {
			return nil, fmt.Errorf("header of UID %d: %w", m.UID, err)
		}
		seen[dedupKey{messageID: messageID(h), date: m.InternalDate.Unix(), size: int(m.Size)}] = true
	}
	return seen, nil
}

// messageID returns the Message-ID field of a message's header, trimmed,
// or "".
func messageID(msg []byte) string {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	} else {
		end += 4
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(msg[:end]))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return ""
	}
	return strings.TrimSpace(h.Get("Message-Id"))
}

// importFlags keeps the flags the store takes: system flags other than
// \Recent, and valid keywords.
func importFlags(flags []string) []string {
	var out []string
	for _, f := range flags {
		if strings.EqualFold(f, `\Recent`) || !schema.ValidFlag(f) {
			continue
		}
		out = append(out, f)
	}
	return out
}
