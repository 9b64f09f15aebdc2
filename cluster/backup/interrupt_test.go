package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInterruptedUploadLeavesNoCompleteBackup(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "dave@example.test")
	n.deliver(t, "dave@example.test", "one", randomText(3000))
	targets := fileTargets(t, "eu", "us")
	flaky := &failingTarget{Target: targets[1], match: "shard-1.age", limit: 100}
	flaky.setFail(true)
	targets[1] = flaky
	r := newRunner(t, Config{Targets: targets, Cluster: n.c})

	_, err := r.Backup(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "target us") || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("backup through a failing target: %v", err)
	}
	if s := r.Status(); !strings.Contains(s.LastBackupError, "target us") {
		t.Fatalf("status after a failed backup: %+v", s)
	}
	cat, err := r.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cat.Latest() != nil {
		t.Fatalf("a failed backup is listed as complete: %+v", cat.Latest())
	}
	for _, b := range cat.Backups {
		if len(b.Regions()) > 0 {
			t.Fatalf("failed backup %s left a manifest on %v", b.ID, b.Regions())
		}
	}

	// The next run succeeds.
	flaky.setFail(false)
	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatalf("backup after the target recovered: %v", err)
	}
	cat, err = r.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Backups) != 1 || cat.Latest() == nil || cat.Latest().ID != res.Manifest.ID {
		t.Fatalf("catalog after recovery: %+v", cat.Backups)
	}
}

// A process killed mid-upload leaves shard objects, a temporary file and
// no manifest. list shows it as partial, never complete; the next run
// succeeds and deletes it.
func TestKilledBackupIsPartialAndCleanedUp(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "erin@example.test")
	n.deliver(t, "erin@example.test", "one", randomText(3000))
	targets := fileTargets(t, "eu", "us")
	clock := newFakeClock(time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC))
	r := newRunner(t, Config{Targets: targets, Cluster: n.c, Clock: clock})

	killed := newID(clock.Now().Add(-time.Hour))
	for _, tg := range targets {
		root := tg.(*fileTarget).root
		if err := os.MkdirAll(filepath.Join(root, killed), 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, killed, "shard-0.age"), []byte("age-encryption.org/v1 ..."), 0o600)
		os.WriteFile(filepath.Join(root, killed, ".shard-1.age.tmp-0123456789ab"), []byte("partial"), 0o600)
	}
	// One target even got the manifest before the process died.
	mustPut(t, targets[0], objectKey(killed, manifestName), "{}")

	cat, err := r.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	b := cat.Find(killed)
	if b == nil || b.Complete || cat.Latest() != nil {
		t.Fatalf("killed backup listed as %+v", b)
	}
	if got := strings.Join(b.Partial(), ","); got != "us" {
		t.Fatalf("partial copies on %q, want us", got)
	}

	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Pruned, ",") != killed {
		t.Fatalf("pruned %v, want the killed backup %s", res.Pruned, killed)
	}
	for _, tg := range targets {
		if _, err := os.Stat(filepath.Join(tg.(*fileTarget).root, killed)); !os.IsNotExist(err) {
			t.Fatalf("killed backup still on %s: %v", tg.Region(), err)
		}
	}
}

func TestUnreachableTarget(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "frank@example.test")
	targets := fileTargets(t, "eu")
	// A file where the directory should be: every operation fails.
	blocked := filepath.Join(t.TempDir(), "blocked")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	down, err := OpenTarget(TargetConfig{Region: "us", URL: "file://" + blocked + "/sub"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, Config{Targets: append(targets, down), Cluster: n.c})
	if _, err := r.Backup(testCtx(t)); err == nil || !strings.Contains(err.Error(), "target us") {
		t.Fatalf("backup with an unreachable target: %v", err)
	}
	cat, err := r.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Unreachable) != 1 || cat.Unreachable[0].Region != "us" || cat.Latest() != nil {
		t.Fatalf("catalog with an unreachable target: %+v", cat)
	}
	if _, err := r.Prune(testCtx(t)); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("prune with an unreachable target: %v", err)
	}
	// The region that works holds nothing that looks complete.
	objs, err := targets[0].List(testCtx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if strings.HasSuffix(o.Key, manifestName) {
			t.Fatalf("manifest %s left behind", o.Key)
		}
	}
}

func mustPut(t *testing.T, tg Target, key, body string) {
	t.Helper()
	if err := tg.Put(testCtx(t), key, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

// With a region gone, restore still finds the newest backup the other
// regions hold.
func TestRestoreWithARegionDown(t *testing.T) {
	b := newBackedUp(t, "eu", "us")
	root := b.targets[1].(*fileTarget).root
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, nil, 0o600); err != nil { // the mount is gone
		t.Fatal(err)
	}
	down, err := OpenTarget(TargetConfig{Region: "us", URL: "file://" + root + "/x"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, Config{Targets: []Target{b.targets[0], down}})
	res, err := r.Restore(testCtx(t), RestoreOptions{Identity: b.n.identity, Dir: filepath.Join(t.TempDir(), "r")})
	if err != nil {
		t.Fatalf("restore with one region down: %v", err)
	}
	if res.Manifest.ID != b.man.ID || res.Sources[0] != "eu" {
		t.Fatalf("restored %s from %v", res.Manifest.ID, res.Sources)
	}
	// Verify, by contrast, insists on every region.
	if _, err := r.Verify(testCtx(t), "", b.n.identity); err == nil {
		t.Fatal("verify passed with a region down")
	}
}

// Backups taken within the same millisecond (here: a clock that does not
// move) still get increasing ids, so "latest" is the last one taken.
func TestBackupIDsIncrease(t *testing.T) {
	n := newNode(t)
	clock := newFakeClock(at("2026-05-01 03:00"))
	r := newRunner(t, Config{Targets: fileTargets(t, "eu"), Cluster: n.c, Clock: clock})
	var ids []string
	for i := 0; i < 3; i++ {
		res, err := r.Backup(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.Manifest.ID)
	}
	if !(ids[0] < ids[1] && ids[1] < ids[2]) {
		t.Fatalf("ids %v do not increase", ids)
	}
	cat, err := r.List(testCtx(t))
	if err != nil || cat.Latest().ID != ids[2] {
		t.Fatalf("latest %v, want %s (%v)", cat.Latest(), ids[2], err)
	}
}
