// Package logdamage damages a replica's Raft log on disk the way a
// failing disk does, for the tests of what a node does about it
// (raftstore's checked log, the cluster's rejoin of such a replica).
package logdamage

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// Entry flips one byte of the data of entry idx in the closed raft-wal log
// under dir, where its segment files store it.
func Entry(dir string, idx uint64) error {
	l, err := read(dir, idx)
	if err != nil {
		return err
	}
	segments, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		return err
	}
	files := make([][]byte, len(segments))
	for i, path := range segments {
		if files[i], err = os.ReadFile(path); err != nil {
			return err
		}
	}
	// A window of the data found once in the log is this entry's.
	for off := 0; off+32 <= len(l.Data); off += 8 {
		needle := l.Data[off : off+32]
		found, file, at := 0, 0, 0
		for i, b := range files {
			if n := bytes.Count(b, needle); n > 0 {
				found += n
				file, at = i, bytes.Index(b, needle)
			}
		}
		if found != 1 {
			continue
		}
		f, err := os.OpenFile(segments[file], os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt([]byte{files[file][at] ^ 0x10}, int64(at))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return fmt.Errorf("no part of entry %d's data is found once in %d segments", idx, len(segments))
}

// FirstCommand returns the index of the oldest command entry of the
// closed log under dir that holds at least 32 bytes of data. Damage there
// is what the log hands over as it is: raft-wal drops a damaged last
// batch instead, as a write that a crash cut short.
func FirstCommand(dir string) (uint64, error) {
	w, err := wal.Open(dir, wal.WithLogger(hclog.NewNullLogger()))
	if err != nil {
		return 0, err
	}
	defer w.Close()
	first, err := w.FirstIndex()
	if err != nil {
		return 0, err
	}
	last, err := w.LastIndex()
	if err != nil {
		return 0, err
	}
	for i := first; i <= last && i > 0; i++ {
		var l raft.Log
		if err := w.GetLog(i, &l); err != nil {
			return 0, err
		}
		if l.Type == raft.LogCommand && len(l.Data) >= 32 {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no command entry in %d-%d", first, last)
}

func read(dir string, idx uint64) (*raft.Log, error) {
	w, err := wal.Open(dir, wal.WithLogger(hclog.NewNullLogger()))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	var l raft.Log
	if err := w.GetLog(idx, &l); err != nil {
		return nil, fmt.Errorf("entry %d: %w", idx, err)
	}
	return &l, nil
}
