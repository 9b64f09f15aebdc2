//go:build unix

package targets

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopQuitsAProcessThatIgnoresTerm checks that a process that does
// not stop on SIGTERM is sent SIGQUIT, which makes a Go server dump its
// goroutines into its log, before it is killed.
func TestStopQuitsAProcessThatIgnoresTerm(t *testing.T) {
	log := filepath.Join(t.TempDir(), "p.log")
	p, err := startProcess("stubborn", log, nil, "sh", "-c", `trap "" TERM; echo ready; exec sleep 60`)
	if err != nil {
		t.Fatal(err)
	}
	defer p.kill(10 * time.Second)
	// The trap must be set before SIGTERM comes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if bytes.Contains(b, []byte("ready")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	err = p.stop(100 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "goroutines are dumped") {
		t.Fatalf("stop = %v, want the SIGQUIT path", err)
	}
	var exitErr *exec.ExitError
	if !errors.As(p.err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGQUIT {
		t.Errorf("process ended with %v, want SIGQUIT", p.err)
	}
}
