// Package statedamage changes a stored piece or record of a message, or
// of an outbound queue entry, in a replica's state file the way a
// failing disk does, other bytes of the same
// length where bbolt checks nothing, for the tests of what a node does
// about a copy that does not open. The state file must be closed.
package statedamage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// raftstore's layout of a user's mail (raftstore/apply.go, search.go):
// bucket "mail", then the user's bucket by id; in it, "chunks" holds
// blob id | big-endian chunk index -> sealed chunk, or, for a chunk of
// 4 KiB or more, a bucket under that key with the chunk under {0};
// "search" holds blob id -> sealed search record; "mboxes" holds
// mailbox id -> schema.MailboxRecord, "msgs" a bucket per mailbox id of
// big-endian uid -> schema.MessageRecord. At the top, "outbound" holds
// queue entry id -> schema.OutboundRecord and "outbound_chunks" its
// chunks keyed as a blob's. raftstore's tests use
// this package on its own files, so a change of layout fails them.
var (
	bucketMail = []byte("mail")
	ubChunks   = []byte("chunks")
	ubSearch   = []byte("search")
	ubMboxes   = []byte("mboxes")
	ubMsgs     = []byte("msgs")
	keyChunk   = []byte{0}

	bucketOutbound  = []byte("outbound")
	bucketOutChunks = []byte("outbound_chunks")
)

// Chunk flips a bit in the middle of chunk index of a user's blob
// (0 is its header section) in the state file at path.
func Chunk(path string, user, blob schema.ID, index uint32) error {
	key := binary.BigEndian.AppendUint32(append([]byte(nil), blob[:]...), index)
	return damage(path, user, func(u *bbolt.Bucket) (*bbolt.Bucket, []byte) {
		return chunkIn(u.Bucket(ubChunks), key)
	})
}

// SearchRecord flips a bit in the middle of the search record of a
// user's blob in the state file at path.
func SearchRecord(path string, user, blob schema.ID) error {
	return damage(path, user, func(u *bbolt.Bucket) (*bbolt.Bucket, []byte) {
		return u.Bucket(ubSearch), blob[:]
	})
}

// MailboxRecord flips a bit in the middle of the sealed part (name,
// special use, subscription) of a user's mailbox record in the state
// file at path.
func MailboxRecord(path string, user, mbox schema.ID) error {
	return damageRecord(path, user, func(u *bbolt.Bucket) (*bbolt.Bucket, []byte) {
		return u.Bucket(ubMboxes), mbox[:]
	}, func(v []byte) ([]byte, error) {
		var m schema.MailboxRecord
		if err := m.Unmarshal(v); err != nil || len(m.Sealed) == 0 {
			return nil, fmt.Errorf("mailbox record %s: %v, %d sealed bytes", mbox, err, len(m.Sealed))
		}
		m.Sealed[len(m.Sealed)/2] ^= 0x40
		return m.Marshal(), nil
	})
}

// MessageRecord flips a bit in the middle of the sealed part (flags,
// internal date) of message uid's record in a user's mailbox in the
// state file at path.
func MessageRecord(path string, user, mbox schema.ID, uid schema.UID) error {
	return damageRecord(path, user, func(u *bbolt.Bucket) (*bbolt.Bucket, []byte) {
		var b *bbolt.Bucket
		if ms := u.Bucket(ubMsgs); ms != nil {
			b = ms.Bucket(mbox[:])
		}
		return b, binary.BigEndian.AppendUint32(nil, uint32(uid))
	}, func(v []byte) ([]byte, error) {
		var m schema.MessageRecord
		if err := m.Unmarshal(v); err != nil || len(m.Sealed) == 0 {
			return nil, fmt.Errorf("message record %d: %v, %d sealed bytes", uid, err, len(m.Sealed))
		}
		m.Sealed[len(m.Sealed)/2] ^= 0x40
		return m.Marshal(), nil
	})
}

func damage(path string, user schema.ID, find func(u *bbolt.Bucket) (*bbolt.Bucket, []byte)) error {
	return damageRecord(path, user, find, flipMiddle)
}

// flipMiddle changes a bit in the middle of v.
func flipMiddle(v []byte) ([]byte, error) {
	v[len(v)/2] ^= 0x40
	return v, nil
}

// OutboundState flips a bit in the middle of the sealed state of the
// outbound queue entry id in the state file at path.
func OutboundState(path string, id schema.ID) error {
	return changeValue(path, "outbound queue entry "+id.String(), func(tx *bbolt.Tx) (*bbolt.Bucket, []byte) {
		return tx.Bucket(bucketOutbound), id[:]
	}, func(v []byte) ([]byte, error) {
		var rec schema.OutboundRecord
		if err := rec.Unmarshal(v); err != nil || len(rec.State) == 0 {
			return nil, fmt.Errorf("outbound record %s: %v, %d sealed bytes", id, err, len(rec.State))
		}
		rec.State[len(rec.State)/2] ^= 0x40
		return rec.Marshal(), nil
	})
}

// OutboundChunk flips a bit in the middle of chunk index of the message
// of the outbound queue entry id in the state file at path.
func OutboundChunk(path string, id schema.ID, index uint32) error {
	key := binary.BigEndian.AppendUint32(append([]byte(nil), id[:]...), index)
	return changeValue(path, "chunk of outbound queue entry "+id.String(), func(tx *bbolt.Tx) (*bbolt.Bucket, []byte) {
		return chunkIn(tx.Bucket(bucketOutChunks), key)
	}, flipMiddle)
}

// chunkIn returns where a chunk stored under key in b is: under the key,
// or, for a large one, under {0} in a bucket of that name.
func chunkIn(b *bbolt.Bucket, key []byte) (*bbolt.Bucket, []byte) {
	if b == nil {
		return nil, nil
	}
	if nb := b.Bucket(key); nb != nil {
		return nb, keyChunk
	}
	return b, key
}

// damageRecord replaces the value of user's mail that find names with
// what change makes of a copy of it.
func damageRecord(path string, user schema.ID, find func(u *bbolt.Bucket) (*bbolt.Bucket, []byte), change func(v []byte) ([]byte, error)) error {
	return changeValue(path, "user "+user.String(), func(tx *bbolt.Tx) (*bbolt.Bucket, []byte) {
		var u *bbolt.Bucket
		if m := tx.Bucket(bucketMail); m != nil {
			u = m.Bucket(user[:])
		}
		if u == nil {
			return nil, nil
		}
		return find(u)
	}, change)
}

// changeValue replaces the value find names with what change makes of a
// copy of it; what names the value for errors.
func changeValue(path, what string, find func(tx *bbolt.Tx) (*bbolt.Bucket, []byte), change func(v []byte) ([]byte, error)) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return db.Update(func(tx *bbolt.Tx) error {
		b, key := find(tx)
		var v []byte
		if b != nil {
			v = b.Get(key)
		}
		if len(v) == 0 {
			return fmt.Errorf("no such value of %s in %s", what, path)
		}
		changed, err := change(bytes.Clone(v))
		if err != nil {
			return err
		}
		return b.Put(key, changed)
	})
}
