package backup

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// scanningTarget checks the runner's temporary directory for plaintext
// each time an object is uploaded, while the temporary files exist.
type scanningTarget struct {
	Target
	t       *testing.T
	tempDir string
	scanned int
}

func (s *scanningTarget) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	s.scanned += scanFor(s.t, s.tempDir, []byte(canary))
	return s.Target.Put(ctx, key, r, size)
}

// populate fills a node with mail in several mailboxes, with flags, an
// expunge, a move, an appended message and a message large enough to be
// stored in chunks.
func populate(t *testing.T, n *node) {
	t.Helper()
	ctx := testCtx(t)
	n.addUser(t, "alice@example.test")
	n.addUser(t, "bob@other.test")
	for i := 1; i <= 5; i++ {
		n.deliver(t, "alice@example.test", canary+" subject "+itoa(i), canary+" body "+itoa(i)+"\r\n"+randomText(2000))
	}
	n.deliver(t, "alice@example.test", "large", canary+"\r\n"+randomText(1<<20+300<<10))
	n.deliver(t, "bob@other.test", "hello bob", canary+" to bob")
	n.deliver(t, "bob@other.test", "again", canary+" to bob again")

	a := n.login(t, n.c, "alice@example.test")
	inbox, err := a.Mailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.StoreFlags(ctx, inbox.ID, []schema.UID{1}, schema.FlagsAdd, []string{schema.FlagSeen}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.StoreFlags(ctx, inbox.ID, []schema.UID{2}, schema.FlagsAdd, []string{schema.FlagFlagged, "$Label1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.StoreFlags(ctx, inbox.ID, []schema.UID{3}, schema.FlagsAdd, []string{schema.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Expunge(ctx, inbox.ID, []schema.ExpungeTarget{{UID: 3}}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateMailbox(ctx, "Projects/2026", ""); err != nil {
		t.Fatal(err)
	}
	proj, err := a.Mailbox(ctx, "Projects/2026")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Move(ctx, inbox.ID, []schema.UID{4}, proj.ID); err != nil {
		t.Fatal(err)
	}
	sent, err := a.Mailbox(ctx, "Sent")
	if err != nil {
		t.Fatal(err)
	}
	date := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if _, err := a.Append(ctx, sent.ID, []byte("Subject: "+canary+" sent\r\n\r\nsent body\r\n"), []string{schema.FlagSeen, schema.FlagAnswered}, date); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTripTwoFileTargetsAndS3(t *testing.T) {
	s3 := startS3(t)
	n := newNode(t)
	populate(t, n)
	users := []string{"alice@example.test", "bob@other.test"}
	before := map[string]mailState{}
	for _, u := range users {
		before[u] = readState(t, n.login(t, n.c, u))
	}
	if got := len(before["alice@example.test"]["INBOX"].Messages); got != 4 {
		t.Fatalf("alice's inbox has %d messages before the backup, want 4", got)
	}
	clusterID, err := n.c.ClusterID(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}

	base := t.TempDir()
	cfgs := []TargetConfig{
		{Region: "eu-west", URL: "file://" + filepath.Join(base, "eu")},
		{Region: "us-east", URL: "file://" + filepath.Join(base, "us")},
		s3.config("ap-south", "mail/backups"),
	}
	targets, err := OpenTargets(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	tempDir := t.TempDir()
	scan := &scanningTarget{Target: targets[0], t: t, tempDir: tempDir}
	targets[0] = scan
	reg := prometheus.NewRegistry()
	// Small node files travel with the backup; a missing one is skipped.
	nodeFiles := map[string]string{"node.json": `{"node_id":"n1"}`, "master.salt": "argon2id$salt"}
	for name, body := range nodeFiles {
		if err := os.WriteFile(filepath.Join(n.dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := newRunner(t, Config{Targets: targets, Cluster: n.c, TempDir: tempDir, Registry: reg,
		DataDir: n.dir, Files: []string{"node.json", "master.salt", "absent.json"}})
	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	man := res.Manifest
	if len(man.Shards) != 3 || man.Shards[0].Shard != 0 || man.ClusterID != clusterID || man.NodeID != "n1" {
		t.Fatalf("manifest %+v", man)
	}
	if got, want := man.Messages(), 4+1+1+2; got != want {
		t.Fatalf("manifest counts %d messages, want %d", got, want)
	}
	if man.Shards[0].Counts.Users != 2 || man.Shards[0].Counts.Domains != 2 {
		t.Fatalf("meta shard counts %+v", man.Shards[0].Counts)
	}
	if len(man.Files) != 2 || man.Files[0].Name != "node.json" || man.Files[1].Name != "master.salt" {
		t.Fatalf("manifest files %+v", man.Files)
	}
	if scan.scanned == 0 {
		t.Fatal("no temporary file was scanned during the upload")
	}

	cat, err := r.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Backups) != 1 || !cat.Backups[0].Complete || !reflect.DeepEqual(cat.Backups[0].Regions(), []string{"eu-west", "us-east", "ap-south"}) {
		t.Fatalf("catalog %+v", cat.Backups)
	}
	for _, c := range cat.Backups[0].Copies {
		if c.Objects != 6 || c.Bytes <= man.Size() {
			t.Fatalf("copy on %s: %d objects, %d bytes (shards %d)", c.Region, c.Objects, c.Bytes, man.Size())
		}
	}
	if v := gaugeValue(t, reg, "mail_backup_last_success_timestamp_seconds", nil); v != float64(man.Created.UnixNano())/1e9 {
		t.Fatalf("last success metric %v, want %v", v, man.Created)
	}

	// No plaintext in any object or manifest, on the file targets and in
	// the S3 server's storage, nor in what is left of the temp dir.
	for _, dir := range []string{base, s3.Root, tempDir} {
		scanFor(t, dir, []byte(canary))
	}
	if files := scanFor(t, s3.Root, []byte(canary)); files < 6 {
		t.Fatalf("S3 storage holds %d files, want the backup's 6 objects", files)
	}

	// Write the identity out and lose the node entirely.
	idFile := filepath.Join(t.TempDir(), "backup.identity")
	recipient := mustRecipient(t, n)
	if err := WriteIdentityFile(idFile, n.identity, recipient, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := n.c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(n.dir); err != nil {
		t.Fatal(err)
	}

	// Restore as on a new machine: targets from configuration, no cluster.
	fresh, err := OpenTargets(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	rr := newRunner(t, Config{Targets: fresh})
	identity, err := LoadIdentity(idFile)
	if err != nil {
		t.Fatal(err)
	}
	newDir := filepath.Join(t.TempDir(), "restored")
	rres, err := rr.Restore(testCtx(t), RestoreOptions{Identity: identity, Dir: newDir})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if rres.Manifest.ID != man.ID || len(rres.Problems) != 0 || rres.Sources[1] != "eu-west" {
		t.Fatalf("restore result %+v", rres)
	}
	scanFor(t, newDir, []byte(canary))
	for name, body := range nodeFiles {
		got, err := os.ReadFile(filepath.Join(newDir, name))
		info, _ := os.Stat(filepath.Join(newDir, name))
		if err != nil || string(got) != body || info.Mode().Perm() != 0o600 {
			t.Fatalf("restored %s: %q, %v, mode %v", name, got, err, info.Mode())
		}
	}

	c2 := openCluster(t, newDir, n.master)
	for _, u := range users {
		after := readState(t, n.login(t, c2, u))
		if !reflect.DeepEqual(before[u], after) {
			t.Fatalf("%s after restore differs:\nbefore %+v\nafter  %+v", u, summary(before[u]), summary(after))
		}
	}
	if id, _ := c2.ClusterID(testCtx(t)); id != clusterID {
		t.Fatalf("restored cluster id %q, want %q", id, clusterID)
	}
	if rc, _ := c2.BackupRecipient(testCtx(t)); rc != recipient {
		t.Fatal("restored cluster lost its backup public key")
	}
	// The restored node keeps serving: new mail gets the next UID.
	n.c = c2
	n.deliver(t, "alice@example.test", "after restore", "new")
	snap := readState(t, n.login(t, c2, "alice@example.test"))["INBOX"]
	if last := snap.Messages[len(snap.Messages)-1]; last.UID != before["alice@example.test"]["INBOX"].Info.UIDNext {
		t.Fatalf("new message got UID %d, want %d", last.UID, before["alice@example.test"]["INBOX"].Info.UIDNext)
	}

	// Verify every copy, including the S3 one, and see it in the list.
	v, err := rr.Verify(testCtx(t), man.ID, identity)
	if err != nil || !v.OK || len(v.Targets) != 3 {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	cat, err = rr.List(testCtx(t))
	if err != nil || cat.Backups[0].Verification == nil || !cat.Backups[0].Verification.OK {
		t.Fatalf("verification not listed: %+v, %v", cat, err)
	}
}

func mustRecipient(t *testing.T, n *node) string {
	t.Helper()
	r, err := n.c.BackupRecipient(testCtx(t))
	if err != nil || r == "" {
		t.Fatalf("backup recipient %q, %v", r, err)
	}
	return r
}

// summary shortens a mail state for failure messages.
func summary(st mailState) map[string]string {
	out := map[string]string{}
	for name, mb := range st {
		var b strings.Builder
		b.WriteString("validity=" + itoa(int(mb.Info.UIDValidity)) + " next=" + itoa(int(mb.Info.UIDNext)))
		for _, m := range mb.Messages {
			b.WriteString(" " + itoa(int(m.UID)) + strings.Join(m.Flags, ",") + "/" + itoa(int(m.Size)))
		}
		out[name] = b.String()
	}
	return out
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Counter != nil:
				return m.Counter.GetValue()
			}
		}
	}
	t.Fatalf("metric %s %v not found", name, labels)
	return 0
}
