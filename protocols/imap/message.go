package imap

import (
	"errors"
	"sort"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// storeFlags changes the flags of the selected messages msgs, starting
// from the state the view holds of them; only of those whose MODSEQ is
// at most *since when since is set.
func (s *session) storeFlags(v *view, msgs []seqMsg, op schema.FlagOp, flags []string, since *uint64) ([]schema.MessageInfo, []schema.UID, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	known := make([]schema.MessageInfo, len(msgs))
	for i, sm := range msgs {
		known[i] = sm.m.info
	}
	return protocols.StoreFlagsFrom(ctx, s.acct, v.id, known, op, flags, since)
}

var errReadOnly = &imap.Error{
	Type: imap.StatusResponseTypeNo,
	Code: imap.ResponseCodeCannot,
	Text: "Mailbox is read-only",
}

// Store changes flags (STORE and UID STORE). The view records the flags
// it reports, so the change events of this very command do not produce a
// second FETCH; .SILENT suppresses the response, not others' updates. A
// message that gets a keyword new to the mailbox is reported by the
// update after the command, right after the FLAGS response that
// introduces the keyword.
func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	v, err := s.selected()
	if err != nil {
		return err
	}
	if v.readOnly {
		return errReadOnly
	}
	list, err := storeFlags(flags.Flags)
	if err != nil {
		return err
	}
	var op schema.FlagOp
	switch flags.Op {
	case imap.StoreFlagsSet:
		op = schema.FlagsSet
	case imap.StoreFlagsAdd:
		op = schema.FlagsAdd
	case imap.StoreFlagsDel:
		op = schema.FlagsRemove
	default:
		return badError("Unknown STORE operation")
	}
	msgs, _, gone, err := v.selectUIDs(numSet)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		if gone {
			s.expungeIssued()
		}
		return nil
	}
	ext := s.cmdExt()
	var since *uint64
	if ext.hasUnchangedSince {
		// RFC 7162 section 3.1.3: decided by the store, on the MODSEQ
		// each message has when the change commits, whichever node
		// changed it last.
		since = &ext.unchangedSince
	}
	infos, modified, err := s.storeFlags(v, msgs, op, list, since)
	if err != nil {
		return s.storeError("store", err)
	}
	if len(modified) > 0 && s.front != nil {
		s.front.taggedCode("MODIFIED " + modifiedSet(msgs, modified, numSet))
	} else if gone || storeLost(msgs, infos) {
		// A message another session expunged was left alone (RFC 2180
		// section 4.2.1); say so as FETCH does.
		s.expungeIssued()
	}
	condstore := s.condstore()
	changed := make(map[schema.UID]bool, len(infos))
	for _, info := range infos {
		if m := v.byUID[info.UID]; m != nil && info.ModSeq >= m.info.ModSeq {
			m.info = info
			changed[info.UID] = true
			v.learn(info.Flags)
		}
	}
	for _, sm := range msgs {
		m := sm.m
		if !changed[m.info.UID] || m.expunged {
			continue
		}
		if flags.Silent {
			// The client knows what it asked for. (A new keyword still
			// goes out in FLAGS at the update after the command.)
			m.told = m.info.Flags
			m.dirty = false
			if condstore {
				// Under CONDSTORE it still learns the new MODSEQ
				// (RFC 7162 section 3.1.3).
				v.noteFetch(sm.seq, m.info.ModSeq)
				rw := w.CreateMessage(sm.seq)
				rw.WriteUID(imap.UID(m.info.UID))
				if err := rw.Close(); err != nil {
					return err
				}
			}
			continue
		}
		if v.unannounced(m.info.Flags) {
			// FLAGS must come first, and only the update after the
			// command can write it: that update reports the message.
			m.dirty = true
			continue
		}
		v.noteFetch(sm.seq, m.info.ModSeq)
		rw := w.CreateMessage(sm.seq)
		rw.WriteUID(imap.UID(m.info.UID))
		rw.WriteFlags(v.fetchFlags(m, m.info.Flags))
		if err := rw.Close(); err != nil {
			return err
		}
		m.told = m.info.Flags
		m.dirty = false
	}
	return nil
}

// modifiedSet is the MODIFIED response code's set (RFC 7162 section
// 3.1.3): sequence numbers for STORE, UIDs for UID STORE.
func modifiedSet(msgs []seqMsg, modified []schema.UID, numSet imap.NumSet) string {
	if _, uid := numSet.(imap.UIDSet); uid {
		return uidSetOf(modified).String()
	}
	failed := make(map[schema.UID]bool, len(modified))
	for _, u := range modified {
		failed[u] = true
	}
	var seqs []uint32
	for _, sm := range msgs {
		if failed[sm.m.info.UID] {
			seqs = append(seqs, sm.seq)
		}
	}
	return seqSetOf(seqs).String()
}

// destination resolves a COPY/MOVE target; a missing one answers
// NO [TRYCREATE] (RFC 3501 section 6.4.7).
func (s *session) destination(name string) (schema.MailboxInfo, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	mbox, err := s.acct.Mailbox(ctx, normalizeInbox(name))
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		return mbox, noError(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if err != nil {
		return mbox, s.storeError("resolve destination", err)
	}
	return mbox, nil
}

// copyData turns a store CopyResult into COPYUID data (RFC 4315), with
// the source and destination UIDs in matching order.
func copyData(res schema.CopyResult) *imap.CopyData {
	if len(res.Source) == 0 || len(res.Source) != len(res.Dest) {
		return nil
	}
	type pair struct{ src, dst schema.UID }
	pairs := make([]pair, len(res.Source))
	for i := range res.Source {
		pairs[i] = pair{res.Source[i], res.Dest[i]}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].src < pairs[j].src })
	src := make([]schema.UID, len(pairs))
	dst := make([]schema.UID, len(pairs))
	for i, p := range pairs {
		src[i], dst[i] = p.src, p.dst
		if i > 0 && dst[i] <= dst[i-1] {
			// Sets are sorted on the wire, so an unordered assignment
			// cannot be expressed; leave COPYUID out rather than lie.
			return nil
		}
	}
	return &imap.CopyData{UIDValidity: res.UIDValidity, SourceUIDs: uidSetOf(src), DestUIDs: uidSetOf(dst)}
}

// Copy copies messages to another mailbox and reports COPYUID.
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	v, err := s.selected()
	if err != nil {
		return nil, err
	}
	target, err := s.destination(dest)
	if err != nil {
		return nil, err
	}
	msgs, uids, _, err := v.selectUIDs(numSet)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	ctx, cancel := s.opContext()
	defer cancel()
	res, err := s.acct.Copy(ctx, v.id, uids, target.ID)
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		return nil, noError(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if err != nil {
		return nil, s.storeError("copy", err)
	}
	return copyData(res), nil
}

// Move moves messages atomically (RFC 6851): COPYUID first, then an
// EXPUNGE for every moved message.
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	v, err := s.selected()
	if err != nil {
		return err
	}
	if v.readOnly {
		return errReadOnly
	}
	target, err := s.destination(dest)
	if err != nil {
		return err
	}
	msgs, uids, _, err := v.selectUIDs(numSet)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := s.opContext()
	res, err := s.acct.Move(ctx, v.id, uids, target.ID)
	cancel()
	if errors.Is(err, schema.ErrNoSuchMailbox) {
		return noError(imap.ResponseCodeTryCreate, "No such mailbox")
	}
	if err != nil {
		return s.storeError("move", err)
	}
	if data := copyData(res); data != nil {
		if err := w.WriteCopyData(data); err != nil {
			return err
		}
	}
	moved := make(map[schema.UID]bool, len(res.Source))
	for _, u := range res.Source {
		moved[u] = true
	}
	if err := v.remove(func(m *viewMsg) bool { return moved[m.info.UID] }, w); err != nil {
		return err
	}
	s.tellHighestModSeq(v)
	return nil
}

// Expunge removes the messages marked \Deleted (EXPUNGE, UID EXPUNGE and
// CLOSE). Each target carries the ModSeq the decision was based on, so a
// message undeleted meanwhile by another session survives.
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	v, err := s.selected()
	if err != nil {
		return err
	}
	// CLOSE expunges through a writer that writes nothing (RFC 3501
	// section 6.4.2: no untagged EXPUNGE responses).
	closing := w == nil || *w == imapserver.ExpungeWriter{}
	if closing {
		// Nothing is written, so nothing is noted.
		v.notes = nil
	}
	if v.readOnly {
		if closing {
			return nil // CLOSE on EXAMINE never expunges
		}
		return errReadOnly
	}
	v.drain()
	var in []bool
	if uids != nil {
		if in, err = v.members(*uids, false); err != nil {
			return err
		}
	}
	var targets []schema.ExpungeTarget
	for i, m := range v.msgs {
		if m.expunged || (in != nil && !in[i]) || !m.info.HasFlag(schema.FlagDeleted) {
			continue
		}
		targets = append(targets, schema.ExpungeTarget{UID: m.info.UID, ModSeq: m.info.ModSeq})
	}
	if len(targets) == 0 {
		if !closing {
			s.tellHighestModSeq(v)
		}
		return nil
	}
	ctx, cancel := s.opContext()
	removed, err := s.acct.Expunge(ctx, v.id, targets)
	cancel()
	if err != nil {
		return s.storeError("expunge", err)
	}
	gone := make(map[schema.UID]bool, len(removed))
	for _, u := range removed {
		gone[u] = true
	}
	if err := v.remove(func(m *viewMsg) bool { return gone[m.info.UID] }, w); err != nil {
		return err
	}
	if !closing {
		s.tellHighestModSeq(v)
	}
	return nil
}

// storeLost reports whether STORE left out a live message the client
// named because the store no longer has it (expunged since the view
// last heard; the store answers only for the messages it found).
func storeLost(msgs []seqMsg, infos []schema.MessageInfo) bool {
	found := make(map[schema.UID]bool, len(infos))
	for _, info := range infos {
		found[info.UID] = true
	}
	for _, sm := range msgs {
		if !found[sm.m.info.UID] {
			return true
		}
	}
	return false
}
