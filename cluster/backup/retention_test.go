package backup

import (
	"slices"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestRetentionKeep(t *testing.T) {
	tests := []struct {
		name   string
		policy Retention
		times  []string // newest first
		want   []string
		now    string // default: an hour after the newest backup of all cases
	}{
		{"empty", Retention{Daily: 3, Weekly: 2, Monthly: 2}, nil, nil, ""},
		{"only the newest when every class is off", Retention{Within: -1, Daily: -1, Weekly: -1, Monthly: -1},
			[]string{"2026-02-28 15:00", "2026-02-28 03:00", "2026-02-27 03:00"},
			[]string{"2026-02-28 15:00"}, ""},
		{"every backup of the last day, then one per day", Retention{Within: 24 * time.Hour, Daily: 2, Weekly: -1, Monthly: -1},
			[]string{"2026-02-28 15:00", "2026-02-28 03:00", "2026-02-27 20:00", "2026-02-27 16:00", "2026-02-27 03:00", "2026-02-26 03:00"},
			[]string{"2026-02-28 15:00", "2026-02-28 03:00", "2026-02-27 20:00", "2026-02-27 16:00"}, "2026-02-28 15:30"},
		{"newest per day", Retention{Within: -1, Daily: 2, Weekly: -1, Monthly: -1},
			[]string{"2026-02-28 15:00", "2026-02-28 03:00", "2026-02-27 20:00", "2026-02-27 03:00", "2026-02-26 03:00"},
			[]string{"2026-02-28 15:00", "2026-02-27 20:00"}, ""},
		{"weeks are ISO weeks starting Monday", Retention{Within: -1, Daily: -1, Weekly: 3, Monthly: -1},
			// 2026-03-02 is a Monday; 03-01 a Sunday.
			[]string{"2026-03-02 03:00", "2026-03-01 03:00", "2026-02-23 03:00", "2026-02-22 03:00"},
			[]string{"2026-03-02 03:00", "2026-03-01 03:00", "2026-02-22 03:00"}, ""},
		{"months", Retention{Within: -1, Daily: 1, Weekly: -1, Monthly: 3},
			[]string{"2026-03-01 03:00", "2026-02-28 03:00", "2026-02-01 03:00", "2026-01-31 03:00", "2025-12-31 03:00"},
			[]string{"2026-03-01 03:00", "2026-02-28 03:00", "2026-01-31 03:00"}, ""},
		{"gaps do not count as periods", Retention{Within: -1, Daily: 2, Weekly: -1, Monthly: -1},
			[]string{"2026-02-28 03:00", "2026-02-20 03:00", "2026-02-10 03:00"},
			[]string{"2026-02-28 03:00", "2026-02-20 03:00"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var backups []*BackupInfo
			for _, s := range tc.times {
				backups = append(backups, &BackupInfo{ID: s, Created: at(s)})
			}
			now := at("2026-03-02 04:00")
			if tc.now != "" {
				now = at(tc.now)
			}
			keep := tc.policy.keep(backups, now)
			var got []string
			for _, s := range tc.times {
				if keep[s] {
					got = append(got, s)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("kept %v, want %v", got, tc.want)
			}
		})
	}
}

// Daily backups over six weeks, the clock driven by the test: after every
// run, retention leaves exactly what the policy keeps.
func TestRetentionDrivenByClock(t *testing.T) {
	n := newNode(t)
	n.addUser(t, "gina@example.test")
	targets := fileTargets(t, "eu", "us")
	clock := newFakeClock(at("2026-01-15 03:00"))
	r := newRunner(t, Config{Targets: targets, Cluster: n.c, Clock: clock,
		Retention: Retention{Within: 36 * time.Hour, Daily: 3, Weekly: 2, Monthly: 2}})
	for day := 0; day < 45; day++ {
		clock.Set(at("2026-01-15 03:00").AddDate(0, 0, day))
		if _, err := r.Backup(testCtx(t)); err != nil {
			t.Fatalf("backup on day %d: %v", day, err)
		}
	}
	clock.Set(at("2026-02-28 15:00"))
	if _, err := r.Backup(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Within 36h of Feb 28 15:00: Feb 28 15:00 and 03:00, Feb 27 03:00.
	// Daily: Feb 28 15:00, Feb 27, Feb 26. Weekly (ISO weeks, Feb 28 is
	// a Saturday): Feb 28 15:00 and Sunday Feb 22. Monthly: Feb 28 15:00
	// and Jan 31.
	want := []string{"2026-02-28 15:00", "2026-02-28 03:00", "2026-02-27 03:00", "2026-02-26 03:00", "2026-02-22 03:00", "2026-01-31 03:00"}
	cat, err := r.List(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range cat.Backups {
		if !b.Complete {
			t.Fatalf("backup %s incomplete", b.ID)
		}
		got = append(got, b.Created.Format("2006-01-02 15:04"))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %v\nwant %v", got, want)
	}
	// Every target agrees.
	for _, tg := range targets {
		objs, err := tg.List(testCtx(t), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != len(want)*(len(cat.Backups[0].Manifest.Shards)+1) {
			t.Fatalf("%s holds %d objects", tg.Region(), len(objs))
		}
	}
}
