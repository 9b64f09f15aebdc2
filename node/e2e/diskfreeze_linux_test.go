package e2e

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// freezableFS is an ext4 file system on a loop device that a test can
// freeze as fsfreeze does for a volume snapshot, or as a stalled network
// volume behaves: writes to it wait until it thaws, reads of what is
// cached go on.
type freezableFS struct {
	dir string
}

// newFreezableFS makes and mounts a file system of its own for the test,
// unmounted when the test ends. It skips the test where one cannot be
// made (not root, no loop devices, no fsfreeze), unless
// MAILCLUSTER_REQUIRE_FSFREEZE is set.
func newFreezableFS(t *testing.T) *freezableFS {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("MAILCLUSTER_REQUIRE_FSFREEZE") != "" {
			t.Fatalf("%s (MAILCLUSTER_REQUIRE_FSFREEZE is set)", msg)
		}
		t.Skipf("%s; set MAILCLUSTER_REQUIRE_FSFREEZE=1 to make this a failure", msg)
	}
	if os.Geteuid() != 0 {
		skip("freezing a file system needs root")
	}
	for _, tool := range []string{"fsfreeze", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("%s not installed (Debian packages util-linux, mount, e2fsprogs)", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		skip("no loop devices: %v", err)
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<30); err != nil { // sparse: only what is written takes room
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		skip("cannot mount a loop device here: %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return &freezableFS{dir: dir}
}

// freeze freezes the file system until thaw is called or the test ends.
func (f *freezableFS) freeze(t *testing.T) (thaw func()) {
	t.Helper()
	if out, err := exec.Command("fsfreeze", "--freeze", f.dir).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze --freeze: %v: %s", err, out)
	}
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			if out, err := exec.Command("fsfreeze", "--unfreeze", f.dir).CombinedOutput(); err != nil {
				t.Errorf("fsfreeze --unfreeze: %v: %s", err, out)
			}
		})
	}
	t.Cleanup(thaw) // before the nodes stop: a write that waits would hold a node's exit
	return thaw
}

// readyz returns a node's /readyz status code and body.
func readyz(n *node) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + n.addr("http") + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(b), err
}

// imapConn connects to a node's IMAPS listener without logging in,
// returning the client and its connection, on which the caller sets
// deadlines: a command that hangs then fails the test instead of holding
// it.
func imapConn(t *testing.T, n *node) (*imapclient.Client, net.Conn) {
	t.Helper()
	conn, err := tls.Dial("tcp", n.addr("imaps"), n.clientTLS)
	if err != nil {
		t.Fatalf("imaps dial: %v", err)
	}
	c := imapclient.New(conn, nil)
	t.Cleanup(func() { c.Close() })
	return c, conn
}

// TestClusterRidesOutAFrozenDisk freezes the file system under the data
// directory of the node that leads a user's shard, a real hung disk: the
// process runs, its connections stay open, and every write it makes to
// the disk waits. Mail sent through the other two nodes must go on being
// acknowledged, every send succeeding; the frozen node must say on
// /readyz that its disk hangs; a session it held open must go on showing
// the mailbox, and a new login and mail sent there must be answered, not
// left hanging.
// Once the disk thaws, the node must be ready again and every
// acknowledged message there exactly once.
func TestClusterRidesOutAFrozenDisk(t *testing.T) {
	var disks []*freezableFS
	for range 3 {
		disks = append(disks, newFreezableFS(t))
	}
	nodes := startClusterWith(t, func(i int) string { return filepath.Join(disks[i].dir, "data") })
	if err := nodes[0].addDomain(testDomain); err != nil {
		t.Fatal(err)
	}
	user, pass := nodes[0].newUser(t, "diskfreeze")
	victim := leaderOfUser(t, nodes, nodes[0], user)
	v := nodes[victim]
	held, heldConn := imapConn(t, v)
	if err := held.Authenticate(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatal(err)
	}
	selectBox(t, held, "INBOX", true)

	load := startLoad(t, nodes, victim, user)
	load.strict = true // the senders avoid the frozen node: nothing may fail
	load.waitAcks(t, 10)
	thaw := disks[victim].freeze(t)
	frozen := time.Now()
	waitFor(t, time.Minute, fmt.Sprintf("n%d to say that its disk hangs", victim+1), func() error {
		code, body, err := readyz(v)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "has not returned") {
			return fmt.Errorf("/readyz: %d %q", code, body)
		}
		t.Logf("n%d after %v: /readyz %d %s", victim+1, time.Since(frozen).Round(time.Millisecond), code, strings.TrimSpace(body))
		return nil
	})
	load.waitAcks(t, load.acks()+300) // committed without the frozen leader
	t.Logf("%d messages acknowledged %v after the freeze", load.acks(), time.Since(frozen).Round(time.Millisecond))

	// The session held open on the frozen node: its commands go to the
	// shard's new leader, and it shows what was acknowledged meanwhile.
	acked := load.ackedIDs()
	heldConn.SetDeadline(time.Now().Add(time.Minute))
	if err := held.Noop().Wait(); err != nil {
		t.Fatalf("NOOP on n%d, whose disk is frozen: %v", victim+1, err)
	}
	if missing := missingIDs(t, held, acked); len(missing) > 0 {
		t.Errorf("a session on n%d, whose disk is frozen, misses %d of %d acknowledged messages", victim+1, len(missing), len(acked))
	}
	// A new login there is answered: an account read from the node's
	// own directory replica, or a temporary failure while that replica's
	// commit hangs; never a wait for the disk.
	fresh, freshConn := imapConn(t, v)
	freshConn.SetDeadline(time.Now().Add(time.Minute))
	start := time.Now()
	err := fresh.Authenticate(sasl.NewPlainClient("", user, pass))
	var ierr *imap.Error
	switch {
	case err == nil:
	case errors.As(err, &ierr) && ierr.Code == imap.ResponseCodeUnavailable:
	default:
		t.Errorf("a login on n%d, whose disk is frozen: %v", victim+1, err)
	}
	t.Logf("a login on n%d while its disk is frozen answered in %v: %v", victim+1, time.Since(start).Round(time.Millisecond), err)
	// Mail sent to the frozen node is answered too: refused for now
	// (451, the sender tries again later) or taken, then kept.
	id := fmt.Sprintf("frozen-node.%s@client.e2e.test", randomHex(4))
	start = time.Now()
	err = sendVia(v.addr("smtp"), user, mailSpec{From: "load@remote.example", To: user, Subject: "frozen", MessageID: id, Text: "x"}.build())
	var serr *gosmtp.SMTPError
	switch {
	case err == nil:
		load.mu.Lock()
		load.acked[id] = true
		load.mu.Unlock()
	case errors.As(err, &serr) && serr.Code/100 == 4:
	default:
		t.Errorf("mail sent to n%d, whose disk is frozen: %v", victim+1, err)
	}
	t.Logf("mail sent to n%d while its disk is frozen answered in %v: %v", victim+1, time.Since(start).Round(time.Millisecond), err)
	thaw()
	t.Logf("n%d's disk frozen for %v; %d messages acknowledged by then", victim+1, time.Since(frozen).Round(time.Millisecond), len(acked))

	waitFor(t, time.Minute, fmt.Sprintf("n%d ready again", victim+1), func() error {
		code, body, err := readyz(v)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %q", code, body)
		}
		return nil
	})
	load.stop()
	waitFor(t, time.Minute, "cluster whole again", func() error { return nodes[(victim+1)%3].converged(3) })
	load.check(t, v, user, pass)
}
