package report

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"

	"github.com/mailcluster/mailcluster/bench/stats"
)

// palette colours targets in order; light versions draw p99 bars.
var (
	palette      = []string{"#2563eb", "#ea580c", "#16a34a", "#9333ea"}
	paletteLight = []string{"#93c5fd", "#fdba74", "#86efac", "#d8b4fe"}
)

// Chart geometry.
const (
	chartWidth = 760
	labelWidth = 170
	barArea    = 470
	barHeight  = 16
	barGap     = 4
	groupGap   = 14
	topMargin  = 56
)

func color(i int) string      { return palette[i%len(palette)] }
func lightColor(i int) string { return paletteLight[i%len(paletteLight)] }

// svgWriter accumulates an SVG document.
type svgWriter struct {
	b strings.Builder
}

func (s *svgWriter) f(format string, args ...any) { fmt.Fprintf(&s.b, format, args...) }

func esc(s string) string { return html.EscapeString(s) }

func (s *svgWriter) header(height int, title, subtitle string) {
	s.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		chartWidth, height, chartWidth, height)
	s.f(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	s.f(`<text x="10" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", esc(title))
	s.f(`<text x="10" y="38" fill="#555555">%s</text>`+"\n", esc(subtitle))
}

func (s *svgWriter) legend(y int, names []string, note string) {
	x := 10
	for i, n := range names {
		s.f(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`, x, y-10, color(i))
		s.f(`<text x="%d" y="%d">%s</text>`+"\n", x+16, y, esc(n))
		x += 16 + 8*len(n) + 18
	}
	if note != "" {
		s.f(`<text x="%d" y="%d" fill="#555555">%s</text>`+"\n", x, y, esc(note))
	}
}

// bar is one target's value in a group.
type bar struct {
	target int // index into the run's targets, for the colour
	name   string
	value  float64
	// upper, when set, is drawn as a light bar behind value (p99 behind p50).
	upper float64
	label string
}

// group is a titled set of bars.
type group struct {
	title string
	bars  []bar
}

// WriteThroughputSVG draws each workload's headline rate per target, each
// workload on its own linear scale.
func (r *Run) WriteThroughputSVG(w io.Writer) error {
	var groups []group
	add := func(title string, get func(*TargetRun) (float64, bool)) {
		g := group{title: title}
		for i := range r.Targets {
			if v, ok := get(&r.Targets[i]); ok {
				g.bars = append(g.bars, bar{target: i, name: r.Targets[i].Info.Name, value: v, label: formatNum(v)})
			}
		}
		if len(g.bars) > 0 {
			groups = append(groups, g)
		}
	}
	for _, m := range r.metrics() {
		if m.charted() {
			add(m.workload+": "+m.name, m.get)
		}
	}
	var s svgWriter
	s.header(chartHeight(groups), "Throughput per target (higher is better)", r.chartSubtitle())
	s.legend(topMargin-6, r.targetNames(), "")
	y := topMargin + 10
	for _, g := range groups {
		maxV := 0.0
		for _, b := range g.bars {
			maxV = math.Max(maxV, b.value)
		}
		s.f(`<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+12, esc(g.title))
		y += 18
		for _, b := range g.bars {
			wpx := 0.0
			if maxV > 0 {
				wpx = b.value / maxV * barArea
			}
			s.f(`<text x="%d" y="%d" text-anchor="end">%s</text>`, labelWidth-8, y+12, esc(b.name))
			s.f(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, labelWidth, y, wpx, barHeight, color(b.target))
			s.f(`<text x="%.1f" y="%d">%s</text>`+"\n", float64(labelWidth)+wpx+6, y+12, esc(b.label))
			y += barHeight + barGap
		}
		y += groupGap
	}
	s.f("</svg>\n")
	_, err := io.WriteString(w, s.b.String())
	return err
}

// WriteLatencySVG draws p50 (dark) and p99 (light) latencies of every
// operation per target on one logarithmic scale.
func (r *Run) WriteLatencySVG(w io.Writer) error {
	var groups []group
	add := func(title string, get func(*TargetRun) (stats.Summary, bool)) {
		g := group{title: title}
		for i := range r.Targets {
			if s, ok := get(&r.Targets[i]); ok && s.Count > 0 {
				g.bars = append(g.bars, bar{target: i, name: r.Targets[i].Info.Name, value: s.P50MS, upper: s.P99MS,
					label: fmt.Sprintf("%s / %s ms", formatNum(s.P50MS), formatNum(s.P99MS))})
			}
		}
		if len(g.bars) > 0 {
			groups = append(groups, g)
		}
	}
	add("smtp-ingest: transaction to the final 250", func(t *TargetRun) (stats.Summary, bool) {
		if t.Ingest == nil || t.Preload {
			return stats.Summary{}, false
		}
		s, ok := t.Ingest.Ops["transaction"]
		return s, ok
	})
	for _, op := range []string{"login", "select", "fetch-headers", "fetch-body", "store", "search", "append", "move", "expunge"} {
		add("imap-mixed: "+op, func(t *TargetRun) (stats.Summary, bool) {
			if t.IMAP == nil {
				return stats.Summary{}, false
			}
			s, ok := t.IMAP.PerOp[op]
			return s, ok
		})
	}
	for _, op := range []string{"retr", "quit"} {
		add("pop3-drain: "+op, func(t *TargetRun) (stats.Summary, bool) {
			if t.POP3 == nil {
				return stats.Summary{}, false
			}
			s, ok := t.POP3.PerOp[op]
			return s, ok
		})
	}
	// The failover time is drawn on the same scale (in ms), as one bar.
	g := group{title: "failover: kill to the first 250 on the shard"}
	for i := range r.Targets {
		if f := r.Targets[i].Failover; f != nil && f.Recovered {
			g.bars = append(g.bars, bar{target: i, name: r.Targets[i].Info.Name, value: f.FailoverSec * 1000,
				label: formatNum(f.FailoverSec) + " s"})
		}
	}
	if len(g.bars) > 0 {
		groups = append(groups, g)
	}
	lo, hi := math.Inf(1), 0.0
	for _, g := range groups {
		for _, b := range g.bars {
			if b.value > 0 {
				lo = math.Min(lo, b.value)
			}
			hi = math.Max(hi, math.Max(b.value, b.upper))
		}
	}
	if hi <= 0 {
		lo, hi = 0.1, 1
	}
	loDec := math.Floor(math.Log10(math.Max(lo, 0.001)))
	hiDec := math.Ceil(math.Log10(hi))
	if hiDec <= loDec {
		hiDec = loDec + 1
	}
	scale := func(v float64) float64 {
		if v <= 0 {
			return 0
		}
		return math.Max(0, (math.Log10(v)-loDec)/(hiDec-loDec)*barArea)
	}
	height := chartHeight(groups) + 20
	var s svgWriter
	s.header(height, "Latency per operation (lower is better; logarithmic scale)", r.chartSubtitle())
	s.legend(topMargin-6, r.targetNames(), "dark: p50, light: p99 (ms)")
	// Decade grid lines.
	for d := loDec; d <= hiDec; d++ {
		x := float64(labelWidth) + (d-loDec)/(hiDec-loDec)*barArea
		s.f(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e5e7eb"/>`, x, topMargin+4, x, height-24)
		s.f(`<text x="%.1f" y="%d" text-anchor="middle" fill="#555555">%s ms</text>`+"\n", x, height-8, formatNum(math.Pow(10, d)))
	}
	y := topMargin + 10
	for _, g := range groups {
		s.f(`<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+12, esc(g.title))
		y += 18
		for _, b := range g.bars {
			s.f(`<text x="%d" y="%d" text-anchor="end">%s</text>`, labelWidth-8, y+12, esc(b.name))
			s.f(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, labelWidth, y, scale(b.upper), barHeight, lightColor(b.target))
			s.f(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, labelWidth, y, scale(b.value), barHeight, color(b.target))
			s.f(`<text x="%.1f" y="%d">%s</text>`+"\n", float64(labelWidth)+math.Max(scale(b.upper), scale(b.value))+6, y+12, esc(b.label))
			y += barHeight + barGap
		}
		y += groupGap
	}
	s.f("</svg>\n")
	_, err := io.WriteString(w, s.b.String())
	return err
}

func chartHeight(groups []group) int {
	h := topMargin + 20
	for _, g := range groups {
		h += 18 + len(g.bars)*(barHeight+barGap) + groupGap
	}
	return h
}

func (r *Run) targetNames() []string {
	out := make([]string, len(r.Targets))
	for i, t := range r.Targets {
		out[i] = t.Info.Name
	}
	return out
}

func (r *Run) chartSubtitle() string {
	return fmt.Sprintf("mailbench %s suite, %s, %d CPUs, commit %s", r.Suite, r.Started.UTC().Format("2006-01-02"), r.Machine.CPUs, shortCommit(r.GitCommit))
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
