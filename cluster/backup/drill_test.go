package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestDrillRecordsRPOAndRTO(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "hank@example.test")
	n.deliver(t, "hank@example.test", "drill me", canary+" "+randomText(2000))
	clock := newFakeClock(at("2026-04-01 03:00"))
	reg := prometheus.NewRegistry()
	var checked string
	tempDir := t.TempDir()
	cfg := Config{Targets: fileTargets(t, "eu", "us"), Cluster: n.c, Clock: clock, Registry: reg, TempDir: tempDir,
		DrillCheck: func(ctx context.Context, dir, nodeID string) error {
			// Nothing the drill decrypted holds plaintext mail.
			if files := scanFor(t, tempDir, []byte(canary)); files == 0 {
				return errors.New("no restored files to scan")
			}
			// Open the restored directory as a node would, and let the
			// clock show the restore took 90 seconds.
			c := openCluster(t, dir, n.master)
			defer c.Close()
			a, err := c.Authenticate(ctx, "hank@example.test", "password-hank@example.test")
			if err != nil {
				return err
			}
			st := readState(t, a)
			if len(st["INBOX"].Messages) != 1 || !strings.Contains(st["INBOX"].Messages[0].Body, canary) {
				return errors.New("restored inbox is wrong")
			}
			checked = nodeID
			clock.Advance(90 * time.Second)
			return nil
		}}
	r := newRunner(t, cfg)
	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	clock.Set(at("2026-04-01 05:00"))
	v, err := r.Drill(testCtx(t), n.identity)
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	if !v.OK || v.RestoreSeconds != 90 || v.BackupAgeSeconds != 7200 || len(v.Targets) != 2 || checked != "n1" {
		t.Fatalf("drill result %+v (checked %q)", v, checked)
	}
	for name, want := range map[string]float64{
		"mail_backup_drill_rto_seconds": 90,
		"mail_backup_drill_rpo_seconds": 7200,
		"mail_backup_age_seconds":       2*3600 + 90,
	} {
		if got := gaugeValue(t, reg, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if gaugeValue(t, reg, "mail_backup_drill_result", map[string]string{"result": "ok"}) != 1 ||
		gaugeValue(t, reg, "mail_backup_drill_result", map[string]string{"result": "failed"}) != 0 {
		t.Error("drill result metric does not say ok")
	}

	// Another process (a new runner, as after a restart) sees the drill
	// in the list and in its status and metrics.
	reg2 := prometheus.NewRegistry()
	r2 := newRunner(t, Config{Targets: cfg.Targets, Clock: clock, Registry: reg2})
	cat, err := r2.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if d := cat.LastDrill; d == nil || !d.OK || d.RestoreSeconds != 90 || cat.Backups[0].Verification.Kind != KindDrill {
		t.Fatalf("listed drill %+v", cat.LastDrill)
	}
	if s := r2.Status(); s.LastDrill == nil || s.LastSuccess != res.Manifest.Created {
		t.Fatalf("status %+v", s)
	}
	if got := gaugeValue(t, reg2, "mail_backup_drill_rpo_seconds", nil); got != 7200 {
		t.Fatalf("rpo metric after a restart %v", got)
	}
	// A later verification is listed as the newest check without hiding
	// the drill.
	clock.Advance(time.Minute)
	if _, err := r2.Verify(testCtx(t), "", n.identity); err != nil {
		t.Fatal(err)
	}
	cat, err = r2.List(testCtx(t))
	if err != nil || cat.LastDrill == nil || cat.LastDrill.RestoreSeconds != 90 || cat.Backups[0].Verification.Kind != KindVerify {
		t.Fatalf("after a verify: last drill %+v, newest check %+v, %v", cat.LastDrill, cat.Backups[0].Verification, err)
	}
	// The drill cleaned up after itself.
	entries, err := os.ReadDir(r.cfg.TempDir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("temp dir holds %v, %v", entries, err)
	}
}

func TestFailedDrillIsRecorded(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "ivy@example.test")
	clock := newFakeClock(at("2026-04-01 03:00"))
	reg := prometheus.NewRegistry()
	targets := fileTargets(t, "eu")
	r := newRunner(t, Config{Targets: targets, Cluster: n.c, Clock: clock, Registry: reg})

	// No backup yet.
	if _, err := r.Drill(testCtx(t), n.identity); err == nil || !strings.Contains(err.Error(), "no complete backup") {
		t.Fatalf("drill without a backup: %v", err)
	}
	res, err := r.Backup(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(targets[0].(*fileTarget).root, res.Manifest.ID, "shard-2.age"), func(n int) int { return n - 5 })
	clock.Advance(time.Minute)
	v, err := r.Drill(testCtx(t), n.identity)
	if err == nil || v.OK || !strings.Contains(v.Error, "shard-2.age") {
		t.Fatalf("drill of a damaged backup: %+v, %v", v, err)
	}
	if gaugeValue(t, reg, "mail_backup_drill_result", map[string]string{"result": "failed"}) != 1 {
		t.Fatal("failed drill not in metrics")
	}
	if s := r.Status(); s.LastDrill == nil || s.LastDrill.OK {
		t.Fatalf("status after a failed drill: %+v", s.LastDrill)
	}
	cat, err := r.List(testCtx(t))
	if err != nil || cat.LastDrill == nil || cat.LastDrill.OK {
		t.Fatalf("listed drill after a failure: %+v, %v", cat.LastDrill, err)
	}
}

func TestSchedulerDrivenByClock(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "jack@example.test")
	clock := newFakeClock(at("2026-06-01 00:00"))
	reg := prometheus.NewRegistry()
	targets := fileTargets(t, "eu", "us")
	r := newRunner(t, Config{Targets: targets, Cluster: n.c, Clock: clock, Registry: reg})
	var drillCount atomic.Int32
	drills := func() int32 { return drillCount.Load() }
	sched, err := r.StartScheduler(Schedule{
		BackupEvery: time.Hour, DrillEvery: 3 * time.Hour,
		Identity: func() (*Identity, error) { drillCount.Add(1); return n.identity, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sched.Close()
	runs := func() float64 { return counterOr0(reg, "mail_backup_runs_total", "ok") }
	idle := func() bool { return clock.pending() > 0 }

	// A first backup and a first drill run at once.
	eventually(t, 20*time.Second, "first backup and drill", func() bool { return idle() && runs() == 1 && drills() == 1 })
	if s := r.Status(); s.LastDrill == nil || !s.LastDrill.OK {
		t.Fatalf("first drill: %+v", s.LastDrill)
	}
	// Nothing happens before the hour is up.
	clock.Advance(59 * time.Minute)
	eventually(t, 5*time.Second, "scheduler idle", idle)
	if runs() != 1 {
		t.Fatal("backup ran early")
	}
	for want := 2.0; want <= 3; want++ {
		clock.Advance(time.Hour)
		eventually(t, 20*time.Second, "hourly backup", func() bool { return idle() && runs() == want })
	}
	if drills() != 1 {
		t.Fatalf("%d drills before three hours passed", drills())
	}
	clock.Advance(time.Hour)
	eventually(t, 20*time.Second, "second drill", func() bool { return idle() && runs() == 4 && drills() == 2 })
	if err := sched.Close(); err != nil {
		t.Fatal(err)
	}

	// A restarted scheduler waits for the interval from the newest backup
	// instead of backing up at once.
	clock.Advance(20 * time.Minute)
	sched2, err := r.StartScheduler(Schedule{BackupEvery: time.Hour, DrillEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sched2.Close()
	eventually(t, 5*time.Second, "restarted scheduler idle", idle)
	if runs() != 4 {
		t.Fatal("restarted scheduler backed up at once")
	}
	clock.Advance(40 * time.Minute)
	eventually(t, 20*time.Second, "backup after restart", func() bool { return idle() && runs() == 5 })
}

func TestScheduleValidate(t *testing.T) {
	for _, s := range []Schedule{{BackupEvery: time.Second}, {DrillEvery: 30 * time.Second}, {RetryAfter: -1}} {
		if s.Validate() == nil {
			t.Errorf("schedule %+v accepted", s)
		}
	}
	if err := (Schedule{BackupEvery: time.Minute, DrillEvery: -1}).Validate(); err != nil {
		t.Error(err)
	}
}

func counterOr0(reg *prometheus.Registry, name, res string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == res {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Without an identity in this process the scheduler skips drills rather
// than recording failures; an identity that cannot be loaded fails them.
func TestSchedulerDrillIdentity(t *testing.T) {
	n := newNode(t)
	for _, tc := range []struct {
		name     string
		identity func() (*Identity, error)
		failed   bool
	}{
		{"none", func() (*Identity, error) { return nil, nil }, false},
		{"unreadable", func() (*Identity, error) { return LoadIdentity(filepath.Join(t.TempDir(), "missing")) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(at("2026-06-01 00:00"))
			reg := prometheus.NewRegistry()
			r := newRunner(t, Config{Targets: fileTargets(t, "eu"), Cluster: n.c, Clock: clock, Registry: reg})
			sched, err := r.StartScheduler(Schedule{BackupEvery: time.Hour, Identity: tc.identity})
			if err != nil {
				t.Fatal(err)
			}
			defer sched.Close()
			eventually(t, 20*time.Second, "first backup", func() bool {
				return clock.pending() > 0 && counterOr0(reg, "mail_backup_runs_total", "ok") == 1
			})
			d := r.Status().LastDrill
			if tc.failed != (d != nil && !d.OK) || (!tc.failed && d != nil) {
				t.Fatalf("last drill %+v", d)
			}
			if tc.failed && !strings.Contains(d.Error, "backup identity") {
				t.Fatalf("drill error %q", d.Error)
			}
		})
	}
}

// TestSchedulerRunsOnlyWhileActive: in a cluster one node takes the
// scheduled backups; the others wait, and one that becomes active picks
// the schedule up from the backups already on the targets.
func TestSchedulerRunsOnlyWhileActive(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "kay@example.test")
	clock := newFakeClock(at("2026-06-01 00:00"))
	targets := fileTargets(t, "eu")
	// Another node took a backup at 00:00.
	other := newRunner(t, Config{Targets: targets, Cluster: n.c, Clock: clock})
	if _, err := other.Backup(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r := newRunner(t, Config{Targets: targets, Cluster: n.c, Clock: clock, Registry: reg})
	var active atomic.Bool
	sched, err := r.StartScheduler(Schedule{BackupEvery: time.Hour, DrillEvery: -1, Active: active.Load})
	if err != nil {
		t.Fatal(err)
	}
	defer sched.Close()
	runs := func() float64 { return counterOr0(reg, "mail_backup_runs_total", "ok") }
	idle := func() bool { return clock.pending() > 0 }
	eventually(t, 5*time.Second, "scheduler waiting", idle)
	clock.Advance(2 * time.Hour)
	eventually(t, 5*time.Second, "scheduler waiting", idle)
	if runs() != 0 {
		t.Fatal("an inactive scheduler took a backup")
	}
	// Active now: the backup due since 01:00 runs at the next check.
	active.Store(true)
	clock.Advance(inactiveCheck)
	eventually(t, 20*time.Second, "backup once active", func() bool { return idle() && runs() == 1 })
}
