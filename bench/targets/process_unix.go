//go:build unix

package targets

import (
	"io"
	"io/fs"
	"os/exec"
	"strings"
	"syscall"
)

func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
}

// signalGroup sends SIGTERM (or SIGKILL) to the command's process group.
func signalGroup(cmd *exec.Cmd, kill bool) {
	if cmd.Process == nil {
		return
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-cmd.Process.Pid, sig)
}

// signalQuit sends SIGQUIT to the command's own process (not its
// group), which makes a Go program dump its goroutines and exit. It
// reports whether the signal was sent.
func signalQuit(cmd *exec.Cmd) bool {
	if cmd.Process == nil {
		return false
	}
	return cmd.Process.Signal(syscall.SIGQUIT) == nil
}

// allocated returns the bytes of disk blocks a file occupies.
func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}

func stringReader(s string) io.Reader { return strings.NewReader(s) }
