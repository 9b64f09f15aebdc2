package report

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/mailcluster/mailcluster/bench/stats"
	"github.com/mailcluster/mailcluster/bench/workload"
)

// OurTargets are the targets running this project's server; every other
// target is a peer they are compared with.
var OurTargets = []string{"single", "cluster3"}

// IsOurs reports whether a target runs this project's server.
func IsOurs(name string) bool { return slices.Contains(OurTargets, name) }

// metric is one figure of the summary table.
type metric struct {
	workload string
	name     string
	// higher is true when a larger value is better.
	higher bool
	get    func(*TargetRun) (float64, bool)
}

// countMetrics are the summary figures that count events (shown whole).
var countMetrics = []string{"writes refused meanwhile (retried)"}

// format renders the figure.
func (m metric) format(v float64) string {
	if slices.Contains(countMetrics, m.name) {
		return fmt.Sprintf("%.0f", v)
	}
	return formatNum(v)
}

// summaryMetrics are the headline figures, one row each.
var summaryMetrics = []metric{
	{"smtp-ingest", "acknowledged messages/s", true, func(t *TargetRun) (float64, bool) {
		if t.Ingest == nil || t.Preload {
			return 0, false
		}
		return t.Ingest.MessagesPerSec, true
	}},
	{"smtp-ingest", "acknowledged MiB/s", true, func(t *TargetRun) (float64, bool) {
		if t.Ingest == nil || t.Preload {
			return 0, false
		}
		return t.Ingest.MBPerSec, true
	}},
	{"smtp-ingest", "p50 ms to the final 250", false, ingestOp("transaction", p50)},
	{"smtp-ingest", "p99 ms to the final 250", false, ingestOp("transaction", p99)},
	{"smtp-ingest", "seconds until all visible in IMAP", false, func(t *TargetRun) (float64, bool) {
		if t.Ingest == nil || t.Preload || t.Ingest.Check == nil {
			return 0, false
		}
		return t.Ingest.Check.VisibleAfterSec, true
	}},
	{"smtp-ingest", "delivered messages/s, end to end", true, func(t *TargetRun) (float64, bool) {
		if t.Ingest == nil || t.Preload || t.Ingest.Check == nil {
			return 0, false
		}
		return float64(t.Ingest.Acked) / (t.Ingest.ElapsedSec + t.Ingest.Check.VisibleAfterSec), true
	}},
	{"imap-mixed", "operations/s", true, func(t *TargetRun) (float64, bool) {
		if t.IMAP == nil {
			return 0, false
		}
		return t.IMAP.OpsPerSec, true
	}},
	{"imap-mixed", "p50 ms, all commands", false, func(t *TargetRun) (float64, bool) {
		if t.IMAP == nil {
			return 0, false
		}
		return t.IMAP.All.P50MS, true
	}},
	{"imap-mixed", "p99 ms, all commands", false, func(t *TargetRun) (float64, bool) {
		if t.IMAP == nil {
			return 0, false
		}
		return t.IMAP.All.P99MS, true
	}},
	{"imap-mixed, paced", "p50 ms, all commands", false, func(t *TargetRun) (float64, bool) {
		if t.IMAPPaced == nil {
			return 0, false
		}
		return t.IMAPPaced.All.P50MS, true
	}},
	{"imap-mixed, paced", "p99 ms, all commands", false, func(t *TargetRun) (float64, bool) {
		if t.IMAPPaced == nil {
			return 0, false
		}
		return t.IMAPPaced.All.P99MS, true
	}},
	{"pop3-drain", "messages/s (RETR + DELE)", true, func(t *TargetRun) (float64, bool) {
		if t.POP3 == nil {
			return 0, false
		}
		return t.POP3.MessagesPerSec, true
	}},
	{"pop3-drain", "MiB/s", true, func(t *TargetRun) (float64, bool) {
		if t.POP3 == nil {
			return 0, false
		}
		return t.POP3.MBPerSec, true
	}},
	{"pop3-drain", "p99 ms per RETR", false, func(t *TargetRun) (float64, bool) {
		if t.POP3 == nil {
			return 0, false
		}
		s, ok := t.POP3.PerOp["retr"]
		return s.P99MS, ok
	}},
	{"storage", "disk bytes per delivered byte", false, func(t *TargetRun) (float64, bool) {
		if t.Storage == nil {
			return 0, false
		}
		return t.Storage.BytesPerByte, true
	}},
	{"failover", "seconds from the kill to the first 250 on the shard", false, func(t *TargetRun) (float64, bool) {
		if t.Failover == nil || !t.Failover.Recovered {
			return 0, false
		}
		return t.Failover.FailoverSec, true
	}},
	{"failover", "writes refused meanwhile (retried)", false, func(t *TargetRun) (float64, bool) {
		if t.Failover == nil {
			return 0, false
		}
		return float64(t.Failover.Refused), true
	}},
}

// metrics returns the summary figures of the run: summaryMetrics, then
// messages/s and MiB/s of each message size of smtp-ingest-sizes that
// any target measured.
func (r *Run) metrics() []metric {
	out := slices.Clone(summaryMetrics)
	var sizes []int
	for _, t := range r.Targets {
		for _, sz := range t.Sizes {
			if !slices.Contains(sizes, sz.Bytes) {
				sizes = append(sizes, sz.Bytes)
			}
		}
	}
	slices.Sort(sizes)
	for _, n := range sizes {
		label := SizeLabel(n)
		out = append(out,
			metric{"smtp-ingest-sizes", label + " acknowledged messages/s", true, sizeFigure(n, func(in *workload.IngestResult) float64 { return in.MessagesPerSec })},
			metric{"smtp-ingest-sizes", label + " acknowledged MiB/s", true, sizeFigure(n, func(in *workload.IngestResult) float64 { return in.MBPerSec })},
		)
	}
	return out
}

// sizeFigure reads a figure of the smtp-ingest-sizes step of n bytes.
func sizeFigure(n int, f func(*workload.IngestResult) float64) func(*TargetRun) (float64, bool) {
	return func(t *TargetRun) (float64, bool) {
		for _, sz := range t.Sizes {
			if sz.Bytes == n && sz.Ingest != nil {
				return f(sz.Ingest), true
			}
		}
		return 0, false
	}
}

// chartedMetrics are the figures of the throughput chart.
var chartedMetrics = []string{"acknowledged messages/s", "delivered messages/s, end to end", "operations/s", "messages/s (RETR + DELE)"}

// charted reports whether the figure belongs in the throughput chart.
func (m metric) charted() bool {
	return slices.Contains(chartedMetrics, m.name) ||
		(m.workload == "smtp-ingest-sizes" && strings.HasSuffix(m.name, " messages/s"))
}

func p50(s stats.Summary) float64 { return s.P50MS }
func p99(s stats.Summary) float64 { return s.P99MS }

func ingestOp(op string, f func(stats.Summary) float64) func(*TargetRun) (float64, bool) {
	return func(t *TargetRun) (float64, bool) {
		if t.Ingest == nil || t.Preload {
			return 0, false
		}
		s, ok := t.Ingest.Ops[op]
		if !ok || s.Count == 0 {
			return 0, false
		}
		return f(s), true
	}
}

// Ratio divides ours by peer's figure; ok is false when either is
// missing or the peer's is zero.
func Ratio(ours, peer float64, oursOK, peerOK bool) (float64, bool) {
	if !oursOK || !peerOK || peer == 0 || math.IsNaN(ours) || math.IsNaN(peer) {
		return 0, false
	}
	return ours / peer, true
}

// formatRatio renders a ratio and whether it favours ours.
func formatRatio(r float64, higherBetter bool) string {
	verdict := "better"
	switch {
	case math.Abs(r-1) < 0.005:
		verdict = "same"
	case (r > 1) != higherBetter:
		verdict = "worse"
	}
	return fmt.Sprintf("%s× (%s)", formatNum(r), verdict)
}

// formatNum renders a figure with three significant digits or so.
func formatNum(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 0.1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// pairs lists (ours, peer) target name pairs of a run, in report order.
func (r *Run) pairs() [][2]string {
	var out [][2]string
	for _, o := range r.Targets {
		if !IsOurs(o.Info.Name) {
			continue
		}
		for _, p := range r.Targets {
			if !IsOurs(p.Info.Name) {
				out = append(out, [2]string{o.Info.Name, p.Info.Name})
			}
		}
	}
	return out
}

// RatioLine is one headline ratio, for the closing note of a run.
type RatioLine struct {
	Workload, Metric, Ours, Peer string
	Ratio                        float64
	HigherBetter                 bool
}

// String renders the line.
func (l RatioLine) String() string {
	return fmt.Sprintf("%s %s: %s/%s = %s", l.Workload, l.Metric, l.Ours, l.Peer, formatRatio(l.Ratio, l.HigherBetter))
}

// Ratios returns every summary ratio of the run.
func (r *Run) Ratios() []RatioLine {
	var out []RatioLine
	for _, m := range r.metrics() {
		for _, pr := range r.pairs() {
			ov, ook := m.get(r.target(pr[0]))
			pv, pok := m.get(r.target(pr[1]))
			if q, ok := Ratio(ov, pv, ook, pok); ok {
				out = append(out, RatioLine{m.workload, m.name, pr[0], pr[1], q, m.higher})
			}
		}
	}
	return out
}
