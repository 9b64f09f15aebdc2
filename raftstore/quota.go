package raftstore

import (
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Quotas (RFC 9208 STORAGE): a user's usage is the sum of the sizes of
// the messages in all their mailboxes, a copy counting as much as the
// original. The mailbox records already carry each mailbox's size
// (STATUS=SIZE), kept in the same transaction as every change of
// messages, so the usage is exact on every replica, after a restart and
// in every snapshot, without a counter of its own. The limit travels
// with the command that adds mail (Append, AppendBatch, Copy), as the
// proposer's directory knows it: the FSM compares at apply time, one
// command after another, so two nodes delivering at once cannot both
// take a user over the limit.

// usage returns the bytes and the number of all the user's messages.
func (u *userMail) usage() (bytes, messages uint64) {
	c := u.mailboxes.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var m schema.MailboxRecord
		if m.Unmarshal(v) == nil {
			bytes += m.Size
			messages += uint64(m.Messages)
		}
	}
	return bytes, messages
}

// overQuota reports whether adding n messages of size bytes would take
// the user over a limit (0: none) in bytes or in messages.
func (u *userMail) overQuota(size, n, quota, messageQuota uint64) bool {
	if quota == 0 && messageQuota == 0 {
		return false
	}
	b, m := u.usage()
	return (quota != 0 && b+size > quota) || (messageQuota != 0 && m+n > messageQuota)
}

// appendBatch applies a MULTIAPPEND: every message is checked before any
// is stored, so the batch stores all or nothing.
func (a *applier) appendBatch(p *schema.AppendBatch) *schema.Result {
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	if len(p.Items) == 0 {
		return fail(schema.CodeInvalid)
	}
	blobs := make(map[schema.ID]bool, len(p.Items))
	var size uint64
	var mboxID schema.ID
	var rec *schema.MailboxRecord
	for i := range p.Items {
		it := &p.Items[i]
		if it.User != p.User || it.Mailbox != p.Mailbox || blobs[it.Blob] {
			return fail(schema.CodeInvalid)
		}
		blobs[it.Blob] = true
		id, r, failed := a.checkAppend(u, it, len(p.Items))
		if failed != nil {
			return failed
		}
		mboxID, rec = id, r
		size += it.Size
	}
	if u.overQuota(size, uint64(len(p.Items)), p.Quota, p.MessageQuota) {
		return fail(schema.CodeOverQuota)
	}
	res := &schema.Result{UIDValidity: rec.UIDValidity, UIDs: make([]schema.UID, len(p.Items))}
	for i := range p.Items {
		res.UIDs[i] = a.commitAppend(u, &p.Items[i], mboxID, rec)
	}
	u.putMailbox(rec)
	return res
}

// Usage returns the bytes and the number of the user's messages (RFC
// 9208 STORAGE and MESSAGE), as the FSM counts them against a quota.
func (r *Reader) Usage(user schema.ID) (bytes uint64, messages uint64, err error) {
	mbs, err := r.Mailboxes(user)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range mbs {
		bytes += m.Size
		messages += uint64(m.Messages)
	}
	return bytes, messages, nil
}
