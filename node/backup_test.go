package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/backup"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestBackupConfigParse(t *testing.T) {
	cfg, err := Parse("test.toml", []byte(`
data_dir = "/var/lib/mailnode"
[backup]
every = "6h"
drill_every = "-1s"
drill_identity_file = "/srv/restore/backup.identity"
[backup.retention]
daily = 3
weekly = -1
[[backup.targets]]
region = "eu-west"
url = "file:///mnt/backups"
[[backup.targets]]
region = "us-east"
url = "s3://mail-backups/node1"
endpoint = "https://s3.us-east-1.amazonaws.com"
s3_region = "us-east-1"
access_key = "AKIAEXAMPLE"
secret_key_file = "/etc/mailnode/s3.secret"
`))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Backup
	if b.Every != 6*time.Hour || b.DrillEvery >= 0 || b.Retention.Daily != 3 || b.Retention.Weekly != -1 || len(b.Targets) != 2 {
		t.Fatalf("backup config %+v", b)
	}
	if tg := b.Targets[1]; tg.Region != "us-east" || tg.AccessKey != "AKIAEXAMPLE" || tg.SecretKeyFile != "/etc/mailnode/s3.secret" {
		t.Fatalf("s3 target %+v", tg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse("t", []byte("[backup]\nevry = \"1h\"\n")); err == nil || !strings.Contains(err.Error(), "backup.evry") {
		t.Fatalf("unknown backup key: %v", err)
	}

	_, rcpt, err := backup.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	good := Default()
	good.DataDir = t.TempDir()
	good.Backup.Recipient = rcpt
	if err := good.Validate(); err != nil {
		t.Fatalf("valid recipient: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*BackupConfig)
		want string
	}{
		{"duplicate region", func(b *BackupConfig) {
			b.Targets = []backup.TargetConfig{{Region: "eu", URL: "file:///a"}, {Region: "eu", URL: "file:///b"}}
		}, `region "eu" is used by two targets`},
		{"bad url", func(b *BackupConfig) { b.Targets = []backup.TargetConfig{{Region: "eu", URL: "ftp://x/y"}} }, "backup.targets[0]"},
		{"too often", func(b *BackupConfig) { b.Every = 30 * time.Second }, "shorter than a minute"},
		{"classic key", func(b *BackupConfig) { b.Recipient = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq" }, "backup.recipient"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			cfg.Backup = BackupConfig{}
			tc.edit(&cfg.Backup)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMergeBackupTargets(t *testing.T) {
	base := []backup.TargetConfig{{Region: "eu", URL: "file:///a"}, {Region: "us", URL: "file:///b"}}
	got, err := mergeBackupTargets(base, []string{"us=file:///c", "ap=s3://bucket/x?endpoint=127.0.0.1:9000"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1].URL != "file:///c" || got[2].Region != "ap" || got[2].Endpoint != "127.0.0.1:9000" || base[1].URL != "file:///b" {
		t.Fatalf("merged %+v", got)
	}
	if _, err := mergeBackupTargets(nil, []string{"nonsense"}); err == nil {
		t.Fatal("bad flag accepted")
	}
}

func TestNodeCreatesBackupKeyAtInit(t *testing.T) {
	cfg := testConfig(t)
	var logs syncBuffer
	start := func() *Node {
		n, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := start()
	path := filepath.Join(cfg.DataDir, backupIdentityName)
	if m := mode(t, path); m != 0o600 {
		t.Fatalf("identity file mode %v", m)
	}
	id, err := backup.LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	rcpt, err := n.Directory().BackupRecipient(context.Background())
	if err != nil || rcpt == "" || rcpt != id.Recipient() {
		t.Fatalf("cluster recipient %q, identity's %q, %v", rcpt, id.Recipient(), err)
	}
	if cid, err := n.Directory().ClusterID(context.Background()); err != nil || len(cid) != 32 {
		t.Fatalf("cluster id %q, %v", cid, err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Count(logs.String(), "MOVE THE IDENTITY FILE OFFLINE") != 1 {
		t.Fatalf("the offline notice is not in the logs once:\n%s", logs.String())
	}
	// The operator moves the identity offline; later starts keep the key
	// and say nothing more.
	if err := os.Rename(path, filepath.Join(t.TempDir(), "offline.identity")); err != nil {
		t.Fatal(err)
	}
	n = start()
	defer n.Close()
	if again, _ := n.Directory().BackupRecipient(context.Background()); again != rcpt {
		t.Fatal("the backup key changed on restart")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("a new identity file was written on restart")
	}
	if strings.Count(logs.String(), "MOVE THE IDENTITY FILE OFFLINE") != 1 {
		t.Fatal("the offline notice was repeated")
	}
	if strings.Contains(logs.String(), "AGE-SECRET-KEY") {
		t.Fatal("the secret key was logged")
	}
}

func TestNodeUsesConfiguredBackupKey(t *testing.T) {
	cfg := testConfig(t)
	_, rcpt, err := backup.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Backup.Recipient = rcpt
	n := startNode(t, cfg)
	if got, _ := n.Directory().BackupRecipient(context.Background()); got != rcpt {
		t.Fatalf("cluster recipient %q, want the configured one", got)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, backupIdentityName)); !os.IsNotExist(err) {
		t.Fatal("an identity was generated although the config names a public key")
	}
}

// backupNodeConfig is a test node with two file targets and no automatic
// drills.
func backupNodeConfig(t *testing.T) (Config, string) {
	t.Helper()
	cfg := testConfig(t)
	base := t.TempDir()
	cfg.Backup.Targets = []backup.TargetConfig{
		{Region: "eu", URL: "file://" + filepath.Join(base, "eu")},
		{Region: "us", URL: "file://" + filepath.Join(base, "us")},
	}
	cfg.Backup.DrillEvery = -1
	return cfg, base
}

func writeBackupConfigFile(t *testing.T, cfg Config) string {
	t.Helper()
	var b strings.Builder
	for _, tg := range cfg.Backup.Targets {
		fmt.Fprintf(&b, "[[backup.targets]]\nregion = %q\nurl = %q\n", tg.Region, tg.URL)
	}
	path := filepath.Join(t.TempDir(), "mailnode.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCLIBackupRestoreRoundTrip(t *testing.T) {
	cfg, base := backupNodeConfig(t)
	n := startNode(t, cfg)
	ctx := context.Background()
	c := n.Directory()
	if err := c.AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.AddUser(ctx, "dora@example.test", "dora-password"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("Subject: note %d\r\n\r\nsecret words %d\r\n", i, i)
		if err := n.Store().Deliver(ctx, schema.Delivery{Recipients: []string{"dora@example.test"}, Message: []byte(msg)}); err != nil {
			t.Fatal(err)
		}
	}
	dir := cfg.DataDir

	out := mustCLI(t, "", "backup", "now", "--data", dir)
	if !strings.Contains(out, "complete: 3 shards, 3 messages") || !strings.Contains(out, "on eu, us") {
		t.Fatalf("backup now: %q", out)
	}
	// A terminal gets the node's progress as it goes.
	var progress bytes.Buffer
	var res backupNowResult
	client := newBackupClient(dir)
	defer client.close()
	if err := client.stream(ctx, pathBackupNow, &progress, &res); err != nil {
		t.Fatal(err)
	}
	if p := progress.String(); !strings.Contains(p, "snapshot shard 0: ") || !strings.Contains(p, "upload "+res.ID+": ") || !strings.Contains(p, "100%") {
		t.Fatalf("progress shown: %q", p)
	}
	list := mustCLI(t, "", "backup", "list", "--data", dir)
	if !strings.Contains(list, "complete on eu,us") || !strings.Contains(list, "last restore drill: none") ||
		!strings.Contains(list, "file://"+filepath.Join(base, "us")) {
		t.Fatalf("backup list:\n%s", list)
	}
	// The node still holds its identity, so it can drill on request.
	drill := mustCLI(t, "", "backup", "drill", "--data", dir)
	if !strings.Contains(drill, "drill ok") || !strings.Contains(drill, "restore time (RTO)") {
		t.Fatalf("backup drill: %q", drill)
	}
	if code, body := httpGet(t, n, "/readyz"); code != 200 || !strings.Contains(body, "backup drill: ok") {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	if _, body := httpGet(t, n, "/metrics"); !strings.Contains(body, "mail_backup_drill_rto_seconds") || !strings.Contains(body, `mail_backup_drill_result{result="ok"} 1`) {
		t.Fatal("drill metrics missing from /metrics")
	}
	mustCLI(t, "", "backup", "verify", "--data", dir, "--latest")

	// Working on the targets directly needs no node.
	cfgFile := writeBackupConfigFile(t, cfg)
	list = mustCLI(t, "", "backup", "list", "--config", cfgFile)
	if !strings.Contains(list, "complete on eu,us") || !strings.Contains(list, "last restore drill: ok") {
		t.Fatalf("local backup list:\n%s", list)
	}

	// Lose the node; keep the master key and identity offline.
	keys := t.TempDir()
	for _, name := range []string{masterKeyName, backupIdentityName} {
		if err := os.WriteFile(filepath.Join(keys, name), mustRead(t, filepath.Join(dir, name)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	failCLI(t, ExitError, "no node is serving", "", "backup", "now", "--data", dir)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	identity := filepath.Join(keys, backupIdentityName)
	wrongKey := filepath.Join(t.TempDir(), "wrong.key")
	os.WriteFile(wrongKey, bytes.Repeat([]byte{7}, 32), 0o600)
	failCLI(t, ExitError, "does not authenticate under this master key", "",
		"backup", "restore", "--config", cfgFile, "--identity", identity, "--master-key", wrongKey, "--to", filepath.Join(base, "wrong"))
	otherID := filepath.Join(t.TempDir(), "other.identity")
	other, otherRcpt, _ := backup.GenerateKey()
	if err := backup.WriteIdentityFile(otherID, other, otherRcpt, time.Now()); err != nil {
		t.Fatal(err)
	}
	failCLI(t, ExitError, "the identity does not match the backup key", "",
		"backup", "restore", "--config", cfgFile, "--identity", otherID, "--to", filepath.Join(base, "other"))

	newDir := filepath.Join(base, "restored")
	out = mustCLI(t, "", "backup", "restore", "--config", cfgFile, "--identity", identity,
		"--master-key", filepath.Join(keys, masterKeyName), "--to", newDir)
	if !strings.Contains(out, "restored backup") || !strings.Contains(out, "master key: checked and copied in") {
		t.Fatalf("restore: %q", out)
	}
	cfg2 := cfg
	cfg2.DataDir = newDir
	n2 := startNode(t, cfg2)
	acct, err := n2.Store().Authenticate(ctx, schema.Credentials{Username: "dora@example.test", Password: "dora-password"})
	if err != nil {
		t.Fatalf("login on the restored node: %v", err)
	}
	inbox, err := acct.Mailbox(ctx, "INBOX")
	if err != nil || inbox.Messages != 3 || inbox.UIDNext != 4 {
		t.Fatalf("restored inbox %+v, %v", inbox, err)
	}
	if got, _ := n2.Directory().BackupRecipient(ctx); got != backupRecipientOf(t, identity) {
		t.Fatal("the restored cluster lost its backup key")
	}
	out = mustCLI(t, "", "backup", "verify", "--config", cfgFile, "--identity", identity, "--latest")
	if !strings.Contains(out, "verify ok") {
		t.Fatalf("verify: %q", out)
	}
}

func backupRecipientOf(t *testing.T, path string) string {
	t.Helper()
	id, err := backup.LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient()
}

func TestCLIBackupUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		want string
		args []string
	}{
		{"backup needs a subcommand", []string{"backup"}},
		{"unknown backup subcommand", []string{"backup", "explode"}},
		{"needs --data DIR", []string{"backup", "now"}},
		{"backup now does not take --config", []string{"backup", "now", "--config", "x.toml"}},
		{"needs --data DIR (ask the node), or --config", []string{"backup", "list"}},
		{"not a backup id", []string{"backup", "verify", "--data", dir, "yesterday"}},
		{"a backup id or --latest, not both", []string{"backup", "verify", "--data", dir, "--latest", "20260101T000000.000Z-00000000"}},
		{"--identity works on the targets directly", []string{"backup", "verify", "--data", dir, "--identity", "x"}},
		{"needs --identity FILE", []string{"backup", "restore", "--backup-target", "eu=file:///srv/b", "--to", dir}},
		{"needs --to NEWDIR", []string{"backup", "restore", "--backup-target", "eu=file:///srv/b", "--identity", "x"}},
		{"want REGION=URL", []string{"backup", "list", "--backup-target", "file:///srv/b"}},
		{"not both", []string{"backup", "list", "--data", dir, "--backup-target", "eu=file:///srv/b"}},
		{"want REGION=URL", []string{"serve", "--data", dir, "--backup-target", "nonsense"}},
	} {
		failCLI(t, ExitUsage, tc.want, "", tc.args...)
	}
	// A node without targets says so.
	n := startNode(t, testConfig(t))
	failCLI(t, ExitError, "no backup targets configured", "", "backup", "now", "--data", n.cfg.DataDir)
}
