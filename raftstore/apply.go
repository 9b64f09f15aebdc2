package raftstore

import (
	"bytes"
	"encoding/binary"
	"math"

	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Sub-buckets and keys of a user's bucket in a mail shard.
var (
	ubMailboxes = []byte("mboxes") // mailbox id -> MailboxRecord
	ubNames     = []byte("names")  // name key -> mailbox id
	ubMessages  = []byte("msgs")   // mailbox id -> bucket of uid -> MessageRecord
	ubBlobs     = []byte("blobs")  // blob id -> BlobRecord
	ubChunks    = []byte("chunks") // blob id | chunk index -> sealed chunk (see putChunk)
	ubKeyState  = []byte("state")  // UserState

	userSubBuckets = [][]byte{ubMailboxes, ubNames, ubMessages, ubBlobs, ubChunks}
)

// applier applies one decoded command inside a write transaction. Every
// op checks all its preconditions before it writes, so a failed command
// leaves no partial change behind in the shared batch transaction.
type applier struct {
	tx     *bbolt.Tx
	cmd    schema.Command
	index  uint64
	events []Event
	// users gathers every user whose mail the command reads or writes
	// (see groupUsers).
	users map[schema.ID]struct{}
	// repaired counts the damaged pieces a RepairBlob, RepairRecord or
	// RepairOutbound wrote over.
	repaired int
}

func fail(code schema.ErrCode) *schema.Result { return &schema.Result{Code: code} }

func ok() *schema.Result { return &schema.Result{} }

// must turns a bbolt write error into a panic. Writes inside an open
// read-write transaction fail only for programmer errors (empty or
// oversize keys, a closed transaction), never because of input.
func must(err error) {
	if err != nil {
		panic("raftstore: bbolt write: " + err.Error())
	}
}

func (a *applier) apply() *schema.Result {
	switch p := a.cmd.Payload.(type) {
	case *schema.PutDomain:
		return a.putDomain(p)
	case *schema.DeleteDomain:
		return a.deleteDomain(p)
	case *schema.PutUser:
		return a.putUser(p)
	case *schema.DeleteUser:
		return a.deleteUser(p)
	case *schema.PutSetting:
		return a.putSetting(p)
	case *schema.PutSettings:
		return a.putSettings(p)
	case *schema.InitUser:
		return a.initUser(p)
	case *schema.DeleteUserData:
		return a.deleteUserData(p)
	case *schema.CreateMailbox:
		return a.createMailbox(p)
	case *schema.DeleteMailbox:
		return a.deleteMailbox(p)
	case *schema.RenameMailbox:
		return a.renameMailbox(p)
	case *schema.UpdateMailbox:
		return a.updateMailbox(p)
	case *schema.StageChunk:
		return a.stageChunk(p)
	case *schema.Append:
		return a.append(p)
	case *schema.AppendBatch:
		return a.appendBatch(p)
	case *schema.SetAttrs:
		return a.setAttrs(p)
	case *schema.Copy:
		return a.copy(p)
	case *schema.Expunge:
		return a.expunge(p)
	case *schema.ExpireStaged:
		return a.expireStaged(p)
	case *schema.SwapSetting:
		return a.swapSetting(p)
	case *schema.Lease:
		return a.lease(p)
	case *schema.Spool:
		return a.spool(p)
	case *schema.SpoolDone:
		return a.spoolDone(p)
	case *schema.SwapUserValue:
		return a.swapUserValue(p)
	case *schema.Enqueue:
		return a.enqueue(p)
	case *schema.UpdateOutbound:
		return a.updateOutbound(p)
	case *schema.DeleteOutbound:
		return a.deleteOutbound(p)
	case *schema.RepairBlob:
		return a.repairBlob(p)
	case *schema.RepairRecord:
		return a.repairRecord(p)
	case *schema.RepairOutbound:
		return a.repairOutbound(p)
	}
	return fail(schema.CodeInvalid)
}

func (a *applier) emit(e Event) {
	e.Index = a.index
	e.ReqID = a.cmd.ReqID
	a.events = append(a.events, e)
}

// userMail is a user's bucket in a mail shard with its sub-buckets.
type userMail struct {
	b, mailboxes, names, messages, blobs, chunks *bbolt.Bucket
}

func openUserMail(b *bbolt.Bucket) *userMail {
	if b == nil {
		return nil
	}
	return &userMail{
		b:         b,
		mailboxes: b.Bucket(ubMailboxes),
		names:     b.Bucket(ubNames),
		messages:  b.Bucket(ubMessages),
		blobs:     b.Bucket(ubBlobs),
		chunks:    b.Bucket(ubChunks),
	}
}

// user opens a user's mail for the command, nil when the shard holds
// none. Every access to a user's bucket goes through here or mailOf.
func (a *applier) user(id schema.ID) *userMail {
	return openUserMail(a.mailOf(id).Bucket(id[:]))
}

// mailOf returns the shard's bucket of all users' mail, noting that the
// command works on id's.
func (a *applier) mailOf(id schema.ID) *bbolt.Bucket {
	a.users[id] = struct{}{}
	return a.tx.Bucket(bucketMail)
}

func (u *userMail) state() schema.UserState {
	var s schema.UserState
	if v := u.b.Get(ubKeyState); v != nil {
		_ = s.Unmarshal(v) // written by this package; a decode failure leaves zero values
	}
	return s
}

func (u *userMail) putState(s schema.UserState) { must(u.b.Put(ubKeyState, s.Marshal())) }

func (u *userMail) mailbox(id schema.ID) *schema.MailboxRecord {
	v := u.mailboxes.Get(id[:])
	if v == nil {
		return nil
	}
	var m schema.MailboxRecord
	if m.Unmarshal(v) != nil {
		return nil
	}
	return &m
}

func (u *userMail) putMailbox(m *schema.MailboxRecord) { must(u.mailboxes.Put(m.ID[:], m.Marshal())) }

// msgs returns the messages bucket of a mailbox, creating it if asked.
func (u *userMail) msgs(mbox schema.ID, create bool) *bbolt.Bucket {
	if b := u.messages.Bucket(mbox[:]); b != nil || !create {
		return b
	}
	b, err := u.messages.CreateBucket(mbox[:])
	must(err)
	return b
}

func getMessage(msgs *bbolt.Bucket, uid schema.UID) *schema.MessageRecord {
	if msgs == nil {
		return nil
	}
	v := msgs.Get(u32Key(uint32(uid)))
	if v == nil {
		return nil
	}
	var m schema.MessageRecord
	if m.Unmarshal(v) != nil {
		return nil
	}
	return &m
}

func putMessage(msgs *bbolt.Bucket, m *schema.MessageRecord) {
	must(msgs.Put(u32Key(uint32(m.UID)), m.Marshal()))
}

func (u *userMail) blob(id schema.ID) *schema.BlobRecord {
	v := u.blobs.Get(id[:])
	if v == nil {
		return nil
	}
	var b schema.BlobRecord
	if b.Unmarshal(v) != nil {
		return nil
	}
	return &b
}

func chunkKey(blob schema.ID, i uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), blob[:]...), i)
}

// largeChunk is the size from which a sealed chunk is stored as the only
// value of a bucket of its own, named by the chunk's key, instead of as a
// value of the chunks bucket. bbolt keeps values in leaf pages and never
// splits a leaf of four keys or fewer, so a leaf of the chunks bucket held
// two to four large chunks, and committing one more chunk rewrote its
// whole leaf, neighbours included: measured on 64 KiB mail, the state
// file received about three times the bytes of the chunks it stored. A
// chunk in a bucket of its own is written once; the chunks bucket's leaf
// holds its 16-byte bucket header. Smaller chunks stay plain values: a
// bucket of their own would cost a page each.
const largeChunk = 4 << 10

// keyChunk is the one key of a large chunk's bucket.
var keyChunk = []byte{0}

// putChunk stores a sealed chunk under key in b (a bucket of chunks: a
// user's chunks, the staged, spool or outbound chunks), as a
// plain value or, when large, in a bucket of its own. Whatever the key
// held before is replaced.
func putChunk(b *bbolt.Bucket, key, v []byte) {
	deleteChunk(b, key)
	if len(v) < largeChunk {
		must(b.Put(key, v))
		return
	}
	nb, err := b.CreateBucket(key)
	must(err)
	must(nb.Put(keyChunk, v))
}

// getChunk returns the chunk stored under key in b, in either form (nil
// when absent). The slice is valid for the transaction's life only.
func getChunk(b *bbolt.Bucket, key []byte) []byte {
	if v := b.Get(key); v != nil {
		return v
	}
	if nb := b.Bucket(key); nb != nil {
		return nb.Get(keyChunk)
	}
	return nil
}

// deleteChunk removes the chunk stored under key in b, in either form.
func deleteChunk(b *bbolt.Bucket, key []byte) {
	if b.Bucket(key) != nil {
		must(b.DeleteBucket(key))
		return
	}
	must(b.Delete(key))
}

// addBlobRef counts one more message referring to a blob.
func (u *userMail) addBlobRef(id schema.ID) {
	b := u.blob(id)
	if b == nil {
		return
	}
	b.Refs++
	must(u.blobs.Put(id[:], b.Marshal()))
}

// releaseBlob drops one reference and deletes the blob with the last one.
func (u *userMail) releaseBlob(id schema.ID) {
	b := u.blob(id)
	if b == nil {
		return
	}
	if b.Refs > 1 {
		b.Refs--
		must(u.blobs.Put(id[:], b.Marshal()))
		return
	}
	for i := uint32(0); i < b.Chunks; i++ {
		deleteChunk(u.chunks, chunkKey(id, i))
	}
	must(u.blobs.Delete(id[:]))
	u.deleteSearchRecord(id)
}

// nextUIDValidity returns a UIDVALIDITY greater than any the user had,
// derived from the command's time so values also differ across users.
func (a *applier) nextUIDValidity(s *schema.UserState) uint32 {
	v := uint32(min(a.cmd.Time/1e9, math.MaxUint32-1))
	if v <= s.LastUIDValidity {
		v = s.LastUIDValidity + 1
	}
	if v == 0 {
		v = 1
	}
	s.LastUIDValidity = v
	return v
}

func stagedKey(user, blob schema.ID, i uint32) []byte {
	k := make([]byte, 0, 36)
	k = append(k, user[:]...)
	k = append(k, blob[:]...)
	return binary.BigEndian.AppendUint32(k, i)
}

func (a *applier) putSetting(p *schema.PutSetting) *schema.Result {
	if p.Key == "" || len(p.Key) > bbolt.MaxKeySize {
		return fail(schema.CodeInvalid)
	}
	b := a.tx.Bucket(bucketSettings)
	if p.Value == nil {
		must(b.Delete([]byte(p.Key)))
	} else {
		must(b.Put([]byte(p.Key), p.Value))
	}
	return ok()
}

// putSettings stores every setting of p or, when a key is invalid,
// none of them.
func (a *applier) putSettings(p *schema.PutSettings) *schema.Result {
	if len(p.Settings) == 0 || len(p.Settings) > schema.MaxBatchSettings {
		return fail(schema.CodeInvalid)
	}
	for i := range p.Settings {
		if k := p.Settings[i].Key; k == "" || len(k) > bbolt.MaxKeySize {
			return fail(schema.CodeInvalid)
		}
	}
	for i := range p.Settings {
		a.putSetting(&p.Settings[i])
	}
	return ok()
}

// stageChunk keeps a chunk for a later Append (User is the owner) or
// Spool (User is the spool's id). Chunks nobody commits expire.
func (a *applier) stageChunk(p *schema.StageChunk) *schema.Result {
	if p.User.IsZero() || p.Blob.IsZero() {
		return fail(schema.CodeInvalid)
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(a.cmd.Time))
	putChunk(a.tx.Bucket(bucketStaged), stagedKey(p.User, p.Blob, p.Index), append(v, p.Sealed...))
	return ok()
}

func (a *applier) expireStaged(p *schema.ExpireStaged) *schema.Result {
	b := a.tx.Bucket(bucketStaged)
	var expired [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			v = getChunk(b, k) // a large chunk, in a bucket of its own
		}
		if len(v) < 8 || int64(binary.BigEndian.Uint64(v[:8])) < p.Before {
			expired = append(expired, bytes.Clone(k))
		}
	}
	for _, k := range expired {
		deleteChunk(b, k)
	}
	return ok()
}
