package raftstore

import (
	"bytes"
	"crypto/sha256"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// repairBlob puts back a piece of a blob whose copy on some replica did
// not open (schema.RepairBlob). Only a replica whose piece has the
// length of the good copy and other bytes writes anything; it counts the
// repair, so its node tells which disk handed back other bytes.
func (a *applier) repairBlob(p *schema.RepairBlob) *schema.Result {
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	if u.blob(p.Blob) == nil {
		return ok() // expunged since: nothing to mend
	}
	var cur []byte
	var put func()
	if p.SearchRecord {
		if b := u.b.Bucket(ubSearch); b != nil {
			cur = b.Get(p.Blob[:])
		}
		put = func() { u.putSearchRecord(p.Blob, p.Sealed) }
	} else {
		key := chunkKey(p.Blob, p.Index)
		cur = getChunk(u.chunks, key)
		put = func() { putChunk(u.chunks, key, p.Sealed) }
	}
	switch {
	case cur == nil:
		return fail(schema.CodeNoSuchMessage)
	case len(cur) != len(p.Sealed):
		// Damage to a stored value keeps its length; other bytes of
		// another length are not this piece's.
		return fail(schema.CodeInvalid)
	case bytes.Equal(cur, p.Sealed):
		return ok()
	}
	put()
	a.repaired++
	return ok()
}

// repairRecord puts back the sealed part of a mailbox or message record
// whose copy on some replica did not open (schema.RepairRecord). Only a
// replica that holds exactly the damaged bytes the entry names writes
// anything: the damaged replica, if nothing changed the record since it
// was read there. It counts the repair, as repairBlob does.
func (a *applier) repairRecord(p *schema.RepairRecord) *schema.Result {
	u := a.user(p.User)
	if u == nil {
		return fail(schema.CodeNoSuchUser)
	}
	mbox := u.mailbox(p.Mailbox)
	if mbox == nil {
		return ok() // deleted since: nothing to mend
	}
	var cur []byte
	var put func()
	if p.UID == 0 {
		cur = mbox.Sealed
		put = func() { mbox.Sealed = p.Sealed; u.putMailbox(mbox) }
	} else {
		msgs := u.msgs(p.Mailbox, false)
		m := getMessage(msgs, p.UID)
		if m == nil {
			return ok() // expunged since
		}
		cur = m.Sealed
		put = func() { m.Sealed = p.Sealed; putMessage(msgs, m) }
	}
	if len(cur) != len(p.Sealed) {
		return ok() // changed since, or not these bytes' record
	}
	if sum := sha256.Sum256(cur); !bytes.Equal(sum[:], p.Damaged) {
		return ok()
	}
	put()
	a.repaired++
	return ok()
}
