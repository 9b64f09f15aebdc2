// Package statedamage changes a stored piece or record of a message in a replica's
// state file the way a failing disk does, other bytes of the same
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
// big-endian uid -> schema.MessageRecord. raftstore's tests use
// this package on its own files, so a change of layout fails them.
var (
	bucketMail = []byte("mail")
	ubChunks   = []byte("chunks")
	ubSearch   = []byte("search")
	ubMboxes   = []byte("mboxes")
	ubMsgs     = []byte("msgs")
	keyChunk   = []byte{0}
)

// Chunk flips a bit in the middle of chunk index of a user's blob
// (0 is its header section) in the state file at path.
func Chunk(path string, user, blob schema.ID, index uint32) error {
	key := binary.BigEndian.AppendUint32(append([]byte(nil), blob[:]...), index)
	return damage(path, user, func(u *bbolt.Bucket) (*bbolt.Bucket, []byte) {
		b := u.Bucket(ubChunks)
		if b == nil {
			return nil, nil
		}
		if nb := b.Bucket(key); nb != nil {
			return nb, keyChunk
		}
		return b, key
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
	return damageRecord(path, user, find, func(v []byte) ([]byte, error) {
		changed := append([]byte(nil), v...)
		changed[len(changed)/2] ^= 0x40
		return changed, nil
	})
}

// damageRecord replaces the value find names with what change makes of
// a copy of it.
func damageRecord(path string, user schema.ID, find func(u *bbolt.Bucket) (*bbolt.Bucket, []byte), change func(v []byte) ([]byte, error)) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return db.Update(func(tx *bbolt.Tx) error {
		var u *bbolt.Bucket
		if m := tx.Bucket(bucketMail); m != nil {
			u = m.Bucket(user[:])
		}
		if u == nil {
			return fmt.Errorf("no mail of user %s in %s", user, path)
		}
		b, key := find(u)
		var v []byte
		if b != nil {
			v = b.Get(key)
		}
		if len(v) == 0 {
			return fmt.Errorf("no such value of user %s in %s", user, path)
		}
		changed, err := change(bytes.Clone(v))
		if err != nil {
			return err
		}
		return b.Put(key, changed)
	})
}
