package imap

import (
	"fmt"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/protocols"
)

// Select opens a mailbox (SELECT, or EXAMINE when options.ReadOnly).
func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	acct, err := s.account()
	if err != nil {
		return nil, err
	}
	s.closeView()
	ctx, cancel := s.opContext()
	defer cancel()
	mbox, err := acct.Mailbox(ctx, name)
	if err != nil {
		return nil, s.storeError("select", err)
	}
	v, err := openView(ctx, acct, mbox, options != nil && options.ReadOnly)
	if err != nil {
		return nil, s.storeError("select", err)
	}
	v.hideRecent = s.conn.EnabledCaps().Has(imap.CapIMAP4rev2)
	s.view = v
	if f := s.front; f != nil {
		v.notes = f
		// RFC 7162 section 3.1.2.1: on every SELECT and EXAMINE, as
		// MODSEQs are kept for every mailbox.
		f.untaggedBefore(fmt.Sprintf("* OK [HIGHESTMODSEQ %d] Highest", v.highestModSeq))
		if q := s.cmdExt().qresync; q != nil && q.uidValidity == v.uidValidity {
			for _, l := range v.qresyncLines(q) {
				f.untaggedBefore(l)
			}
		}
	}
	data := v.selectData()
	data.UIDNext = imap.UID(v.uidNext)
	if last := v.lastUID(); imap.UID(last) >= data.UIDNext {
		data.UIDNext = imap.UID(last) + 1
	}
	if s.conn.EnabledCaps().Has(imap.CapIMAP4rev2) {
		// RFC 9051 section 6.3.2: the server returns a LIST response
		// with the mailbox name.
		data.List = &imap.ListData{
			Mailbox: v.name,
			Delim:   protocols.MailboxDelimiter,
			Attrs:   specialUseAttrs(mbox.SpecialUse),
		}
	}
	return data, nil
}

// Unselect closes the selected mailbox (UNSELECT, and CLOSE after its
// expunge).
func (s *session) Unselect() error {
	s.waitIdle()
	s.closeView()
	return nil
}

// Poll writes the updates the selected mailbox has accumulated; the
// library calls it after every command, before the tagged response.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	s.waitIdle()
	return s.poll(w, allowExpunge)
}

func (s *session) poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.view == nil {
		return nil
	}
	ctx, cancel := s.opContext()
	defer cancel()
	storeErr, writeErr := s.view.flush(ctx, w, allowExpunge, s.cmdExt().poll)
	if storeErr != nil {
		// The other updates were written; a reload is retried at the
		// next command.
		s.log.Warn("update selected mailbox", "err", storeErr)
	}
	// A write error ends the connection; the client is gone anyway.
	return writeErr
}

// Idle waits for changes to the selected mailbox and writes them as they
// come, until the client sends DONE (stop closes) or the session ends.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	select {
	case <-stop:
		return nil // the IDLE command already ended
	default:
	}
	if s.closed {
		return nil
	}
	if s.view == nil {
		select {
		case <-stop:
		case <-s.ctx.Done():
		}
		return nil
	}
	v := s.view
	for {
		if err := s.poll(w, true); err != nil {
			return err
		}
		if v.changes == nil {
			select {
			case <-stop:
			case <-s.ctx.Done():
			}
			return nil
		}
		select {
		case <-stop:
			return nil
		case <-s.ctx.Done():
			return nil
		case ch, ok := <-v.changes:
			if !ok {
				v.changes = nil
				continue
			}
			v.apply(ch)
		}
	}
}
