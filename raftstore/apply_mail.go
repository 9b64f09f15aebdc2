package raftstore

import (
	"bytes"
	"math"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// userMailbox finds the user and mailbox an op works on, or the result
// that refuses the op.
func (a *applier) userMailbox(user, mbox schema.ID) (*userMail, *schema.MailboxRecord, *schema.Result) {
	u := a.user(user)
	if u == nil {
		return nil, nil, fail(schema.CodeNoSuchUser)
	}
	rec := u.mailbox(mbox)
	if rec == nil {
		return nil, nil, fail(schema.CodeNoSuchMailbox)
	}
	return u, rec, nil
}

func (a *applier) initUser(p *schema.InitUser) *schema.Result {
	mail := a.mailOf(p.User)
	if mail.Bucket(p.User[:]) != nil {
		return ok() // already initialised: the retry of a half-done user add
	}
	inboxes := 0
	seenNames := map[schema.NameKey]bool{}
	seenIDs := map[schema.ID]bool{}
	for _, m := range p.Mailboxes {
		if m.Inbox {
			inboxes++
		}
		if m.ID.IsZero() || seenNames[m.NameKey] || seenIDs[m.ID] {
			return fail(schema.CodeInvalid)
		}
		seenNames[m.NameKey], seenIDs[m.ID] = true, true
	}
	if p.User.IsZero() || inboxes != 1 {
		return fail(schema.CodeInvalid)
	}
	b, err := mail.CreateBucket(p.User[:])
	must(err)
	for _, name := range userSubBuckets {
		_, err := b.CreateBucket(name)
		must(err)
	}
	u := openUserMail(b)
	var st schema.UserState
	for _, m := range p.Mailboxes {
		rec := &schema.MailboxRecord{
			ID: m.ID, NameKey: m.NameKey, Sealed: m.Sealed, Inbox: m.Inbox,
			UIDValidity: a.nextUIDValidity(&st), UIDNext: 1, HighestModSeq: 1,
		}
		if m.Inbox {
			st.Inbox = m.ID
		}
		u.putMailbox(rec)
		must(u.names.Put(m.NameKey[:], m.ID[:]))
	}
	u.putState(st)
	return ok()
}

func (a *applier) deleteUserData(p *schema.DeleteUserData) *schema.Result {
	mail := a.mailOf(p.User)
	if mail.Bucket(p.User[:]) != nil {
		must(mail.DeleteBucket(p.User[:]))
	}
	staged := a.tx.Bucket(bucketStaged)
	var keys [][]byte
	c := staged.Cursor()
	for k, _ := c.Seek(p.User[:]); k != nil && bytes.HasPrefix(k, p.User[:]); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		deleteChunk(staged, k)
	}
	a.emit(Event{User: p.User, Kind: schema.ChangeResync})
	return ok()
}

func (a *applier) createMailbox(p *schema.CreateMailbox) *schema.Result {
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	m := p.Mailbox
	if m.ID.IsZero() || m.Inbox || u.mailboxes.Get(m.ID[:]) != nil {
		return fail(schema.CodeInvalid)
	}
	if u.names.Get(m.NameKey[:]) != nil {
		return fail(schema.CodeMailboxExists)
	}
	st := u.state()
	rec := &schema.MailboxRecord{
		ID: m.ID, NameKey: m.NameKey, Sealed: m.Sealed,
		UIDValidity: a.nextUIDValidity(&st), UIDNext: 1, HighestModSeq: 1,
	}
	u.putState(st)
	u.putMailbox(rec)
	must(u.names.Put(m.NameKey[:], m.ID[:]))
	a.emit(Event{User: p.User, Kind: schema.ChangeMailbox, Mailbox: m.ID})
	return &schema.Result{UIDValidity: rec.UIDValidity}
}

func (a *applier) deleteMailbox(p *schema.DeleteMailbox) *schema.Result {
	u, rec, failed := a.userMailbox(p.User, p.Mailbox)
	if failed != nil {
		return failed
	}
	if rec.Inbox {
		return fail(schema.CodeCannotDelete)
	}
	if msgs := u.msgs(p.Mailbox, false); msgs != nil {
		c := msgs.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var m schema.MessageRecord
			if m.Unmarshal(v) == nil {
				u.releaseBlob(m.Blob)
			}
		}
		must(u.messages.DeleteBucket(p.Mailbox[:]))
	}
	must(u.names.Delete(rec.NameKey[:]))
	must(u.mailboxes.Delete(p.Mailbox[:]))
	u.deleteUserValues(p.Mailbox)
	a.emit(Event{User: p.User, Kind: schema.ChangeMailbox, Mailbox: p.Mailbox})
	return ok()
}

func (a *applier) renameMailbox(p *schema.RenameMailbox) *schema.Result {
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	if len(p.Renames) == 0 {
		return fail(schema.CodeInvalid)
	}
	inSet := map[schema.ID]bool{}
	recs := make([]*schema.MailboxRecord, len(p.Renames))
	for i, r := range p.Renames {
		rec := u.mailbox(r.Mailbox)
		if rec == nil {
			return fail(schema.CodeNoSuchMailbox)
		}
		if rec.Inbox || inSet[r.Mailbox] {
			return fail(schema.CodeInvalid)
		}
		inSet[r.Mailbox] = true
		recs[i] = rec
	}
	newNames := map[schema.NameKey]bool{}
	for _, r := range p.Renames {
		if newNames[r.NameKey] {
			return fail(schema.CodeInvalid)
		}
		newNames[r.NameKey] = true
		if owner := u.names.Get(r.NameKey[:]); owner != nil {
			var id schema.ID
			copy(id[:], owner)
			if !inSet[id] {
				return fail(schema.CodeMailboxExists)
			}
		}
	}
	for _, rec := range recs {
		must(u.names.Delete(rec.NameKey[:]))
	}
	for i, r := range p.Renames {
		recs[i].NameKey = r.NameKey
		recs[i].Sealed = r.Sealed
		u.putMailbox(recs[i])
		must(u.names.Put(r.NameKey[:], r.Mailbox[:]))
		a.emit(Event{User: p.User, Kind: schema.ChangeMailbox, Mailbox: r.Mailbox})
	}
	return ok()
}

func (a *applier) updateMailbox(p *schema.UpdateMailbox) *schema.Result {
	u, rec, failed := a.userMailbox(p.User, p.Mailbox)
	if failed != nil {
		return failed
	}
	rec.Sealed = p.Sealed
	u.putMailbox(rec)
	a.emit(Event{User: p.User, Kind: schema.ChangeMailbox, Mailbox: p.Mailbox})
	return ok()
}

func (a *applier) append(p *schema.Append) *schema.Result {
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	mboxID, rec, failed := a.checkAppend(u, p, 1)
	if failed != nil {
		return failed
	}
	if u.overQuota(p.Size, 1, p.Quota, p.MessageQuota) {
		return fail(schema.CodeOverQuota)
	}
	uid := a.commitAppend(u, p, mboxID, rec)
	u.putMailbox(rec)
	res := &schema.Result{UIDValidity: rec.UIDValidity, UIDs: []schema.UID{uid}}
	if p.ClaimRecent {
		res.RecentClaimed, res.RecentBefore = true, u.claimRecent(mboxID, uid)
	}
	return res
}

// checkAppend checks the preconditions of one append (of n into the same
// mailbox) and returns its mailbox, or the result that refuses it.
func (a *applier) checkAppend(u *userMail, p *schema.Append, n int) (schema.ID, *schema.MailboxRecord, *schema.Result) {
	mboxID := p.Mailbox
	if mboxID.IsZero() {
		mboxID = u.state().Inbox
	}
	rec := u.mailbox(mboxID)
	if rec == nil {
		return mboxID, nil, fail(schema.CodeNoSuchMailbox)
	}
	total := uint64(p.StagedChunks) + uint64(len(p.Chunks))
	if total == 0 || total > math.MaxUint32 || p.Blob.IsZero() || p.Message.IsZero() ||
		u.blobs.Get(p.Blob[:]) != nil || uint64(rec.UIDNext)+uint64(n) > math.MaxUint32 {
		return mboxID, nil, fail(schema.CodeInvalid)
	}
	staged := a.tx.Bucket(bucketStaged)
	for i := uint32(0); i < p.StagedChunks; i++ {
		if v := getChunk(staged, stagedKey(p.User, p.Blob, i)); len(v) < 8 {
			return mboxID, nil, fail(schema.CodeInvalid) // expired or never staged
		}
	}
	return mboxID, rec, nil
}

// commitAppend stores a checked append in rec's mailbox and returns its
// UID; the caller writes rec back.
func (a *applier) commitAppend(u *userMail, p *schema.Append, mboxID schema.ID, rec *schema.MailboxRecord) schema.UID {
	staged := a.tx.Bucket(bucketStaged)
	for i := uint32(0); i < p.StagedChunks; i++ {
		k := stagedKey(p.User, p.Blob, i)
		v := getChunk(staged, k)
		putChunk(u.chunks, chunkKey(p.Blob, i), bytes.Clone(v[8:]))
		deleteChunk(staged, k)
	}
	for j, c := range p.Chunks {
		putChunk(u.chunks, chunkKey(p.Blob, p.StagedChunks+uint32(j)), c)
	}
	total := uint64(p.StagedChunks) + uint64(len(p.Chunks))
	blob := &schema.BlobRecord{ID: p.Blob, Refs: 1, Size: p.Size, Chunks: uint32(total)}
	must(u.blobs.Put(p.Blob[:], blob.Marshal()))
	if len(p.SearchRecord) > 0 {
		u.putSearchRecord(p.Blob, p.SearchRecord)
	}

	uid := rec.UIDNext
	rec.UIDNext++
	rec.HighestModSeq++
	rec.Messages++
	rec.Size += p.Size
	msg := &schema.MessageRecord{UID: uid, ID: p.Message, Blob: p.Blob, Size: p.Size, ModSeq: rec.HighestModSeq, Sealed: p.Sealed}
	putMessage(u.msgs(mboxID, true), msg)
	a.emit(Event{User: p.User, Kind: schema.ChangeAdded, Mailbox: mboxID, UID: uid, Message: msg})
	return uid
}

func (a *applier) setAttrs(p *schema.SetAttrs) *schema.Result {
	u, rec, failed := a.userMailbox(p.User, p.Mailbox)
	if failed != nil {
		return failed
	}
	msgs := u.msgs(p.Mailbox, false)
	res := &schema.Result{ModSeqs: make([]uint64, len(p.Updates))}
	for i, up := range p.Updates {
		m := getMessage(msgs, up.UID)
		if m == nil || (up.ExpectModSeq != 0 && m.ModSeq != up.ExpectModSeq) {
			continue // gone, or changed since the caller read it
		}
		rec.HighestModSeq++
		m.ModSeq = rec.HighestModSeq
		m.Sealed = up.Sealed
		putMessage(msgs, m)
		res.ModSeqs[i] = m.ModSeq
		a.emit(Event{User: p.User, Kind: schema.ChangeFlags, Mailbox: p.Mailbox, UID: m.UID, Message: m})
	}
	u.putMailbox(rec)
	return res
}

func (a *applier) copy(p *schema.Copy) *schema.Result {
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	src, dst := u.mailbox(p.Source), u.mailbox(p.Dest)
	if src == nil || dst == nil {
		return fail(schema.CodeNoSuchMailbox)
	}
	if uint64(dst.UIDNext)+uint64(len(p.Items)) >= math.MaxUint32 {
		return fail(schema.CodeInvalid)
	}
	for _, it := range p.Items {
		if it.Message.IsZero() {
			return fail(schema.CodeInvalid)
		}
	}
	if (p.Quota != 0 || p.MessageQuota != 0) && !p.Move {
		var add, n uint64
		srcMsgs := u.msgs(p.Source, false)
		for _, it := range p.Items {
			if m := getMessage(srcMsgs, it.UID); m != nil {
				add += m.Size
				n++
			}
		}
		if n > 0 && u.overQuota(add, n, p.Quota, p.MessageQuota) {
			return fail(schema.CodeOverQuota)
		}
	}
	sameBox := p.Source == p.Dest
	if sameBox {
		dst = src
	}
	srcMsgs := u.msgs(p.Source, false)
	dstMsgs := u.msgs(p.Dest, true)
	if sameBox {
		srcMsgs = dstMsgs
	}
	res := &schema.Result{UIDs: make([]schema.UID, len(p.Items))}
	for i, it := range p.Items {
		m := getMessage(srcMsgs, it.UID)
		if m == nil {
			continue
		}
		uid := dst.UIDNext
		dst.UIDNext++
		dst.HighestModSeq++
		dst.Messages++
		dst.Size += m.Size
		cp := &schema.MessageRecord{UID: uid, ID: it.Message, Blob: m.Blob, Size: m.Size, ModSeq: dst.HighestModSeq, Sealed: it.Sealed}
		putMessage(dstMsgs, cp)
		res.UIDs[i] = uid
		if p.Move {
			// The blob moves with the message: its reference count stays.
			must(srcMsgs.Delete(u32Key(uint32(m.UID))))
			src.Messages--
			src.Size -= m.Size
			src.HighestModSeq++
			a.emit(Event{User: p.User, Kind: schema.ChangeExpunged, Mailbox: p.Source, UID: m.UID})
		} else {
			u.addBlobRef(m.Blob)
		}
		a.emit(Event{User: p.User, Kind: schema.ChangeAdded, Mailbox: p.Dest, UID: uid, Message: cp})
	}
	if !sameBox {
		u.putMailbox(src)
	}
	u.putMailbox(dst)
	res.UIDValidity = dst.UIDValidity
	return res
}

func (a *applier) expunge(p *schema.Expunge) *schema.Result {
	u, rec, failed := a.userMailbox(p.User, p.Mailbox)
	if failed != nil {
		return failed
	}
	msgs := u.msgs(p.Mailbox, false)
	res := &schema.Result{}
	for _, t := range p.Targets {
		m := getMessage(msgs, t.UID)
		if m == nil || (t.ModSeq != 0 && m.ModSeq != t.ModSeq) {
			continue
		}
		must(msgs.Delete(u32Key(uint32(m.UID))))
		u.releaseBlob(m.Blob)
		rec.Messages--
		rec.Size -= m.Size
		rec.HighestModSeq++
		res.UIDs = append(res.UIDs, m.UID)
		a.emit(Event{User: p.User, Kind: schema.ChangeExpunged, Mailbox: p.Mailbox, UID: m.UID})
	}
	u.putMailbox(rec)
	return res
}
