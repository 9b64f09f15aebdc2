package mailimport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// IMAP reads another IMAP server's mailboxes with go-imap's client:
// every selectable mailbox (LIST), its subscriptions (LSUB through LIST
// SUBSCRIBED), and for each message its flags, internal date and body.
type IMAP struct {
	c     *imapclient.Client
	delim rune
}

// imapBatch is how many messages one FETCH asks for.
const imapBatch = 50

// DialIMAP connects to the server at rawURL (imaps://HOST[:993] or
// imap://HOST[:143], the latter with STARTTLS) and logs in. tlsCfg may
// be nil (the system's roots, the URL's host name).
func DialIMAP(ctx context.Context, rawURL, user, password string, tlsCfg *tls.Config) (*IMAP, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "imaps" && u.Scheme != "imap") {
		return nil, fmt.Errorf("source %q: want imaps://HOST[:PORT] or imap://HOST[:PORT] (STARTTLS)", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		port := "993"
		if u.Scheme == "imap" {
			port = "143"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	tlsCfg = tlsCfg.Clone()
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = u.Hostname()
	}
	tlsCfg.MinVersion = tls.VersionTLS12
	opts := &imapclient.Options{TLSConfig: tlsCfg, Dialer: &net.Dialer{Timeout: 30 * time.Second}}
	var c *imapclient.Client
	if u.Scheme == "imaps" {
		c, err = imapclient.DialTLS(host, opts)
	} else {
		c, err = imapclient.DialStartTLS(host, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", host, err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := c.Login(user, password).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("log in to %s: %w", host, err)
	}
	return &IMAP{c: c}, nil
}

// Mailboxes lists the selectable mailboxes and which are subscribed.
func (s *IMAP) Mailboxes(ctx context.Context) ([]Mailbox, error) {
	stop := context.AfterFunc(ctx, func() { s.c.Close() })
	defer stop()
	all, err := s.c.List("", "*", nil).Collect()
	if err != nil {
		return nil, fmt.Errorf("LIST: %w", err)
	}
	subscribed := map[string]bool{}
	if subs, err := s.c.List("", "*", &imap.ListOptions{SelectSubscribed: true}).Collect(); err == nil {
		for _, d := range subs {
			subscribed[d.Mailbox] = true
		}
	}
	var out []Mailbox
	for _, d := range all {
		if hasAttr(d.Attrs, imap.MailboxAttrNoSelect) || hasAttr(d.Attrs, imap.MailboxAttrNonExistent) {
			continue
		}
		if d.Delim != 0 {
			s.delim = d.Delim
		}
		mb := Mailbox{Name: s.localName(d.Mailbox, d.Delim), Subscribed: subscribed[d.Mailbox] || strings.EqualFold(d.Mailbox, "INBOX")}
		for _, a := range d.Attrs {
			switch a {
			case imap.MailboxAttrSent, imap.MailboxAttrDrafts, imap.MailboxAttrTrash, imap.MailboxAttrJunk, imap.MailboxAttrArchive:
				mb.SpecialUse = string(a)
			}
		}
		if mb.SpecialUse == "" {
			mb.SpecialUse = specialUseByName(mb.Name)
		}
		out = append(out, mb)
	}
	return out, nil
}

// localName turns a server's mailbox name into ours ("/" between levels).
func (s *IMAP) localName(name string, delim rune) string {
	if strings.EqualFold(name, "INBOX") {
		return "INBOX"
	}
	if delim != 0 && delim != '/' {
		name = strings.ReplaceAll(name, "/", "_")
		name = strings.ReplaceAll(name, string(delim), "/")
	}
	return name
}

// remoteName is localName's inverse.
func (s *IMAP) remoteName(name string) string {
	if s.delim != 0 && s.delim != '/' {
		return strings.ReplaceAll(name, "/", string(s.delim))
	}
	return name
}

// Messages fetches a mailbox's messages in UID order, a batch at a time.
func (s *IMAP) Messages(ctx context.Context, mailbox string, fn func(Message) error) error {
	stop := context.AfterFunc(ctx, func() { s.c.Close() })
	defer stop()
	sel, err := s.c.Select(s.remoteName(mailbox), &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return fmt.Errorf("EXAMINE %s: %w", mailbox, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	res, err := s.c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		return fmt.Errorf("UID SEARCH ALL in %s: %w", mailbox, err)
	}
	uids := res.AllUIDs()
	body := &imap.FetchItemBodySection{Peek: true}
	for len(uids) > 0 {
		batch := uids[:min(len(uids), imapBatch)]
		uids = uids[len(batch):]
		msgs, err := s.c.Fetch(imap.UIDSetNum(batch...), &imap.FetchOptions{
			UID: true, Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{body},
		}).Collect()
		if err != nil {
			return fmt.Errorf("UID FETCH in %s: %w", mailbox, err)
		}
		for _, m := range msgs {
			data := m.FindBodySection(body)
			if data == nil {
				return errors.New("server sent a message without its body")
			}
			flags := make([]string, 0, len(m.Flags))
			for _, f := range m.Flags {
				flags = append(flags, string(f))
			}
			if err := fn(Message{Data: data, Flags: flags, Date: m.InternalDate}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close logs out.
func (s *IMAP) Close() error {
	_ = s.c.Logout().Wait()
	return s.c.Close()
}

func hasAttr(attrs []imap.MailboxAttr, want imap.MailboxAttr) bool {
	for _, a := range attrs {
		if strings.EqualFold(string(a), string(want)) {
			return true
		}
	}
	return false
}
