package mailimport

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
)

// dovecot is a Dovecot from Debian's package serving IMAP (STARTTLS) on a
// loopback port for one test, with Maildir++ mail under dir.
type dovecot struct {
	addr     string
	dir      string // holds mail/<user>/Maildir
	client   *tls.Config
	password string
}

// startDovecot starts Dovecot with one user. It skips the test when
// Dovecot is not installed or the test does not run as root (Dovecot
// drops mail processes to "nobody"), unless MAILCLUSTER_REQUIRE_DOVECOT
// is set.
func startDovecot(t *testing.T, user string) *dovecot {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		if p, serr := exec.LookPath("/usr/sbin/dovecot"); serr == nil {
			bin, err = p, nil
		}
	}
	switch {
	case err != nil && os.Getenv("MAILCLUSTER_REQUIRE_DOVECOT") != "":
		t.Fatalf("dovecot is required (MAILCLUSTER_REQUIRE_DOVECOT): %v", err)
	case err != nil:
		t.Skipf("dovecot not installed: %v", err)
	case os.Geteuid() != 0:
		t.Skip("the Dovecot peer runs mail processes as nobody, which needs root")
	}
	dir, err := os.MkdirTemp("", "mailimport-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	port := mtatest.FreePort(t)
	password := "dovecot-test-password"
	mailDir := filepath.Join(dir, "mail")
	files := map[string]string{
		"cert.pem": string(certPEM),
		"key.pem":  string(keyPEM),
		"users":    fmt.Sprintf("%s:{PLAIN}%s::::::\n", user, password),
		"dovecot.conf": fmt.Sprintf(`instance_name = mailimport-%d
base_dir = %[2]s/run
state_dir = %[2]s/state
protocols = imap
listen = 127.0.0.1
log_path = %[2]s/dovecot.log
ssl = yes
ssl_cert = <%[2]s/cert.pem
ssl_key = <%[2]s/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
passdb {
  driver = passwd-file
  args = %[2]s/users
}
userdb {
  driver = passwd-file
  args = %[2]s/users
  default_fields = uid=nobody gid=nogroup home=%[3]s/%%n
}
mail_location = maildir:~/Maildir
first_valid_uid = 1
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \Sent
    auto = create
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[4]d
  }
  inet_listener imaps {
    port = 0
  }
}
service imap-urlauth-login {
  inet_listener imap-urlauth {
    port = 0
  }
}
`, port, dir, mailDir, port),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(mailDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mailDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", filepath.Join(dir, "dovecot.conf"))
	out, err := os.Create(filepath.Join(dir, "master.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dovecot: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		out.Close()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "* OK") {
				break
			}
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "master.log"))
			t.Fatalf("dovecot exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Fatalf("dovecot not up on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &dovecot{addr: addr, dir: mailDir, client: &tls.Config{RootCAs: pool, ServerName: "localhost"}, password: password}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
