// Package filtertest starts the real content scanners for tests: ClamAV's
// clamd with a signature database of its own (the EICAR test string, as
// no signature server is reachable) and rspamd with a configuration in a
// temporary directory. Tests skip when a daemon is not installed, unless
// MAILCLUSTER_REQUIRE_FILTERS is set (CI installs both).
package filtertest

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
)

// EICAR is the antivirus test string; the signature database this package
// gives clamd detects it.
const EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// GTUBE is the spam test string rspamd recognises.
const GTUBE = `XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X`

// startTimeout bounds a daemon's start (rspamd loads its rules for about
// fifteen seconds on a loaded machine).
const startTimeout = 90 * time.Second

func need(t testing.TB, bin string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		// Daemons live in /usr/sbin, outside a user's PATH.
		if p, serr := exec.LookPath(filepath.Join("/usr/sbin", bin)); serr == nil {
			return p
		}
		if os.Getenv("MAILCLUSTER_REQUIRE_FILTERS") != "" {
			t.Fatalf("%s is required (MAILCLUSTER_REQUIRE_FILTERS): %v", bin, err)
		}
		t.Skipf("%s not installed: %v", bin, err)
	}
	return path
}

// freePort returns a loopback address whose port was free, for a
// daemon to bind.
func freePort(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", mtatest.FreePort(t))
}

// run starts a daemon in the foreground and stops it when the test ends.
func run(t testing.TB, dir, bin string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		killGroup(cmd)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop", bin)
		}
		logf.Close()
	})
	return cmd
}

// waitFor polls ready until it succeeds or the start timeout passes.
func waitFor(t testing.TB, dir, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
			if len(log) > 4000 {
				log = log[len(log)-4000:]
			}
			t.Fatalf("%s not ready after %s: %v\n%s", what, startTimeout, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Clamd starts clamd on a loopback TCP port with the EICAR signature and
// returns its address as tcp://HOST:PORT.
func Clamd(t testing.TB) string {
	t.Helper()
	bin := need(t, "clamd")
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o755); err != nil {
		t.Fatal(err)
	}
	sig := "Eicar-Test-Signature:0:*:" + hex.EncodeToString([]byte(EICAR)) + "\n"
	if err := os.WriteFile(filepath.Join(db, "eicar.ndb"), []byte(sig), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	host, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("Foreground yes\nDatabaseDirectory %s\nTCPSocket %s\nTCPAddr %s\nLogFile %s\nStreamMaxLength 64M\n",
		db, port, host, filepath.Join(dir, "clamd.log"))
	confPath := filepath.Join(dir, "clamd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, bin, "-c", confPath)
	waitFor(t, dir, "clamd", func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("zPING\x00")); err != nil {
			return err
		}
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), "PONG") {
			return fmt.Errorf("PING answered %q, %v", buf[:n], err)
		}
		return nil
	})
	return "tcp://" + addr
}

// Rspamd starts rspamd's normal worker on a loopback port (its Debian
// configuration, with its own run, database and log directories) and
// returns its base URL.
func Rspamd(t testing.TB) string {
	t.Helper()
	bin := need(t, "rspamd")
	dir := t.TempDir()
	normal, controller, proxy := freePort(t), freePort(t), freePort(t)
	files := map[string]string{
		"worker-normal.inc":     fmt.Sprintf("bind_socket = %q;\ncount = 1;\n", normal),
		"worker-controller.inc": fmt.Sprintf("bind_socket = %q;\n", controller),
		"worker-proxy.inc":      fmt.Sprintf("bind_socket = %q;\n", proxy),
		"logging.inc":           "type = \"console\";\nlevel = \"error\";\n",
	}
	for _, sub := range []string{"local.d", "run", "db", "log"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, "local.d", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-f", "-i",
		"--var=LOCAL_CONFDIR=" + dir, "--var=RUNDIR=" + filepath.Join(dir, "run"),
		"--var=DBDIR=" + filepath.Join(dir, "db"), "--var=LOGDIR=" + filepath.Join(dir, "log"),
		"-p", filepath.Join(dir, "run", "rspamd.pid")}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root", "-g", "root")
	}
	run(t, dir, bin, args...)
	url := "http://" + normal
	waitFor(t, dir, "rspamd", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/ping", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ping: HTTP %d", resp.StatusCode)
		}
		return nil
	})
	return url
}
