package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// logStore is a replica's Raft log and stable store: raft.db, a bbolt
// file with raft-boltdb v2's layout (bucket "logs": big-endian index ->
// msgpack-encoded raft.Log; bucket "conf": key -> value), which it reads
// and writes in place. It differs in one way: an entry of largeEntry
// bytes or more is stored as the only value of a bucket of its own, named
// by its index. Entries carry whole messages, and bbolt never splits a
// leaf of four keys or fewer, so with plain values each append rewrote
// the last leaf with the two or three large entries before it (measured
// on 64 KiB mail: about three times the bytes of the entries appended).
// In a bucket of its own an entry is written once. A raft.db written by
// raft-boltdb opens as it is; raft-boltdb cannot read the large entries
// this store writes.
type logStore struct {
	db *bbolt.DB
}

var (
	bucketLogs = []byte("logs")
	bucketConf = []byte("conf")
	// keyEntry is the one key of a large entry's bucket.
	keyEntry = []byte{0}
)

// largeEntry is the encoded size from which an entry gets a bucket of its
// own (a page's worth: smaller entries share leaves cheaply).
const largeEntry = 4 << 10

// errKeyNotFound is what Get returns for a key never set (raft-boltdb's
// text, which hashicorp/raft matches on for a fresh store).
var errKeyNotFound = errors.New("not found")

// openLogStore opens (creating) the log store at path. The freelist is
// not synced: the file holds only the log, rewritten as it is truncated.
func openLogStore(path string, opts *bbolt.Options) (*logStore, error) {
	db, err := openBolt(path, opts, [][]byte{bucketLogs, bucketConf})
	if err != nil {
		return nil, err
	}
	return &logStore{db: db}, nil
}

// Close closes the file.
func (s *logStore) Close() error { return s.db.Close() }

// FirstIndex returns the first index written, 0 for none.
func (s *logStore) FirstIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// LastIndex returns the last index written, 0 for none.
func (s *logStore) LastIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// GetLog reads the entry at index idx into log.
func (s *logStore) GetLog(idx uint64, log *raft.Log) error {
	return s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		k := u64Key(idx)
		v := b.Get(k)
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				v = nb.Get(keyEntry)
			}
		}
		if v == nil {
			return raft.ErrLogNotFound
		}
		if err := codec.NewDecoderBytes(v, &codec.MsgpackHandle{}).Decode(log); err != nil {
			return fmt.Errorf("decode log %d: %w", idx, err)
		}
		return nil
	})
}

// StoreLog appends one entry.
func (s *logStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs appends entries in one transaction (one commit, synced).
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	// raft-boltdb's default encoding (time as msgpack's extension-free
	// form), so that both read each other's small entries.
	h := &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}}
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			var buf bytes.Buffer
			buf.Grow(len(l.Data) + len(l.Extensions) + 64)
			if err := codec.NewEncoder(&buf, h).Encode(l); err != nil {
				return fmt.Errorf("encode log %d: %w", l.Index, err)
			}
			k := u64Key(l.Index)
			if err := deleteEntry(b, k); err != nil {
				return err
			}
			if buf.Len() < largeEntry {
				if err := b.Put(k, buf.Bytes()); err != nil {
					return err
				}
				continue
			}
			nb, err := b.CreateBucket(k)
			if err != nil {
				return err
			}
			if err := nb.Put(keyEntry, buf.Bytes()); err != nil {
				return err
			}
		}
		return nil
	})
}

// deleteEntry removes the entry under k, in either form; a missing one is
// no error (an append may overwrite a conflicting suffix).
func deleteEntry(b *bbolt.Bucket, k []byte) error {
	if b.Bucket(k) != nil {
		return b.DeleteBucket(k)
	}
	return b.Delete(k)
}

// DeleteRange deletes the entries from min to max, inclusive.
func (s *logStore) DeleteRange(min, max uint64) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(u64Key(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := deleteEntry(b, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Set stores a stable-store value.
func (s *logStore) Set(k, v []byte) error {
	return s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketConf).Put(k, v) })
}

// Get returns a stable-store value, or errKeyNotFound.
func (s *logStore) Get(k []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketConf).Get(k); v != nil {
			out = bytes.Clone(v)
			return nil
		}
		return errKeyNotFound
	})
	return out, err
}

// SetUint64 stores a stable-store integer (big-endian).
func (s *logStore) SetUint64(key []byte, val uint64) error { return s.Set(key, u64Key(val)) }

// GetUint64 returns a stable-store integer, or errKeyNotFound.
func (s *logStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable value %q: %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
