package raftstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCachedPages asks the kernel to evict the file's clean pages from
// the page cache (dirty ones it starts writing back and keeps).
func dropCachedPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
