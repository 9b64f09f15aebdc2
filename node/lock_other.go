//go:build !unix

package node

import (
	"fmt"
	"os"
)

// lockFile opens path without an OS lock: this platform has no flock, so
// the caller must not run two nodes on one data directory.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return f, nil
}
