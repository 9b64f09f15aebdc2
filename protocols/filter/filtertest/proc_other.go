//go:build !linux

package filtertest

import "os/exec"

// setProcessGroup does nothing outside Linux.
func setProcessGroup(*exec.Cmd) {}

// killGroup stops the daemon.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}
