// Package mailexport writes everything held about one user into one tar
// archive: every mailbox as an mbox file (mboxrd) or as a Maildir++ tree,
// with flags, keywords, internal dates and subscriptions in the forms
// mail clients, Dovecot and mailnode import read back, plus account.json
// with the account data the directory has (never a password hash, key or
// other secret).
//
// Memory is bounded by one message and one mailbox's list of message
// records: messages are read and written one at a time, never a whole
// mailbox. Layout of the archive, under one
// directory named after the user (see Root):
//
//	account.json
//	mbox/INBOX.mbox, mbox/Lists/Go.mbox ...              (--format mbox)
//	Maildir/cur/..., Maildir/.Lists.Go/cur/..., ...       (--format maildir)
//	Maildir/subscriptions, Maildir/<folder>/dovecot-keywords
package mailexport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Formats of the mailboxes in an archive.
const (
	FormatMbox    = "mbox"
	FormatMaildir = "maildir"
)

// AccountFile is account.json: what the directory holds about the user,
// and the mailboxes as exported. It never holds a password hash, an app
// password, a TOTP key or a recovery code.
type AccountFile struct {
	Exported time.Time `json:"exported"`
	Format   string    `json:"format"`
	Address  string    `json:"address"`
	Domain   string    `json:"domain"`
	Created  time.Time `json:"created"`
	// MFA is "off", "pending" (enrolled, not confirmed) or "on".
	MFA               string `json:"mfa"`
	DomainRequiresMFA bool   `json:"domain_requires_mfa"`
	// AppPasswords are the user's app passwords, by name.
	AppPasswords []AppPassword `json:"app_passwords"`
	// Aliases are the aliases and catch-alls that deliver to the user.
	Aliases []Alias `json:"aliases"`
	// Logins are the user's recorded logins (kept for the cluster's
	// login history retention), oldest first.
	Logins []Login `json:"logins"`
	// Deliveries are the user's delivery records (the metadata of the
	// messages delivered to the user or submitted by the user, kept for
	// the cluster's delivery_metadata_retention), oldest first.
	Deliveries []Delivery `json:"deliveries"`
	// Mailboxes lists every mailbox and where it is in the archive.
	Mailboxes []Mailbox `json:"mailboxes"`
	// Subscriptions are the subscribed names, mailboxes or not (a name
	// stays subscribed after its mailbox is deleted).
	Subscriptions []string `json:"subscriptions"`
}

// AppPassword is one app password, without the password.
type AppPassword struct {
	Name     string    `json:"name"`
	Scope    []string  `json:"scope"`
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
	LastIP   string    `json:"last_ip,omitempty"`
}

// Alias is an alias or a catch-all that delivers to the user.
type Alias struct {
	Address  string `json:"address"` // "@domain" for a catch-all
	CatchAll bool   `json:"catch_all,omitempty"`
	// Direct: the user is one of the alias's own targets, not reached
	// through another alias.
	Direct bool `json:"direct"`
}

// Login is one recorded login of the user.
type Login struct {
	Time     time.Time `json:"time"`
	Node     string    `json:"node"`
	Protocol string    `json:"protocol"`
	Remote   string    `json:"remote"`
	// Credential is "password" or an app password's name for a
	// successful login, "" for a failed one.
	Credential string `json:"credential,omitempty"`
	Success    bool   `json:"success"`
}

// Delivery is one delivery record: never any of the message's content.
type Delivery struct {
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	// Port is "mx" or "submission"; Direction "in" (to the user) or
	// "out" (submitted by the user).
	Port       string   `json:"port"`
	Direction  string   `json:"direction"`
	Remote     string   `json:"remote,omitempty"`
	From       string   `json:"from"`
	Recipients []string `json:"recipients"`
	MessageID  string   `json:"message_id,omitempty"`
	TLS        string   `json:"tls,omitempty"`
	// Result is "accepted", "temporary" or "permanent"; Reply the code.
	Result string `json:"result"`
	Reply  string `json:"reply,omitempty"`
}

// Mailbox is one mailbox in account.json.
type Mailbox struct {
	Name        string `json:"name"`
	SpecialUse  string `json:"special_use,omitempty"`
	Subscribed  bool   `json:"subscribed"`
	UIDValidity uint32 `json:"uid_validity"`
	Messages    int    `json:"messages"` // as exported
	// Path is the mbox file or Maildir folder in the archive.
	Path string `json:"path"`
}

// Source is the account mail comes from (*mailstore.Account is one).
type Source interface {
	Mailboxes(ctx context.Context) ([]schema.MailboxInfo, error)
	Snapshot(ctx context.Context, mailbox schema.ID) (schema.MailboxSnapshot, error)
	Body(ctx context.Context, blob schema.ID) ([]byte, error)
	Subscriptions(ctx context.Context) ([]string, error)
}

// Options adjust an export.
type Options struct {
	// Format is FormatMbox (default) or FormatMaildir.
	Format string
	// Account is the directory's part of account.json; Run adds the
	// format, mailboxes and subscriptions. Its Address names the
	// archive's top directory.
	Account AccountFile
	// Progress, when set, is told after each message and mailbox.
	Progress func(Progress)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Progress is where an export stands.
type Progress struct {
	Mailbox         string // the mailbox being written
	Mailboxes, Done int    // mailboxes in all, mailboxes finished
	Messages        int    // messages written so far, over all mailboxes
	InMailbox       int    // messages of the current mailbox
	Bytes           int64  // message bytes written so far
	MailboxFinished bool
}

// Summary is what an export wrote.
type Summary struct {
	Format    string `json:"format"`
	Mailboxes int    `json:"mailboxes"`
	Messages  int    `json:"messages"`
	// Bytes counts the messages' stored bytes; Size the archive's.
	Bytes int64 `json:"bytes"`
	Size  int64 `json:"size"`
	// Vanished counts messages and mailboxes deleted while the export
	// ran, which it leaves out.
	Vanished int `json:"vanished,omitempty"`
	// KeywordsDropped counts keywords of Maildir messages that found no
	// letter (a Maildir folder names at most 26 keywords); they are in
	// no file name.
	KeywordsDropped int `json:"keywords_dropped,omitempty"`
}

// Root returns the archive's top directory for a user: the address, with
// anything but letters, digits and ".@+-_" as "_", so no name can leave
// the directory it is unpacked in.
func Root(address string) string {
	r := strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune(".@+-_", c):
			return c
		}
		return '_'
	}, address)
	if strings.Trim(r, ".") == "" {
		r = "export"
	}
	return r
}

// mboxPath returns a mailbox's mbox file below the root: its levels as
// directories, ".mbox" after the last. A level "." or ".." (left from
// before such names were refused) is written %2E or %2E%2E, so that no
// path climbs out of the archive's directory.
func mboxPath(name string) string {
	levels := strings.Split(name, schema.MailboxDelimiter)
	for i, l := range levels {
		if l == "." || l == ".." {
			levels[i] = strings.ReplaceAll(l, ".", "%2E")
		}
	}
	return "mbox/" + strings.Join(levels, "/") + ".mbox"
}

// Run writes the archive to s.
func Run(ctx context.Context, src Source, s Sink, opts Options) (Summary, error) {
	if opts.Format == "" {
		opts.Format = FormatMbox
	}
	if opts.Format != FormatMbox && opts.Format != FormatMaildir {
		return Summary{}, fmt.Errorf("export format %q: want mbox or maildir: %w", opts.Format, schema.ErrInvalid)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &exporter{src: src, tw: &tarWriter{s: s}, opts: opts, root: Root(opts.Account.Address) + "/", now: opts.Now()}
	e.sum.Format = opts.Format
	if err := e.run(ctx); err != nil {
		return e.sum, err
	}
	e.sum.Size = e.tw.off
	return e.sum, nil
}

type exporter struct {
	src  Source
	tw   *tarWriter
	opts Options
	root string
	now  time.Time
	sum  Summary
	p    Progress
	buf  []byte          // one message's mbox form, reused
	dirs map[string]bool // directories of mbox files written
}

func (e *exporter) run(ctx context.Context) error {
	boxes, err := e.src.Mailboxes(ctx)
	if err != nil {
		return fmt.Errorf("list mailboxes: %w", err)
	}
	subs, err := e.src.Subscriptions(ctx)
	if err != nil {
		return fmt.Errorf("list subscriptions: %w", err)
	}
	if err := e.tw.dir(e.root, e.now); err != nil {
		return err
	}
	acct := e.opts.Account
	acct.Exported, acct.Format, acct.Subscriptions = e.now.UTC(), e.opts.Format, subs
	acct.Mailboxes = []Mailbox{}
	// Lists are [] rather than null for readers of account.json.
	if acct.Subscriptions == nil {
		acct.Subscriptions = []string{}
	}
	if acct.AppPasswords == nil {
		acct.AppPasswords = []AppPassword{}
	}
	if acct.Aliases == nil {
		acct.Aliases = []Alias{}
	}
	if acct.Logins == nil {
		acct.Logins = []Login{}
	}
	if acct.Deliveries == nil {
		acct.Deliveries = []Delivery{}
	}
	if e.opts.Format == FormatMaildir {
		if err := e.maildirRoot(subs); err != nil {
			return err
		}
	}
	e.p.Mailboxes = len(boxes)
	for _, mb := range boxes {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.p.Mailbox, e.p.InMailbox = mb.Name, 0
		snap, err := e.src.Snapshot(ctx, mb.ID)
		if errors.Is(err, schema.ErrNoSuchMailbox) {
			e.sum.Vanished++ // deleted meanwhile
			e.mailboxDone()
			continue
		}
		if err != nil {
			return fmt.Errorf("read mailbox %s: %w", mb.Name, err)
		}
		entry := Mailbox{Name: mb.Name, SpecialUse: mb.SpecialUse, Subscribed: mb.Subscribed, UIDValidity: snap.Mailbox.UIDValidity}
		if e.opts.Format == FormatMaildir {
			entry.Path = path.Join("Maildir", maildirFolder(mb.Name))
			entry.Messages, err = e.maildirMailbox(ctx, snap)
		} else {
			entry.Path = mboxPath(mb.Name)
			entry.Messages, err = e.mboxMailbox(ctx, snap, entry.Path)
		}
		if err != nil {
			return fmt.Errorf("export mailbox %s: %w", mb.Name, err)
		}
		acct.Mailboxes = append(acct.Mailboxes, entry)
		e.sum.Mailboxes++
		e.mailboxDone()
	}
	b, err := json.MarshalIndent(acct, "", "  ")
	if err != nil {
		return fmt.Errorf("encode account.json: %w", err)
	}
	if err := e.tw.file(e.root+"account.json", e.now, append(b, '\n')); err != nil {
		return err
	}
	return e.tw.close()
}

func (e *exporter) mailboxDone() {
	e.p.Done++
	e.p.MailboxFinished = true
	e.report()
	e.p.MailboxFinished = false
}

func (e *exporter) report() {
	if e.opts.Progress != nil {
		e.opts.Progress(e.p)
	}
}

// message reads one message, or reports it vanished (expunged since the
// snapshot).
func (e *exporter) message(ctx context.Context, m schema.MessageInfo) ([]byte, bool, error) {
	data, err := e.src.Body(ctx, m.Blob)
	if errors.Is(err, schema.ErrNoSuchMessage) {
		e.sum.Vanished++
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read message UID %d: %w", m.UID, err)
	}
	return data, true, nil
}

func (e *exporter) wrote(size int) {
	e.sum.Messages++
	e.sum.Bytes += int64(size)
	e.p.Messages++
	e.p.InMailbox++
	e.p.Bytes += int64(size)
	e.report()
}

// mboxMailbox writes one mailbox as one mbox file and returns how many
// messages it holds.
func (e *exporter) mboxMailbox(ctx context.Context, snap schema.MailboxSnapshot, name string) (int, error) {
	if err := e.parents(name); err != nil {
		return 0, err
	}
	mtime := e.now
	if n := len(snap.Messages); n > 0 {
		mtime = snap.Messages[n-1].InternalDate
	}
	if err := e.tw.begin(e.root+name, mtime); err != nil {
		return 0, err
	}
	written := 0
	for _, m := range snap.Messages {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		data, ok, err := e.message(ctx, m)
		if err != nil {
			return written, err
		}
		if !ok {
			continue
		}
		e.buf = appendMbox(e.buf[:0], data, m.Flags, m.InternalDate)
		if err := e.tw.add(e.buf); err != nil {
			return written, err
		}
		if cap(e.buf) > 4<<20 {
			e.buf = nil // a large message's buffer is not kept
		}
		written++
		e.wrote(len(data))
	}
	return written, e.tw.end()
}

// parents adds the directories above name that are not in the archive
// yet, so that they too are unpacked as 0700.
func (e *exporter) parents(name string) error {
	if e.dirs == nil {
		e.dirs = map[string]bool{}
	}
	for i := 0; i < len(name); i++ {
		if name[i] != '/' || e.dirs[name[:i+1]] {
			continue
		}
		e.dirs[name[:i+1]] = true
		if err := e.tw.dir(e.root+name[:i+1], e.now); err != nil {
			return err
		}
	}
	return nil
}

// maildirRoot writes the Maildir++ root: INBOX's directories come with
// its mailbox; here the root itself and the subscriptions file.
func (e *exporter) maildirRoot(subs []string) error {
	if err := e.tw.dir(e.root+"Maildir/", e.now); err != nil {
		return err
	}
	return e.tw.file(e.root+"Maildir/subscriptions", e.now, subscriptionsFile(subs))
}

// maildirMailbox writes one mailbox as a Maildir++ folder and returns how
// many messages it holds.
func (e *exporter) maildirMailbox(ctx context.Context, snap schema.MailboxSnapshot) (int, error) {
	folder := e.root + "Maildir/"
	if f := maildirFolder(snap.Mailbox.Name); f != "" {
		folder += f + "/"
		if err := e.tw.dir(folder, e.now); err != nil {
			return 0, err
		}
		if err := e.tw.file(folder+"maildirfolder", e.now, nil); err != nil {
			return 0, err
		}
	}
	for _, sub := range []string{"cur/", "new/", "tmp/"} {
		if err := e.tw.dir(folder+sub, e.now); err != nil {
			return 0, err
		}
	}
	order, letters, dropped := maildirKeywords(snap.Messages)
	e.sum.KeywordsDropped += dropped
	if len(order) > 0 {
		if err := e.tw.file(folder+"dovecot-keywords", e.now, dovecotKeywords(order)); err != nil {
			return 0, err
		}
	}
	written := 0
	for _, m := range snap.Messages {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		data, ok, err := e.message(ctx, m)
		if err != nil {
			return written, err
		}
		if !ok {
			continue
		}
		name := path.Join(folder, "cur", maildirFileName(m, snap.Mailbox.UIDValidity, letters))
		if err := e.tw.file(name, m.InternalDate, data); err != nil {
			return written, err
		}
		written++
		e.wrote(len(data))
	}
	return written, nil
}
