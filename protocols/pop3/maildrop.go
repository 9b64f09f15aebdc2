package pop3

import (
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// maildrop is the INBOX as it was when the session logged in, with the
// deletion marks of the session. Message numbers are indexes into it plus
// one, fixed for the whole session (RFC 1939 section 4).
type maildrop struct {
	mailbox schema.MailboxInfo
	msgs    []schema.MessageInfo
	deleted []bool
	count   int    // messages not marked deleted
	size    uint64 // their total size in octets
}

func newMaildrop(snap schema.MailboxSnapshot) *maildrop {
	d := &maildrop{
		mailbox: snap.Mailbox,
		msgs:    snap.Messages,
		deleted: make([]bool, len(snap.Messages)),
	}
	d.reset()
	return d
}

// reset removes every deletion mark (RSET).
func (d *maildrop) reset() {
	clear(d.deleted)
	d.count, d.size = len(d.msgs), 0
	for _, m := range d.msgs {
		d.size += m.Size
	}
}

// mark marks message i (zero-based) deleted.
func (d *maildrop) mark(i int) {
	if !d.deleted[i] {
		d.deleted[i] = true
		d.count--
		d.size -= d.msgs[i].Size
	}
}

// targets lists the messages marked deleted, for the UPDATE state.
func (d *maildrop) targets() []schema.ExpungeTarget {
	var t []schema.ExpungeTarget
	for i, del := range d.deleted {
		if del {
			// ModSeq zero: the user asked for deletion, whatever flags an
			// IMAP client set on the message in the meantime.
			t = append(t, schema.ExpungeTarget{UID: d.msgs[i].UID})
		}
	}
	return t
}

// uniqueID is the UIDL unique-id of message i (RFC 1939 section 7): the
// mailbox's UIDVALIDITY and the message's UID, which together never name
// another message, within 1 to 70 characters of 0x21-0x7E.
func (d *maildrop) uniqueID(i int) string {
	return fmt.Sprintf("%d.%d", d.mailbox.UIDValidity, d.msgs[i].UID)
}

// message resolves a message-number argument to an index, answering the
// client when it does not name a message that may be used.
func (s *session) message(arg string) (int, bool) {
	n, ok := parseNumber(arg)
	if !ok {
		s.reply(false, "invalid message number")
		return 0, false
	}
	if n < 1 || n > len(s.drop.msgs) {
		s.reply(false, "no such message")
		return 0, false
	}
	if s.drop.deleted[n-1] {
		s.reply(false, "message %d already deleted", n)
		return 0, false
	}
	return n - 1, true
}

func (s *session) cmdStat(cmd command) error {
	if len(cmd.args) != 0 {
		return s.syntax("STAT")
	}
	s.reply(true, "%d %d", s.drop.count, s.drop.size)
	return nil
}

func (s *session) cmdList(cmd command) error {
	switch len(cmd.args) {
	case 0:
		s.reply(true, "%d messages (%d octets)", s.drop.count, s.drop.size)
		for i, m := range s.drop.msgs {
			if !s.drop.deleted[i] {
				fmt.Fprintf(s.w, "%d %d\r\n", i+1, m.Size)
			}
		}
		s.w.WriteString(".\r\n")
	case 1:
		if i, ok := s.message(cmd.args[0]); ok {
			s.reply(true, "%d %d", i+1, s.drop.msgs[i].Size)
		}
	default:
		return s.syntax("LIST [msg]")
	}
	return nil
}

func (s *session) cmdUIDL(cmd command) error {
	switch len(cmd.args) {
	case 0:
		s.reply(true, "unique-id listing follows")
		for i := range s.drop.msgs {
			if !s.drop.deleted[i] {
				fmt.Fprintf(s.w, "%d %s\r\n", i+1, s.drop.uniqueID(i))
			}
		}
		s.w.WriteString(".\r\n")
	case 1:
		if i, ok := s.message(cmd.args[0]); ok {
			s.reply(true, "%d %s", i+1, s.drop.uniqueID(i))
		}
	default:
		return s.syntax("UIDL [msg]")
	}
	return nil
}

// cmdRetr sends a whole message, dot-stuffed.
func (s *session) cmdRetr(cmd command) error {
	if len(cmd.args) != 1 {
		return s.syntax("RETR msg")
	}
	i, ok := s.message(cmd.args[0])
	if !ok {
		return nil
	}
	m := s.drop.msgs[i]
	body, err := s.drop.fetch(s, m.Blob, false)
	if err != nil {
		return nil
	}
	s.reply(true, "%d octets", m.Size)
	writeDotStuffed(s.w, body)
	s.w.WriteString(".\r\n")
	return nil
}

// cmdTop sends the header, the blank line and the first n body lines of a
// message (RFC 1939 section 7).
func (s *session) cmdTop(cmd command) error {
	if len(cmd.args) != 2 {
		return s.syntax("TOP msg n")
	}
	i, ok := s.message(cmd.args[0])
	if !ok {
		return nil
	}
	n, ok := parseNumber(cmd.args[1])
	if !ok {
		s.reply(false, "invalid number of lines")
		return nil
	}
	m := s.drop.msgs[i]
	var header, body []byte
	if n == 0 {
		// The header alone: no need to read a large body.
		h, err := s.drop.fetch(s, m.Blob, true)
		if err != nil {
			return nil
		}
		header = h
	} else {
		msg, err := s.drop.fetch(s, m.Blob, false)
		if err != nil {
			return nil
		}
		header, body, _ = splitHeader(msg)
		body = firstLines(body, n)
	}
	s.reply(true, "top of message follows")
	writeDotStuffed(s.w, header)
	if !endsWithBlankLine(header) {
		s.w.WriteString("\r\n")
	}
	writeDotStuffed(s.w, body)
	s.w.WriteString(".\r\n")
	return nil
}

// fetch reads a message's bytes (or its header only), answering the
// client when that fails.
func (d *maildrop) fetch(s *session, blob schema.ID, headerOnly bool) ([]byte, error) {
	var b []byte
	var err error
	if headerOnly {
		b, err = s.acct.Header(s.ctx, blob)
	} else {
		b, err = s.acct.Body(s.ctx, blob)
	}
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, schema.ErrNoSuchMessage):
		// Expunged through IMAP after this session's snapshot.
		s.reply(false, "message is no longer available")
	default:
		s.log.Warn("read message", "err", err)
		s.reply(false, "[SYS/TEMP] cannot read the message, try again later")
	}
	return nil, fmt.Errorf("fetch message: %w", err)
}

func (s *session) cmdDele(cmd command) error {
	if len(cmd.args) != 1 {
		return s.syntax("DELE msg")
	}
	if i, ok := s.message(cmd.args[0]); ok {
		s.drop.mark(i)
		s.reply(true, "message %d deleted", i+1)
	}
	return nil
}

func (s *session) cmdRset(cmd command) error {
	if len(cmd.args) != 0 {
		return s.syntax("RSET")
	}
	s.drop.reset()
	s.reply(true, "maildrop has %d messages (%d octets)", s.drop.count, s.drop.size)
	return nil
}

func (s *session) cmdNoop(cmd command) error {
	if len(cmd.args) != 0 {
		return s.syntax("NOOP")
	}
	s.reply(true, "")
	return nil
}

// cmdQuitTransaction enters the UPDATE state (RFC 1939 section 6): the
// messages marked deleted are expunged in one Account.Expunge call, and
// +OK is sent only after it returned nil, that is after the expunge was
// committed. On failure the answer is RFC 1939's "-ERR some deleted
// messages not removed": the store commits up to its batch size (1,000
// messages) at once, so a smaller QUIT removes nothing when it fails.
func (s *session) cmdQuitTransaction(cmd command) error {
	if len(cmd.args) != 0 {
		return s.syntax("QUIT")
	}
	targets := s.drop.targets()
	left := s.drop.count
	var err error
	if len(targets) > 0 {
		// Only the lock's holder deletes: a session whose lock ran out
		// while it could not renew it (its node cut off, or paused) may
		// share the maildrop with the session that took it since.
		if err = s.acct.ConfirmMaildrop(s.ctx); err != nil {
			s.closeAccount()
			if errors.Is(err, schema.ErrInUse) {
				s.log.Warn("quit: the maildrop lock was lost; nothing deleted", "messages", len(targets))
				s.reply(false, "[IN-USE] maildrop lock lost to another session; some deleted messages not removed")
				return errCloseSession
			}
			s.log.Warn("quit: confirm the maildrop lock", "err", err)
			s.reply(false, "[SYS/TEMP] some deleted messages not removed, try again later")
			return errCloseSession
		}
		var removed []schema.UID
		removed, err = s.acct.Expunge(s.ctx, s.drop.mailbox.ID, targets)
		if err != nil {
			s.log.Warn("expunge at quit", "err", err, "messages", len(targets))
		} else {
			s.log.Info("messages deleted", "requested", len(targets), "removed", len(removed))
		}
	}
	// Unlock before answering, so a client that reconnects as soon as it
	// has the reply does not find its own maildrop still locked.
	s.closeAccount()
	if err != nil {
		s.reply(false, "[SYS/TEMP] some deleted messages not removed, try again later")
		return errCloseSession
	}
	s.reply(true, "%s POP3 server signing off (%d messages left)", s.srv.cfg.Hostname, left)
	return errCloseSession
}
