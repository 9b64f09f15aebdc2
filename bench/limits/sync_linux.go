//go:build linux

package limits

import (
	"os"
	"syscall"
)

// datasync flushes a file's data (and the metadata needed to read it).
func datasync(f *os.File) error {
	return syscall.Fdatasync(int(f.Fd()))
}
