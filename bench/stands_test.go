package bench

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/bench/report"
	"github.com/mailcluster/mailcluster/bench/targets"
)

// TestInterleaveGivesEachWorkloadToEveryTarget checks the order of a
// run: every target's turn at a workload before any target's turn at the
// next, a target that fails a turn left out of the later ones (its
// figures kept), and nothing started once the run is cancelled.
func TestInterleaveGivesEachWorkloadToEveryTarget(t *testing.T) {
	var order []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	record := func(name string, fail string) turn {
		return turn{name, func(_ context.Context, s *stand) bool {
			order = append(order, s.tr.Info.Name+":"+name)
			if name == "cancel" {
				cancel()
			}
			return s.tr.Info.Name != fail
		}}
	}
	var stands []*stand
	for _, name := range []string{"a", "b", "c"} {
		stands = append(stands, &stand{tr: report.TargetRun{Info: targets.Info{Name: name}}})
	}
	interleave(ctx, stands, []turn{record("start", ""), record("ingest", "b"), record("imap", ""), record("cancel", ""), record("pop3", "")},
		slog.New(slog.DiscardHandler))
	want := []string{"a:start", "b:start", "c:start", "a:ingest", "b:ingest", "c:ingest", "a:imap", "c:imap", "a:cancel"}
	if !slices.Equal(order, want) {
		t.Fatalf("turns ran in the order\n%s\nwant\n%s", strings.Join(order, " "), strings.Join(want, " "))
	}
	if stands[0].out || !stands[1].out || stands[2].out {
		t.Fatalf("out: a %v, b %v, c %v; want only b", stands[0].out, stands[1].out, stands[2].out)
	}
}

// pausingTarget is a target that only records whether it runs.
type pausingTarget struct {
	name    string
	running bool
	starts  int
}

func (p *pausingTarget) Info() targets.Info { return targets.Info{Name: p.name} }
func (p *pausingTarget) Start(context.Context, []targets.User) error {
	p.running = true
	return nil
}
func (p *pausingTarget) Endpoints() targets.Endpoints  { return targets.Endpoints{} }
func (p *pausingTarget) ClientTLS() *tls.Config        { return nil }
func (p *pausingTarget) Compact(context.Context) error { return nil }
func (p *pausingTarget) Disk() (targets.Disk, error)   { return targets.Disk{}, nil }
func (p *pausingTarget) Stop() error {
	p.running = false
	return nil
}
func (p *pausingTarget) Pause() error { return p.Stop() }
func (p *pausingTarget) Resume(context.Context) error {
	p.running = true
	p.starts++
	return nil
}

// TestTargetsRunAlone checks that a target that can pause runs during
// its own turns only: every other target is stopped meanwhile, and all
// are stopped between turns.
func TestTargetsRunAlone(t *testing.T) {
	var ts []*pausingTarget
	var stands []*stand
	for _, name := range []string{"a", "b", "c"} {
		p := &pausingTarget{name: name}
		ts = append(ts, p)
		stands = append(stands, &stand{t: p})
	}
	turns := 0
	check := func(ctx context.Context, s *stand) bool {
		turns++
		for _, p := range ts {
			if want := p == s.t; p.running != want {
				t.Errorf("turn %d of %s: %s running %v", turns, s.t.Info().Name, p.name, p.running)
			}
		}
		return true
	}
	start := turn{"start", func(ctx context.Context, s *stand) bool {
		if err := s.t.Start(ctx, nil); err != nil {
			t.Fatal(err)
		}
		return s.pause()
	}}
	interleave(context.Background(), stands, []turn{start, {"one", alone(Config{}, check)}, {"two", alone(Config{}, check)}}, slog.New(slog.DiscardHandler))
	if turns != 6 {
		t.Fatalf("%d turns ran, want 6", turns)
	}
	for _, p := range ts {
		if p.running || p.starts != 2 {
			t.Errorf("%s: running %v after the run, started again %d times; want stopped, 2", p.name, p.running, p.starts)
		}
	}
}

// inspectedTarget is a pausingTarget whose processes can be looked into;
// it records whether it ran each time they were.
type inspectedTarget struct {
	pausingTarget
	log       string
	inspected []bool
}

func (p *inspectedTarget) Processes() []targets.Process {
	p.inspected = append(p.inspected, p.running)
	return []targets.Process{{Name: p.name, Log: p.log}}
}

// TestFailedTurnDiagnosedWhileRunning checks that a target that fails
// a turn is looked into once, before it is paused (while its processes
// can still say where their goroutines wait), and not again at the end.
func TestFailedTurnDiagnosedWhileRunning(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "node.log")
	if err := os.WriteFile(logPath, []byte("level=ERROR msg=\"shard stuck\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := &inspectedTarget{pausingTarget: pausingTarget{name: "a"}, log: logPath}
	var diag strings.Builder
	cfg := Config{Diagnostics: &diag}
	s := &stand{t: target}
	start := turn{"start", func(ctx context.Context, s *stand) bool {
		if err := s.t.Start(ctx, nil); err != nil {
			t.Fatal(err)
		}
		s.tr.Info = s.t.Info()
		return s.pause()
	}}
	fail := turn{"fail", alone(cfg, func(ctx context.Context, s *stand) bool {
		s.tr.Errors = append(s.tr.Errors, "imap-mixed: broken")
		return false
	})}
	runStandsTurns(context.Background(), cfg, []*stand{s}, []turn{start, fail}, slog.New(slog.DiscardHandler))
	if !slices.Equal(target.inspected, []bool{true}) {
		t.Fatalf("inspected (running each time): %v, want once while running", target.inspected)
	}
	if !strings.Contains(diag.String(), "shard stuck") || target.running {
		t.Fatalf("diagnostics %q, running %v after the run", diag.String(), target.running)
	}
}

// TestFailoverSkippedWithoutRestart checks that a target of one node,
// paused between turns, is not started again only to have failover
// recorded as skipped.
func TestFailoverSkippedWithoutRestart(t *testing.T) {
	cfg := Quick()
	cfg.Workloads = []string{Failover}
	p := &pausingTarget{name: "one"}
	s := &stand{t: p}
	runStands(context.Background(), cfg, []*stand{s}, nil, nil, slog.New(slog.DiscardHandler))
	if p.starts != 0 || p.running {
		t.Fatalf("started again %d times, running %v after the run; want 0, false", p.starts, p.running)
	}
	if len(s.tr.Skipped) != 1 || s.tr.Skipped[0].Workload != Failover || len(s.tr.Errors) > 0 {
		t.Fatalf("skipped %+v, errors %v", s.tr.Skipped, s.tr.Errors)
	}
}
