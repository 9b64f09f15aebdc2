package raftstore

import (
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft-wal/types"
)

// logPagesVFS is the file system of a replica's Raft log: raft-wal's own,
// except that the page cache is told to let go of a segment's pages once
// two newer segments exist. The log is written once and read back almost
// never: raft reads recent entries from logCache, and only a follower far
// behind or a restart reads older ones from disk. Kept in the page cache,
// a node's logs grew by every message's size (the snapshot threshold
// counts entries, so with large mail a shard can hold gigabytes of log)
// and pushed out the state files' pages, which IMAP and POP3 reads need.
// On this project's benchmark host the growth itself was the cost: a
// write into pages the machine has not used lately took ten times the
// system time of one into pages just freed (docs/architecture.md,
// seventeenth round).
type logPagesVFS struct {
	types.VFS
	log hclog.Logger

	mu     sync.Mutex
	recent []string // paths of the segments this VFS created, oldest first
}

// keepCachedSegments is how many of the newest segments keep their pages:
// the one being written and the one before, which covers what logCache no
// longer holds of the last logSegmentSize bytes.
const keepCachedSegments = 2

// Create makes a new segment and drops the pages of the one that is now
// keepCachedSegments behind it.
func (v *logPagesVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.VFS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.recent = append(v.recent, filepath.Join(dir, name))
	var old string
	if len(v.recent) > keepCachedSegments {
		old = v.recent[0]
		v.recent = v.recent[1:]
	}
	v.mu.Unlock()
	if old != "" {
		if err := dropCachedPages(old); err != nil && !os.IsNotExist(err) {
			// Only a cost: the pages stay until the kernel needs them.
			v.log.Debug("drop a log segment's cached pages", "segment", old, "error", err)
		}
	}
	return f, nil
}
