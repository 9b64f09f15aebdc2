//go:build !linux

package limits

import "os"

// datasync flushes a file; without fdatasync, fsync.
func datasync(f *os.File) error {
	return f.Sync()
}
