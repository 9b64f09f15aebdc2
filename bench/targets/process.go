package targets

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// process is a child process of the harness (a server's master process),
// with its output in a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // valid after done is closed
}

// startProcess starts argv in its own process group, with stdout and
// stderr appended to logPath.
func startProcess(name, logPath string, env []string, argv ...string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop asks the process group to terminate, waits up to grace, then
// kills it. It returns the process's exit error unless that is the
// expected signal.
func (p *process) stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	signalGroup(p.cmd, false)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	// A Go process answers SIGQUIT with every goroutine's stack on its
	// stderr, the log file: what it was stuck on is the first thing to
	// know about a server that would not stop.
	dumped := signalQuit(p.cmd)
	if dumped {
		select {
		case <-p.done:
			return fmt.Errorf("%s did not stop within %v; its goroutines are dumped in its log", p.name, grace)
		case <-time.After(quitWait):
		}
	}
	signalGroup(p.cmd, true)
	select {
	case <-p.done:
		return fmt.Errorf("%s did not stop within %v and was killed", p.name, grace)
	case <-time.After(10 * time.Second):
		return errors.New(p.name + " survived SIGKILL")
	}
}

// quitWait is how long a process has to write its goroutine dump after
// SIGQUIT before it is killed.
const quitWait = 5 * time.Second

// kill ends the process group at once with SIGKILL, as a crash would,
// and waits up to timeout until the process is reaped.
func (p *process) kill(timeout time.Duration) error {
	if p == nil {
		return errors.New("no process to kill")
	}
	signalGroup(p.cmd, true)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s survived SIGKILL for %v", p.name, timeout)
	}
}

// run runs a short command to completion within timeout and returns its
// combined output.
func run(timeout time.Duration, stdin string, env []string, argv ...string) ([]byte, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = stringReader(stdin)
	}
	setProcessGroup(cmd)
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := cmd.CombinedOutput()
		ch <- result{out, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return r.out, fmt.Errorf("%s: %w: %s", argv[0], r.err, trimOutput(r.out))
		}
		return r.out, nil
	case <-time.After(timeout):
		if cmd.Process != nil {
			signalGroup(cmd, true)
		}
		<-ch
		return nil, fmt.Errorf("%s: no answer within %v", argv[0], timeout)
	}
}

func trimOutput(b []byte) string {
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
