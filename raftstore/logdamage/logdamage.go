// Package logdamage damages a replica's Raft log on disk the way a
// failing disk does, for the tests of what a node does about it
// (raftstore's checked log, the cluster's rejoin of such a replica). It
// reads raft-wal's segment files itself, so the log may be open.
package logdamage

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/raft"
)

// raft-wal's segment format (segment/format.go in hashicorp/raft-wal): a
// 32-byte file header, then frames of an 8-byte header (type, three
// reserved bytes, a little-endian length, or the CRC of a commit frame)
// and a payload padded to 8 bytes. An entry frame's payload is the entry
// in raft-wal's binary codec: index, term and type as uvarints, then the
// data with a uvarint length.
const (
	fileHeaderLen  = 32
	frameHeaderLen = 8
	frameEntry     = 1
	frameIndex     = 2
	frameCommit    = 3
)

// entry is where an entry's data sits in a segment file.
type entry struct {
	path       string
	index      uint64
	typ        raft.LogType
	start, end int64 // of the data in the file
}

// Entry flips one byte in the middle of the data of entry idx in the
// raft-wal log under dir.
func Entry(dir string, idx uint64) error {
	_, err := damage(dir, func(e entry) bool { return e.index == idx })
	return err
}

// Command damages the oldest command entry of the log under dir, from
// index from on, that holds at least 32 bytes of data, and returns its
// index. Damage there is what raft-wal hands over as it is: it drops a
// damaged last batch instead, as a write that a crash cut short.
func Command(dir string, from uint64) (uint64, error) {
	return damage(dir, func(e entry) bool {
		return e.index >= from && e.typ == raft.LogCommand && e.end-e.start >= 32
	})
}

// damage flips one byte in the middle of the data of the oldest entry of
// the log under dir that match accepts, and returns its index.
func damage(dir string, match func(entry) bool) (uint64, error) {
	entries, err := scan(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if !match(e) {
			continue
		}
		if e.end == e.start {
			return 0, fmt.Errorf("entry %d holds no data", e.index)
		}
		return e.index, flip(e.path, (e.start+e.end)/2)
	}
	return 0, fmt.Errorf("no such entry in %s", dir)
}

// scan lists the entries of the segment files under dir, oldest first.
func scan(dir string) ([]entry, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths) // named by base index, zero-padded
	var out []entry
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		for off := int64(fileHeaderLen); off+frameHeaderLen <= int64(len(b)); {
			typ, n := b[off], int64(binary.LittleEndian.Uint32(b[off+4:off+8]))
			switch typ {
			case frameEntry:
				if e, ok := decode(b[off+frameHeaderLen:min(off+frameHeaderLen+n, int64(len(b)))], off+frameHeaderLen); ok {
					e.path = path
					out = append(out, e)
				}
			case frameIndex:
			case frameCommit:
				n = 0
			default: // the end of what was written
				off = int64(len(b))
				continue
			}
			off += frameHeaderLen + (n+7)/8*8
		}
	}
	return out, nil
}

// decode reads an entry frame's payload p, found at offset at of its file.
func decode(p []byte, at int64) (entry, bool) {
	var e entry
	var fields [4]uint64 // index, term, type, data length
	pos := 0
	for i := range fields {
		v, n := binary.Uvarint(p[pos:])
		if n <= 0 {
			return e, false
		}
		fields[i], pos = v, pos+n
	}
	if uint64(len(p)-pos) < fields[3] {
		return e, false
	}
	e.index, e.typ = fields[0], raft.LogType(fields[2])
	e.start = at + int64(pos)
	e.end = e.start + int64(fields[3])
	return e, true
}

// flip inverts one bit of the byte at off in the file at path.
func flip(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		f.Close()
		return err
	}
	b[0] ^= 0x10
	_, err = f.WriteAt(b[:], off)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
