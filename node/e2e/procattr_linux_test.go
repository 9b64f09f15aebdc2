package e2e

import "syscall"

// childProcAttr makes the kernel kill a node when the test process dies,
// so an interrupted test run leaves no node behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
