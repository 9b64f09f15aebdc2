package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/backup/backuptest"
	"github.com/mailcluster/mailcluster/node/admin"
)

const e2eCanary = "CANARY-e2e-5d1c0a7e-never-in-backups"

// buildMailnode builds the real binary into a temporary directory.
func buildMailnode(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mailnode")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/mailcluster/mailcluster/node/cmd/mailnode").CombinedOutput()
	if err != nil {
		t.Fatalf("go build mailnode: %v\n%s", err, out)
	}
	return bin
}

// e2eNode is a mailnode serve process.
type e2eNode struct {
	cmd    *exec.Cmd
	done   chan error
	logs   *syncBuffer
	dir    string
	status admin.Status
}

func startMailnode(t *testing.T, bin, cfgFile, dir string) *e2eNode {
	t.Helper()
	n := &e2eNode{logs: &syncBuffer{}, dir: dir, done: make(chan error, 1)}
	n.cmd = exec.Command(bin, "serve", "--config", cfgFile, "--data", dir)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.done <- n.cmd.Wait() }()
	t.Cleanup(func() { n.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command(bin, "status", "--json", "--data", dir).Output()
		if err == nil && json.Unmarshal(out, &n.status) == nil && n.status.Ready {
			return n
		}
		select {
		case err := <-n.done:
			t.Fatalf("mailnode serve exited: %v\n%s", err, n.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailnode did not become ready\n%s", n.logs.String())
		}
		time.Sleep(50 * time.Millisecond) // polling interval while the node starts
	}
}

// stop ends the process with SIGTERM, as an init system would.
func (n *e2eNode) stop(t *testing.T) {
	if n.cmd.ProcessState != nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("mailnode exited with %v\n%s", err, n.logs.String())
		}
	case <-time.After(30 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		t.Errorf("mailnode did not stop on SIGTERM\n%s", n.logs.String())
	}
}

func runMailnode(t *testing.T, bin, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mailnode %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// imapState is what a client sees: per mailbox, UIDVALIDITY and every
// message's UID, flags and content.
type imapState map[string]imapMailbox

type imapMailbox struct {
	UIDValidity uint32
	Messages    []imapMessage
}

type imapMessage struct {
	UID   imap.UID
	Flags []string
	Body  string
}

func imapLogin(t *testing.T, addr, dir string) *imapclient.Client {
	t.Helper()
	tlsCfg := clientTLS(t, Config{DataDir: dir})
	c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: tlsCfg})
	if err != nil {
		t.Fatalf("imap dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login("alice@example.test", "alice-password-1").Wait(); err != nil {
		t.Fatalf("imap login: %v", err)
	}
	return c
}

func readIMAP(t *testing.T, c *imapclient.Client, mailboxes ...string) imapState {
	t.Helper()
	st := imapState{}
	for _, name := range mailboxes {
		sel, err := c.Select(name, nil).Wait()
		if err != nil {
			t.Fatalf("select %s: %v", name, err)
		}
		mb := imapMailbox{UIDValidity: sel.UIDValidity}
		if sel.NumMessages > 0 {
			var all imap.SeqSet
			all.AddRange(1, 0)
			msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true,
				BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
			if err != nil {
				t.Fatalf("fetch %s: %v", name, err)
			}
			for _, m := range msgs {
				var flags []string
				for _, f := range m.Flags {
					// \Recent belongs to a session, not to the mail: the
					// first session to see a message has it, a later one
					// (such as the one after the restore) does not.
					if strings.EqualFold(string(f), `\Recent`) {
						continue
					}
					flags = append(flags, string(f))
				}
				slices.Sort(flags)
				var body string
				if len(m.BodySection) > 0 {
					body = string(m.BodySection[0].Bytes)
				}
				mb.Messages = append(mb.Messages, imapMessage{UID: m.UID, Flags: flags, Body: body})
			}
		}
		st[name] = mb
	}
	return st
}

// TestBackupEndToEnd is the operator's story with the real binary: a
// node with two file targets in two regions and one S3 target receives
// mail over SMTP, the user files and flags it over IMAP, the operator
// backs up, drills, loses the node, restores into a new directory on
// "another machine" with the master key and the backup identity, starts
// a node there and the user sees the same mailboxes, UIDs, flags and
// UIDVALIDITY.
func TestBackupEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the mailnode binary")
	}
	s3 := backuptest.StartS3(t)
	bin := buildMailnode(t)
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	cfgFile := filepath.Join(base, "mailnode.toml")
	conf := fmt.Sprintf(`hostname = "localhost"
node_id = "node1"
mail_shards = 2
[listen]
smtp = "127.0.0.1:0"
submission = ""
submissions = ""
imap = ""
imaps = "127.0.0.1:0"
pop3 = ""
pop3s = ""
http = "127.0.0.1:0"
https = ""
[cluster]
listen = "127.0.0.1:0"
[log]
format = "text"
[backup]
every = "24h"
[[backup.targets]]
region = "eu-west"
url = "file://%s"
[[backup.targets]]
region = "us-east"
url = "file://%s"
[[backup.targets]]
region = "ap-south"
url = "s3://%s/mail/node1"
endpoint = "%s"
s3_region = "us-east-1"
access_key = "%s"
secret_key = "%s"
insecure = true
path_style = true
`, filepath.Join(base, "eu"), filepath.Join(base, "us"), s3.Bucket, s3.Endpoint, backuptest.AccessKey, backuptest.SecretKey)
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	n := startMailnode(t, bin, cfgFile, dir)
	if !strings.Contains(n.logs.String(), "MOVE THE IDENTITY FILE OFFLINE") {
		t.Fatalf("no notice to move the backup identity offline:\n%s", n.logs.String())
	}
	runMailnode(t, bin, "", "domain", "add", "--data", dir, "example.test")
	runMailnode(t, bin, "alice-password-1\n", "user", "add", "--data", dir, "alice@example.test")

	// Mail arrives over SMTP.
	smtpc, err := gosmtp.DialStartTLS(n.status.Listeners[ListenSMTP], clientTLS(t, Config{DataDir: dir}))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		msg := fmt.Sprintf("From: bob@remote.test\r\nTo: alice@example.test\r\nSubject: %s %d\r\n\r\n%s body %d\r\n%s\r\n",
			e2eCanary, i, e2eCanary, i, strings.Repeat("lorem ipsum dolor sit amet\r\n", 100*i))
		if err := smtpc.SendMail("bob@remote.test", []string{"alice@example.test"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	smtpc.Quit()

	// The user files and flags it over IMAP.
	c := imapLogin(t, n.status.Listeners[ListenIMAPS], dir)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	store := func(uid imap.UID, op imap.StoreFlagsOp, flags ...imap.Flag) {
		t.Helper()
		if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close(); err != nil {
			t.Fatalf("store: %v", err)
		}
	}
	store(1, imap.StoreFlagsAdd, imap.FlagSeen)
	store(2, imap.StoreFlagsAdd, imap.FlagFlagged, "$Work")
	store(3, imap.StoreFlagsAdd, imap.FlagDeleted)
	if err := c.UIDExpunge(imap.UIDSetNum(3)).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Projects", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Copy(imap.UIDSetNum(4), "Projects").Wait(); err != nil {
		t.Fatal(err)
	}
	before := readIMAP(t, c, "INBOX", "Projects", "Sent")
	c.Logout().Wait()
	if len(before["INBOX"].Messages) != 3 || before["INBOX"].Messages[2].UID != 4 || len(before["Projects"].Messages) != 1 {
		t.Fatalf("mail before the backup: %+v", before)
	}

	// Back up, see it in every region, and drill.
	out := runMailnode(t, bin, "", "backup", "now", "--data", dir)
	if !strings.Contains(out, "on eu-west, us-east, ap-south") {
		t.Fatalf("backup now: %s", out)
	}
	out = runMailnode(t, bin, "", "backup", "drill", "--data", dir)
	if !strings.Contains(out, "drill ok") {
		t.Fatalf("backup drill: %s", out)
	}
	list := runMailnode(t, bin, "", "backup", "list", "--data", dir)
	if !strings.Contains(list, "complete on eu-west,us-east,ap-south") || !strings.Contains(list, "last restore drill: ok") ||
		!strings.Contains(list, "RTO") || !strings.Contains(list, "RPO") {
		t.Fatalf("backup list:\n%s", list)
	}
	httpBase := "http://" + n.status.Listeners[ListenHTTP]
	for path, want := range map[string]string{"/readyz": "backup drill: ok", "/metrics": "mail_backup_drill_rpo_seconds"} {
		resp, err := http.Get(httpBase + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Fatalf("%s lacks %q:\n%s", path, want, b)
		}
	}

	// The identity and master key go offline; the machine is lost.
	keys := filepath.Join(base, "offline")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{masterKeyName, backupIdentityName} {
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(keys, name)); err != nil {
			t.Fatal(err)
		}
	}
	n.stop(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	// Nothing that left the node holds the canary.
	for _, root := range []string{filepath.Join(base, "eu"), filepath.Join(base, "us"), s3.Root} {
		if err := scanTree(root, e2eCanary); err != nil {
			t.Fatal(err)
		}
	}

	// Restore on a new machine: the config, the identity, the master key.
	newDir := filepath.Join(base, "restored")
	out = runMailnode(t, bin, "", "backup", "restore", "--config", cfgFile, "--identity", filepath.Join(keys, backupIdentityName),
		"--master-key", filepath.Join(keys, masterKeyName), "--to", newDir)
	if !strings.Contains(out, "restored backup") {
		t.Fatalf("restore: %s", out)
	}
	n2 := startMailnode(t, bin, cfgFile, newDir)
	c2 := imapLogin(t, n2.status.Listeners[ListenIMAPS], newDir)
	after := readIMAP(t, c2, "INBOX", "Projects", "Sent")
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("mail after the restore differs:\nbefore %+v\nafter  %+v", before, after)
	}
	out = runMailnode(t, bin, "", "backup", "verify", "--config", cfgFile, "--identity", filepath.Join(keys, backupIdentityName), "--latest")
	if !strings.Contains(out, "verify ok") || !strings.Contains(out, "eu-west, us-east, ap-south") {
		t.Fatalf("verify: %s", out)
	}
}

// scanTree reports a file under root that contains needle.
func scanTree(root, needle string) error {
	return filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(needle)) {
			return fmt.Errorf("plaintext canary in %s", p)
		}
		return nil
	})
}
