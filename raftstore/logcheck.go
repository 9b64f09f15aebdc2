package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// ErrLogDamaged is returned by Open when an entry of the replica's Raft
// log that raft would read back is damaged: its checksum does not match,
// the log cannot decode it, or the log ends before entries the state file
// has applied. The replica's log no longer holds what it acknowledged to
// its group, so it may not count as a voter with it: the caller sets the
// log aside (SetAsideLog) and the replica rejoins as a new member.
var ErrLogDamaged = errors.New("raftstore: raft log damaged")

// entryCheckTag marks the checksum that checkedLog appends to an entry's
// extensions; what comes before it is raft's own.
var entryCheckTag = [4]byte{'m', 'c', 'k', '1'}

// entryCheckLen is the tag and a CRC-32C.
const entryCheckLen = len(entryCheckTag) + 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkedLog is a replica's raft-wal log that stores a checksum with every
// entry and checks it on every read. raft-wal checks its frames' CRCs only
// when it recovers the last batch of its newest segment: a damaged byte
// anywhere else reaches raft as it is, which applies it (replicas then
// differ) or, when it no longer decodes, panics.
//
// The checksum is a CRC-32C of the entry's index, term, type, data and
// extensions, kept as a suffix of the extensions as stored and removed
// again as they are read, so raft, the FSM and the other replicas never
// see it (each replica's log checks its own copy). Entries stored before
// the check carry none and are read as they are.
type checkedLog struct {
	*wal.WAL
	log *slog.Logger
	// keepDamaged hands raft a damaged entry as it was read, as before the
	// check (Config.KeepDamagedLog): a sole voter has no replica to refill
	// it from, and raft panics on an entry it cannot read as it starts.
	keepDamaged bool
	// damagedReads counts the damaged entries raft was handed (Status).
	damagedReads atomic.Uint64
	// damaged is the first damage read while the replica runs in an entry
	// after its newest snapshot (Shard.LogDamaged); afterSnapshot tells
	// those apart from older entries, which a follower gets a snapshot
	// for instead and the next compaction removes.
	damaged       atomic.Pointer[error]
	afterSnapshot func(idx uint64) bool
}

// StoreLogs stores copies of logs with their checksum; the entries passed
// in are left as they are (raft and the log cache keep them).
func (c *checkedLog) StoreLogs(logs []*raft.Log) error {
	out := make([]*raft.Log, len(logs))
	copies := make([]raft.Log, len(logs))
	for i, l := range logs {
		copies[i] = *l
		ext := make([]byte, 0, len(l.Extensions)+entryCheckLen)
		ext = append(ext, l.Extensions...)
		ext = append(ext, entryCheckTag[:]...)
		copies[i].Extensions = binary.BigEndian.AppendUint32(ext, entryChecksum(l, l.Extensions))
		out[i] = &copies[i]
	}
	return c.WAL.StoreLogs(out)
}

// StoreLog stores one entry with its checksum.
func (c *checkedLog) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// GetLog reads the entry at idx and checks it. A damaged entry is
// reported as not found (raft.ErrLogNotFound), after logging it: a leader
// then sends the follower that needs it a snapshot instead. Raft panics
// on any error where it applies an entry; Open checks the entries it will
// apply before raft starts (checkEntries).
func (c *checkedLog) GetLog(idx uint64, l *raft.Log) error {
	err := c.read(idx, l)
	if err != nil && errors.Is(err, ErrLogDamaged) {
		c.damagedReads.Add(1)
		if c.keepDamaged && errors.Is(err, errChecksum) {
			c.log.Error("damaged raft log entry; read as it is", "index", idx, "err", err)
			return nil
		}
		c.log.Error("damaged raft log entry; read as missing", "index", idx, "err", err)
		if c.afterSnapshot == nil || c.afterSnapshot(idx) {
			c.damaged.CompareAndSwap(nil, &err)
		}
		return raft.ErrLogNotFound
	}
	return err
}

// errChecksum is the damage of an entry the log could read and decode,
// whose checksum does not match.
var errChecksum = errors.New("checksum mismatch")

// read reads the entry at idx, failing with ErrLogDamaged when its
// checksum does not match or the log cannot decode it.
func (c *checkedLog) read(idx uint64, l *raft.Log) error {
	if err := c.WAL.GetLog(idx, l); err != nil {
		if errors.Is(err, raft.ErrLogNotFound) || errors.Is(err, wal.ErrClosed) {
			return err
		}
		return fmt.Errorf("%w: entry %d: %v", ErrLogDamaged, idx, err)
	}
	if l.Index != idx {
		return fmt.Errorf("%w: entry %d reads as entry %d", ErrLogDamaged, idx, l.Index)
	}
	ext := l.Extensions
	n := len(ext) - entryCheckLen
	if n < 0 || !bytes.Equal(ext[n:n+len(entryCheckTag)], entryCheckTag[:]) {
		return nil // stored before the check
	}
	l.Extensions = ext[:n:n]
	if len(l.Extensions) == 0 {
		l.Extensions = nil
	}
	if got, want := entryChecksum(l, l.Extensions), binary.BigEndian.Uint32(ext[n+len(entryCheckTag):]); got != want {
		return fmt.Errorf("%w: entry %d: %w: %08x, stored %08x", ErrLogDamaged, idx, errChecksum, got, want)
	}
	return nil
}

// checkEntries reads every entry the log holds from index from on and
// fails with ErrLogDamaged at the first that is damaged.
func (c *checkedLog) checkEntries(from uint64) error {
	first, err := c.FirstIndex()
	if err != nil {
		return err
	}
	last, err := c.LastIndex()
	if err != nil {
		return err
	}
	var l raft.Log
	for idx := max(first, from); idx != 0 && idx <= last; idx++ {
		if err := c.read(idx, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return fmt.Errorf("%w: entry %d of %d-%d missing", ErrLogDamaged, idx, first, last)
			}
			return err
		}
	}
	return nil
}

// entryChecksum is the CRC-32C of l's index, term, type, data and ext.
func entryChecksum(l *raft.Log, ext []byte) uint32 {
	var head [8 + 8 + 1 + 8]byte
	binary.BigEndian.PutUint64(head[0:], l.Index)
	binary.BigEndian.PutUint64(head[8:], l.Term)
	head[16] = byte(l.Type)
	binary.BigEndian.PutUint64(head[17:], uint64(len(l.Data)))
	sum := crc32.Update(0, castagnoli, head[:])
	sum = crc32.Update(sum, castagnoli, l.Data)
	return crc32.Update(sum, castagnoli, ext)
}
