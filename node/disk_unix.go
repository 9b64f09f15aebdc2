//go:build unix

package node

import "syscall"

// availableBytes returns the bytes a writer without root's reserve can
// still use on the file system that holds path.
func availableBytes(path string) (float64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, false
	}
	return float64(st.Bavail) * float64(st.Bsize), true
}
