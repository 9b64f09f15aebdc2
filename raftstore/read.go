package raftstore

import (
	"bytes"

	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Reader reads a consistent view of a shard's state inside Shard.View.
// Everything it returns is a copy, valid after View returns.
type Reader struct{ tx *bbolt.Tx }

// AppliedIndex returns the index of the last applied log entry.
func (r *Reader) AppliedIndex() uint64 { return getU64(r.tx.Bucket(bucketSys), keyApplied) }

// SkippedEntries returns how many log entries this replica could not
// decode and skipped; above zero, it may lack what they wrote.
func (r *Reader) SkippedEntries() uint64 { return getU64(r.tx.Bucket(bucketSys), keySkipped) }

// Domains returns every domain record.
func (r *Reader) Domains() ([]schema.DomainRecord, error) {
	var out []schema.DomainRecord
	err := r.tx.Bucket(bucketDomains).ForEach(func(_, v []byte) error {
		var d schema.DomainRecord
		if err := d.Unmarshal(v); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

// DomainByName returns the domain with the given name key.
func (r *Reader) DomainByName(nk schema.NameKey) (schema.DomainRecord, error) {
	id := r.tx.Bucket(bucketDomainNames).Get(nk[:])
	if id == nil {
		return schema.DomainRecord{}, schema.ErrNoSuchDomain
	}
	var did schema.ID
	copy(did[:], id)
	return r.Domain(did)
}

// Domain returns a domain by id.
func (r *Reader) Domain(id schema.ID) (schema.DomainRecord, error) {
	var d schema.DomainRecord
	v := r.tx.Bucket(bucketDomains).Get(id[:])
	if v == nil {
		return d, schema.ErrNoSuchDomain
	}
	return d, d.Unmarshal(v)
}

// Users returns every user record of the meta shard.
func (r *Reader) Users() ([]schema.UserRecord, error) {
	var out []schema.UserRecord
	err := r.tx.Bucket(bucketUsers).ForEach(func(_, v []byte) error {
		var u schema.UserRecord
		if err := u.Unmarshal(v); err != nil {
			return err
		}
		out = append(out, u)
		return nil
	})
	return out, err
}

// UserByName returns the user with the given name key.
func (r *Reader) UserByName(nk schema.NameKey) (schema.UserRecord, error) {
	id := r.tx.Bucket(bucketUserNames).Get(nk[:])
	if id == nil {
		return schema.UserRecord{}, schema.ErrNoSuchUser
	}
	var uid schema.ID
	copy(uid[:], id)
	return r.User(uid)
}

// User returns a user record by id.
func (r *Reader) User(id schema.ID) (schema.UserRecord, error) {
	var u schema.UserRecord
	v := r.tx.Bucket(bucketUsers).Get(id[:])
	if v == nil {
		return u, schema.ErrNoSuchUser
	}
	return u, u.Unmarshal(v)
}

// Setting returns a cluster setting, or nil if unset.
func (r *Reader) Setting(key string) []byte {
	return bytes.Clone(r.tx.Bucket(bucketSettings).Get([]byte(key)))
}

func (r *Reader) userMail(user schema.ID) (*userMail, error) {
	u := openUserMail(r.tx.Bucket(bucketMail).Bucket(user[:]))
	if u == nil {
		return nil, schema.ErrNoSuchUser
	}
	return u, nil
}

// HasUser reports whether a mail shard holds state for user.
func (r *Reader) HasUser(user schema.ID) bool {
	return r.tx.Bucket(bucketMail).Bucket(user[:]) != nil
}

// UserState returns a user's bookkeeping in a mail shard.
func (r *Reader) UserState(user schema.ID) (schema.UserState, error) {
	u, err := r.userMail(user)
	if err != nil {
		return schema.UserState{}, err
	}
	return u.state(), nil
}

// Mailboxes returns every mailbox record of a user.
func (r *Reader) Mailboxes(user schema.ID) ([]schema.MailboxRecord, error) {
	u, err := r.userMail(user)
	if err != nil {
		return nil, err
	}
	var out []schema.MailboxRecord
	err = u.mailboxes.ForEach(func(_, v []byte) error {
		var m schema.MailboxRecord
		if err := m.Unmarshal(v); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// Mailbox returns a mailbox record by id.
func (r *Reader) Mailbox(user, id schema.ID) (schema.MailboxRecord, error) {
	u, err := r.userMail(user)
	if err != nil {
		return schema.MailboxRecord{}, err
	}
	m := u.mailbox(id)
	if m == nil {
		return schema.MailboxRecord{}, schema.ErrNoSuchMailbox
	}
	return *m, nil
}

// MailboxByName returns a mailbox record by name key.
func (r *Reader) MailboxByName(user schema.ID, nk schema.NameKey) (schema.MailboxRecord, error) {
	u, err := r.userMail(user)
	if err != nil {
		return schema.MailboxRecord{}, err
	}
	id := u.names.Get(nk[:])
	if id == nil {
		return schema.MailboxRecord{}, schema.ErrNoSuchMailbox
	}
	var mid schema.ID
	copy(mid[:], id)
	return r.Mailbox(user, mid)
}

// Messages returns the message records of a mailbox in UID order.
func (r *Reader) Messages(user, mbox schema.ID) ([]schema.MessageRecord, error) {
	u, err := r.userMail(user)
	if err != nil {
		return nil, err
	}
	rec := u.mailbox(mbox)
	if rec == nil {
		return nil, schema.ErrNoSuchMailbox
	}
	msgs := u.msgs(mbox, false)
	if msgs == nil {
		return nil, nil
	}
	out := make([]schema.MessageRecord, 0, rec.Messages)
	err = msgs.ForEach(func(_, v []byte) error {
		var m schema.MessageRecord
		if err := m.Unmarshal(v); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// Message returns one message record.
func (r *Reader) Message(user, mbox schema.ID, uid schema.UID) (schema.MessageRecord, error) {
	u, err := r.userMail(user)
	if err != nil {
		return schema.MessageRecord{}, err
	}
	m := getMessage(u.msgs(mbox, false), uid)
	if m == nil {
		return schema.MessageRecord{}, schema.ErrNoSuchMessage
	}
	return *m, nil
}

// Blob returns a blob record.
func (r *Reader) Blob(user, blob schema.ID) (schema.BlobRecord, error) {
	u, err := r.userMail(user)
	if err != nil {
		return schema.BlobRecord{}, err
	}
	b := u.blob(blob)
	if b == nil {
		return schema.BlobRecord{}, schema.ErrNoSuchMessage
	}
	return *b, nil
}

// MailUsers returns the users whose mail a mail shard holds.
func (r *Reader) MailUsers() []schema.ID {
	var out []schema.ID
	mail := r.tx.Bucket(bucketMail)
	if mail == nil {
		return nil
	}
	_ = mail.ForEachBucket(func(k []byte) error {
		if id, ok := idOf(k); ok {
			out = append(out, id)
		}
		return nil
	})
	return out
}

// BlobIDs returns the ids of a user's blobs, in key order.
func (r *Reader) BlobIDs(user schema.ID) ([]schema.ID, error) {
	u, err := r.userMail(user)
	if err != nil {
		return nil, err
	}
	var out []schema.ID
	err = u.blobs.ForEach(func(k, _ []byte) error {
		if id, ok := idOf(k); ok {
			out = append(out, id)
		}
		return nil
	})
	return out, err
}

// idOf reads a key that is an id.
func idOf(k []byte) (schema.ID, bool) {
	var id schema.ID
	if len(k) != len(id) {
		return id, false
	}
	copy(id[:], k)
	return id, true
}

// Chunk returns sealed chunk i of a blob.
func (r *Reader) Chunk(user, blob schema.ID, i uint32) ([]byte, error) {
	u, err := r.userMail(user)
	if err != nil {
		return nil, err
	}
	v := getChunk(u.chunks, chunkKey(blob, i))
	if v == nil {
		return nil, schema.ErrNoSuchMessage
	}
	return bytes.Clone(v), nil
}

// Stats are counts of what a shard holds, for metrics and backup manifests.
type Stats struct {
	Domains, Users, MailUsers, Mailboxes, Messages, Blobs, StagedChunks int
}

// Stats counts the records in the shard.
func (r *Reader) Stats() Stats {
	s := Stats{
		Domains:      r.tx.Bucket(bucketDomains).Stats().KeyN,
		Users:        r.tx.Bucket(bucketUsers).Stats().KeyN,
		StagedChunks: topKeys(r.tx.Bucket(bucketStaged)),
	}
	_ = r.tx.Bucket(bucketMail).ForEachBucket(func(k []byte) error {
		s.MailUsers++
		u := openUserMail(r.tx.Bucket(bucketMail).Bucket(k))
		s.Mailboxes += u.mailboxes.Stats().KeyN
		s.Blobs += u.blobs.Stats().KeyN
		_ = u.mailboxes.ForEach(func(_, v []byte) error {
			var m schema.MailboxRecord
			if m.Unmarshal(v) == nil {
				s.Messages += int(m.Messages)
			}
			return nil
		})
		return nil
	})
	return s
}

// topKeys counts the keys of b itself: a chunk in a bucket of its own is
// one (bbolt's Stats count its bucket's key too).
func topKeys(b *bbolt.Bucket) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}

// Settings returns the cluster settings whose keys start with prefix.
func (r *Reader) Settings(prefix string) map[string][]byte {
	out := map[string][]byte{}
	c := r.tx.Bucket(bucketSettings).Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		out[string(k)] = bytes.Clone(v)
	}
	return out
}

// Lease returns the holder of a lease and when it expires (Unix
// nanoseconds); ok is false when nobody holds it.
func (r *Reader) Lease(key string) (holder schema.ID, expires int64, ok bool) {
	return decodeLease(r.tx.Bucket(bucketLeases).Get([]byte(key)))
}

// Spooled returns every spooled message's record, oldest first by id
// order.
func (r *Reader) Spooled() ([]schema.SpoolRecord, error) {
	var out []schema.SpoolRecord
	err := r.tx.Bucket(bucketSpool).ForEach(func(_, v []byte) error {
		var s schema.SpoolRecord
		if err := s.Unmarshal(v); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// SpoolChunk returns sealed chunk i of a spooled message.
func (r *Reader) SpoolChunk(id schema.ID, i uint32) ([]byte, error) {
	v := getChunk(r.tx.Bucket(bucketSpoolChunks), chunkKey(id, i))
	if v == nil {
		return nil, schema.ErrNoSuchMessage
	}
	return bytes.Clone(v), nil
}

// Outbound returns every outbound queue entry's record, in id order.
func (r *Reader) Outbound() ([]schema.OutboundRecord, error) {
	var out []schema.OutboundRecord
	err := r.tx.Bucket(bucketOutbound).ForEach(func(_, v []byte) error {
		var o schema.OutboundRecord
		if err := o.Unmarshal(v); err != nil {
			return err
		}
		out = append(out, o)
		return nil
	})
	return out, err
}

// OutboundEntry returns one outbound queue entry's record
// (schema.ErrNoSuchMessage when it is gone).
func (r *Reader) OutboundEntry(id schema.ID) (schema.OutboundRecord, error) {
	var o schema.OutboundRecord
	v := r.tx.Bucket(bucketOutbound).Get(id[:])
	if v == nil {
		return o, schema.ErrNoSuchMessage
	}
	return o, o.Unmarshal(v)
}

// OutboundChunk returns sealed chunk i of an outbound queue entry.
func (r *Reader) OutboundChunk(id schema.ID, i uint32) ([]byte, error) {
	v := getChunk(r.tx.Bucket(bucketOutChunks), chunkKey(id, i))
	if v == nil {
		return nil, schema.ErrNoSuchMessage
	}
	return bytes.Clone(v), nil
}
