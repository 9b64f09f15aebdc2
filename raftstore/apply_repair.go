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
	if !sameDamage(cur, p.Damaged, p.Sealed) {
		return ok() // changed since, or not these bytes' record
	}
	put()
	a.repaired++
	return ok()
}

// repairOutbound puts back the state or a chunk of an outbound queue
// entry whose copy on some replica did not open (schema.RepairOutbound),
// on the replica that holds exactly the damaged bytes, as repairRecord
// does.
func (a *applier) repairOutbound(p *schema.RepairOutbound) *schema.Result {
	b := a.tx.Bucket(bucketOutbound)
	v := b.Get(p.ID[:])
	if v == nil {
		return ok() // delivered or dropped since
	}
	var rec schema.OutboundRecord
	if rec.Unmarshal(v) != nil {
		return fail(schema.CodeInvalid)
	}
	var cur []byte
	var put func()
	if p.Part == 0 {
		cur = rec.State
		put = func() { rec.State = p.Sealed; must(b.Put(p.ID[:], rec.Marshal())) }
	} else {
		if p.Part > rec.Chunks {
			return fail(schema.CodeNoSuchMessage)
		}
		chunks := a.tx.Bucket(bucketOutChunks)
		key := chunkKey(p.ID, p.Part-1)
		cur = getChunk(chunks, key)
		put = func() { putChunk(chunks, key, p.Sealed) }
	}
	if !sameDamage(cur, p.Damaged, p.Sealed) {
		return ok()
	}
	put()
	a.repaired++
	return ok()
}

// sameDamage reports whether cur, a sealed value as this replica holds
// it, is the damaged copy a repair names by the SHA-256 of its bytes,
// and the good copy has its length.
func sameDamage(cur, damaged, good []byte) bool {
	if cur == nil || len(cur) != len(good) {
		return false
	}
	sum := sha256.Sum256(cur)
	return bytes.Equal(sum[:], damaged)
}
