//go:build !unix

package targets

import (
	"io"
	"io/fs"
	"os/exec"
	"strings"
)

func setProcessGroup(*exec.Cmd) {}

func signalGroup(cmd *exec.Cmd, _ bool) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}

func signalQuit(*exec.Cmd) bool { return false }

func allocated(info fs.FileInfo) int64 { return info.Size() }

func stringReader(s string) io.Reader { return strings.NewReader(s) }
