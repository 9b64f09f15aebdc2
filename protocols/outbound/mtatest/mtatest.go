// Package mtatest runs a real remote MTA on loopback for tests of
// outbound delivery, from Debian's postfix package: smtp-sink, which
// accepts mail into dump files or refuses chosen commands with 4xx or
// 5xx on demand, and a throw-away Postfix instance with STARTTLS and
// Maildir delivery.
package mtatest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Sink is a running smtp-sink.
type Sink struct {
	// Port is the loopback port it listens on.
	Port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// FreePort returns a loopback TCP port nothing listens on now, for a
// daemon a test starts. The port is drawn at random from below the
// kernel's ephemeral range: a port of that range (what listening on
// port 0 gives) may be taken, between this call and the daemon's bind,
// by a listener on port 0 or an outgoing connection of the tests that
// run beside it, which made Postfix fail to start with "Address already
// in use". Below the range only another explicit bind can take it.
func FreePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	const from = 20000
	if low <= from+1000 { // an unusual range: take what the kernel gives
		port, err := listenPort("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return port
	}
	var err error
	for range 200 {
		port := from + rand.IntN(low-from)
		if _, err = listenPort(fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			return port
		}
	}
	t.Fatalf("no free loopback port below %d: %v", low, err)
	return 0
}

// listenPort binds addr, closes the listener and returns its port.
func listenPort(addr string) (int, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 {
		return 32768
	}
	return n
}

// StartSink runs smtp-sink on 127.0.0.1:port with extra options (such
// as "-r", "RCPT" for 4xx or "-f", "RCPT" for 5xx answers to RCPT),
// dumping every accepted transaction to its own file. It skips the test
// when smtp-sink is missing, unless MAILCLUSTER_REQUIRE_POSTFIX is set.
// The sink stops at the end of the test or at Stop.
func StartSink(t *testing.T, port int, opts ...string) *Sink {
	t.Helper()
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		if p, serr := exec.LookPath("/usr/sbin/smtp-sink"); serr == nil {
			bin, err = p, nil
		}
	}
	if err != nil {
		if os.Getenv("MAILCLUSTER_REQUIRE_POSTFIX") != "" {
			t.Fatalf("smtp-sink (postfix) is required (MAILCLUSTER_REQUIRE_POSTFIX): %v", err)
		}
		t.Skipf("smtp-sink (postfix) not installed: %v", err)
	}
	// Not under t.TempDir: smtp-sink writes as nobody, who cannot pass
	// the test's private temporary directory.
	dir, err := os.MkdirTemp("", "mtatest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	args := []string{"-h", "sink.test", "-d", filepath.Join(dir, "%Y%m%d%H%M%S.")}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // smtp-sink refuses to run as root
	}
	args = append(args, opts...)
	args = append(args, fmt.Sprintf("127.0.0.1:%d", port), "64")
	s := &Sink{Port: port, dir: dir, done: make(chan struct{})}
	s.cmd = exec.Command(bin, args...)
	var stderr bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &stderr, &stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start smtp-sink: %v", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("smtp-sink exited: %s", stderr.String())
		case <-ctx.Done():
			t.Fatalf("smtp-sink not listening on %d: %v", port, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dialable reports whether something accepts connections on the
// loopback port.
func dialable(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Stop kills the sink and waits for it; the port is free afterwards.
// It may be called more than once.
func (s *Sink) Stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-s.done
}

// Messages returns the transactions the sink accepted, oldest first:
// smtp-sink's dump of each (X-Mail-Args and X-Rcpt-Args lines with the
// envelope, then the message as received).
func (s *Sink) Messages(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}
