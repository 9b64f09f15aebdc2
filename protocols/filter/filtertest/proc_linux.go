package filtertest

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the daemon and the workers it forks in a group of
// their own that dies with the test process.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup stops the daemon and its workers.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
