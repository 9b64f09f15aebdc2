package mtatest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols"
)

// Postfix is a throw-away Postfix instance (its own main.cf and
// master.cf, started with `postfix -c DIR`) whose smtpd listens on a
// loopback port, offers STARTTLS with a self-signed certificate for
// mx.remote.test, accepts mail for remote.test into one Maildir and
// refuses unknown@remote.test with 550 5.1.1.
type Postfix struct {
	Port int
	// CertPEM is the smtpd's self-signed certificate for
	// mx.remote.test; a test that trusts it can require verified TLS.
	CertPEM []byte
	dir     string
}

// StartPostfix starts the instance on 127.0.0.1:port. It needs root
// (Postfix's master does) and skips when Postfix is missing or the test
// is not root, unless MAILCLUSTER_REQUIRE_POSTFIX is set. The instance
// stops at the end of the test.
func StartPostfix(t *testing.T, port int) *Postfix {
	t.Helper()
	return StartPostfixWith(t, port)
}

// StartPostfixWith is StartPostfix with more main.cf lines (such as
// "smtpd_discard_ehlo_keywords = pipelining"), which override the
// instance's defaults.
func StartPostfixWith(t *testing.T, port int, mainCFLines ...string) *Postfix {
	t.Helper()
	bin, err := exec.LookPath("postfix")
	if err != nil {
		if p, serr := exec.LookPath("/usr/sbin/postfix"); serr == nil {
			bin, err = p, nil
		}
	}
	if err == nil && os.Geteuid() != 0 {
		err = fmt.Errorf("postfix needs root to start")
	}
	if err != nil {
		if os.Getenv("MAILCLUSTER_REQUIRE_POSTFIX") != "" {
			t.Fatalf("postfix is required (MAILCLUSTER_REQUIRE_POSTFIX): %v", err)
		}
		t.Skipf("postfix not usable: %v", err)
	}
	// Under /tmp, not t.TempDir: Postfix's daemons run as the postfix
	// user, who cannot pass the test's private directory.
	dir, err := os.MkdirTemp("", "mtatest-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &Postfix{Port: port, dir: dir}
	for _, sub := range []string{"conf", "queue", "data", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "mail"), 0o777); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("chown data directory: %v: %s", err, out)
	}
	certPEM, keyPEM, err := protocols.SelfSignedCertificate([]string{"mx.remote.test"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf")
	write := func(name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(conf, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	p.CertPEM = certPEM
	write("cert.pem", certPEM, 0o644)
	write("key.pem", keyPEM, 0o600)
	cf := strings.ReplaceAll(mainCF, "DIR", dir)
	for _, l := range mainCFLines {
		cf += l + "\n"
	}
	write("main.cf", []byte(cf), 0o644)
	write("master.cf", []byte(strings.ReplaceAll(masterCF, "PORT", strconv.Itoa(port))), 0o644)
	t.Cleanup(func() { p.stop(t, bin); os.RemoveAll(dir) })
	if out, err := exec.Command(bin, "-c", conf, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "postfix.log"))
		t.Fatalf("postfix start: %v: %s\n%s", err, out, log)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		log, _ := os.ReadFile(filepath.Join(dir, "postfix.log"))
		if bytes.Contains(log, []byte("daemon started")) && dialable(port) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix not listening on %d:\n%s", port, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the instance and waits for its master to exit.
func (p *Postfix) stop(t *testing.T, bin string) {
	pidFile := filepath.Join(p.dir, "queue", "pid", "master.pid")
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if out, err := exec.Command(bin, "-c", filepath.Join(p.dir, "conf"), "stop").CombinedOutput(); err != nil {
		t.Logf("postfix stop: %v: %s", err, out)
	}
	if pid <= 0 {
		return
	}
	deadline := time.Now().Add(20 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Flush asks the instance to try its deferred mail again at once
// (`postqueue -f`): a delivery into the Maildir that failed for a moment
// is otherwise retried only minutes later.
func (p *Postfix) Flush(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("postqueue", "-c", filepath.Join(p.dir, "conf"), "-f").CombinedOutput(); err != nil {
		t.Logf("postqueue -f: %v: %s", err, out)
	}
}

// Log returns the instance's log so far, for a failure's report.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postfix.log"))
	return string(b)
}

// Messages returns the messages delivered to the Maildir, oldest first,
// as Postfix stored them (with its Received field first).
func (p *Postfix) Messages(t *testing.T) []string {
	t.Helper()
	newDir := filepath.Join(p.dir, "mail", "box", "new")
	entries, err := os.ReadDir(newDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(newDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

const mainCF = `compatibility_level = 3.6
queue_directory = DIR/queue
data_directory = DIR/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.remote.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
virtual_mailbox_domains = remote.test
virtual_mailbox_base = DIR/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_recipient_restrictions = check_recipient_access inline:{ { unknown@remote.test = 550 5.1.1 No such user } }, permit_mynetworks, reject_unauth_destination
smtpd_tls_cert_file = DIR/conf/cert.pem
smtpd_tls_key_file = DIR/conf/key.pem
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtputf8_enable = yes
maillog_file = DIR/postfix.log
maillog_file_prefixes = DIR
`

const masterCF = `127.0.0.1:PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
