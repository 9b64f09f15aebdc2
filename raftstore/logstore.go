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

// logStore is raft.db, a bbolt file with raft-boltdb v2's layout (bucket
// "conf": key -> value; bucket "logs": big-endian index -> msgpack-encoded
// raft.Log): the replica's Raft stable store (current term, vote). Its
// logs bucket is where replicas kept their Raft log before it moved to
// segment files of its own (openRaftLog); this store reads those entries,
// in raft-boltdb's form or as the only value of a bucket named by the
// index (how it stored entries of largeEntry bytes or more), so that they
// can be moved, and then clears them. A raft.db written by raft-boltdb
// opens as it is.
type logStore struct {
	db *bbolt.DB
	// writing times the stable-store write under way (Shard.stuckWrite):
	// Raft writes its term and vote there at elections, from its main
	// loop, which waits for them. writes, when set, holds them while the
	// replica's disk is stalled (Shard.StallWrites).
	writing writeClock
	writes  *writeGate
	before  func() // tests: runs as a write starts
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

// clearLog removes every log entry (after they have moved to the
// replica's log, see openRaftLog), in one synced commit.
func (s *logStore) clearLog() error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketLogs); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketLogs)
		return err
	})
}

// Set stores a stable-store value.
func (s *logStore) Set(k, v []byte) error {
	s.writing.begin()
	defer s.writing.end()
	if s.writes != nil {
		s.writes.wait()
	}
	if s.before != nil {
		s.before()
	}
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
