//go:build unix && !linux

package targets

import "syscall"

// setParentDeathSignal: only Linux has a parent-death signal; elsewhere
// Stop is the only way a server ends.
func setParentDeathSignal(*syscall.SysProcAttr) {}
