package bench

import (
	"context"
	"log/slog"
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
