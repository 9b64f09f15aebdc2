package node

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"
)

// TestDeleteUserShredsBackups is crypto-shredding with the real binary:
// a backup is taken, a user is deleted, and that older backup is restored
// into a new directory: the deleted user's record is there but its mail
// cannot be read (the key store the restore uses no longer holds its
// key), while another user's mail reads as before.
func TestDeleteUserShredsBackups(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the mailnode binary")
	}
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
http = ""
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
`, filepath.Join(base, "eu"), filepath.Join(base, "us"))
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startMailnode(t, bin, cfgFile, dir)
	runMailnode(t, bin, "", "domain", "add", "--data", dir, "example.test")
	users := map[string]string{"alice@example.test": "alice-password-1", "carol@example.test": "carol-password-1"}
	for u, pw := range users {
		runMailnode(t, bin, pw+"\n", "user", "add", "--data", dir, u)
	}
	smtpc, err := gosmtp.DialStartTLS(n.status.Listeners[ListenSMTP], clientTLS(t, Config{DataDir: dir}))
	if err != nil {
		t.Fatal(err)
	}
	for u := range users {
		msg := "From: bob@remote.test\r\nTo: " + u + "\r\nSubject: for " + u + "\r\n\r\nbody for " + u + "\r\n"
		if err := smtpc.SendMail("bob@remote.test", []string{u}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	smtpc.Quit()
	login := func(addr, dir, user string) (*imapclient.Client, error) {
		c, err := imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: clientTLS(t, Config{DataDir: dir})})
		if err != nil {
			t.Fatalf("imap dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.Login(user, users[user]).Wait()
	}
	c, err := login(n.status.Listeners[ListenIMAPS], dir, "carol@example.test")
	if err != nil {
		t.Fatal(err)
	}
	carolBefore := readIMAP(t, c, "INBOX")
	c.Logout().Wait()
	if len(carolBefore["INBOX"].Messages) != 1 {
		t.Fatalf("carol's inbox: %+v", carolBefore)
	}

	out := runMailnode(t, bin, "", "backup", "now", "--data", dir)
	if !strings.Contains(out, "on eu-west, us-east") {
		t.Fatalf("backup now: %s", out)
	}
	for _, region := range []string{"eu", "us"} {
		if _, err := os.Stat(filepath.Join(base, region, "keystore.age")); err != nil {
			t.Fatalf("no key store on target %s: %v", region, err)
		}
	}
	out = runMailnode(t, bin, "", "user", "delete", "--data", dir, "alice@example.test")
	for _, want := range []string{"user alice@example.test deleted", "key: destroyed", "mail: deleted",
		"backups in eu-west: key store rewritten", "backups in us-east: key store rewritten"} {
		if !strings.Contains(out, want) {
			t.Fatalf("user delete output lacks %q:\n%s", want, out)
		}
	}
	// The drill restores the older backup with the current key store.
	if out = runMailnode(t, bin, "", "backup", "drill", "--data", dir); !strings.Contains(out, "drill ok") {
		t.Fatalf("backup drill: %s", out)
	}

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

	// The backup taken before the deletion, restored.
	newDir := filepath.Join(base, "restored")
	out = runMailnode(t, bin, "", "backup", "restore", "--config", cfgFile, "--identity", filepath.Join(keys, backupIdentityName),
		"--master-key", filepath.Join(keys, masterKeyName), "--to", newDir)
	if !strings.Contains(out, "restored backup") {
		t.Fatalf("restore: %s", out)
	}
	n2 := startMailnode(t, bin, cfgFile, newDir)
	// The deleted user's record came back with the old backup...
	if out = runMailnode(t, bin, "", "user", "show", "--data", newDir, "alice@example.test"); !strings.Contains(out, "alice@example.test") {
		t.Fatalf("user show in the restored backup: %s", out)
	}
	// ...but its mail cannot be opened: the key is gone.
	if _, err := login(n2.status.Listeners[ListenIMAPS], newDir, "alice@example.test"); err == nil {
		t.Fatal("the deleted user logged in to the restored backup")
	}
	cmd := exec.Command(bin, "user", "export", "--data", newDir, "alice@example.test", "--to", filepath.Join(base, "alice.mbox"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("exported the deleted user's mail from the restored backup:\n%s", out)
	}
	c2, err := login(n2.status.Listeners[ListenIMAPS], newDir, "carol@example.test")
	if err != nil {
		t.Fatalf("carol in the restored backup: %v", err)
	}
	if after := readIMAP(t, c2, "INBOX"); fmt.Sprint(after) != fmt.Sprint(carolBefore) {
		t.Fatalf("carol's mail after the restore:\nbefore %+v\nafter  %+v", carolBefore, after)
	}
}
