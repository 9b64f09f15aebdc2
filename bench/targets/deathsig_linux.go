//go:build linux

package targets

import "syscall"

// setParentDeathSignal makes a server's master process receive SIGTERM
// if the harness dies without stopping it (a crash, SIGKILL), so no
// server outlives a run.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGTERM
}
