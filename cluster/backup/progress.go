package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"
)

// Progress prints the progress of long transfers (bytes, percent, rate,
// ETA) on one refreshed terminal line. Built with NewProgress on anything
// that is not a terminal it stays silent, so scripts and logs get no
// progress noise. A nil *Progress is valid and silent.
type Progress struct {
	w     io.Writer
	clock Clock
	every time.Duration
	mu    sync.Mutex
}

// NewProgress reports to w only when w is a terminal.
func NewProgress(w io.Writer) *Progress {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &Progress{w: w, clock: SystemClock{}, every: 200 * time.Millisecond}
}

// NewProgressTo reports to w unconditionally, redrawing at most once per
// interval of clock; for callers that know w is interactive, and tests.
func NewProgressTo(w io.Writer, clock Clock, every time.Duration) *Progress {
	if clock == nil {
		clock = SystemClock{}
	}
	return &Progress{w: w, clock: clock, every: every}
}

// Task is one transfer being reported. A nil *Task ignores every call.
type Task struct {
	p     *Progress
	label string
	total int64
	done  atomic.Int64
	start time.Time
	last  time.Time // guarded by p.mu
}

// Start begins reporting a transfer of total bytes (0 if unknown).
func (p *Progress) Start(label string, total int64) *Task {
	if p == nil {
		return nil
	}
	return &Task{p: p, label: label, total: total, start: p.clock.Now()}
}

// Add counts n more bytes done.
func (t *Task) Add(n int64) {
	if t == nil {
		return
	}
	t.done.Add(n)
	t.draw(false)
}

// Reader counts the bytes read through r.
func (t *Task) Reader(r io.Reader) io.Reader {
	if t == nil {
		return r
	}
	return &countingReader{r: r, t: t}
}

// Finish draws the final state and ends the line.
func (t *Task) Finish() {
	if t == nil {
		return
	}
	t.draw(true)
}

func (t *Task) draw(final bool) {
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	if !final && now.Sub(t.last) < p.every {
		return
	}
	t.last = now
	line := t.line(now)
	if final {
		fmt.Fprintf(p.w, "\r\x1b[K%s\n", line)
	} else {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
	}
}

// line renders "label: 12.0 MiB / 40.0 MiB  30%  4.0 MiB/s  ETA 7s".
func (t *Task) line(now time.Time) string {
	done := t.done.Load()
	elapsed := now.Sub(t.start).Seconds()
	var b strings.Builder
	b.WriteString(t.label)
	b.WriteString(": ")
	b.WriteString(FormatBytes(done))
	if t.total > 0 {
		fmt.Fprintf(&b, " / %s  %3d%%", FormatBytes(t.total), min(100, done*100/t.total))
	}
	if elapsed > 0 {
		rate := float64(done) / elapsed
		fmt.Fprintf(&b, "  %s/s", FormatBytes(int64(rate)))
		if t.total > 0 && rate > 0 && done < t.total {
			eta := time.Duration(float64(t.total-done) / rate * float64(time.Second))
			fmt.Fprintf(&b, "  ETA %s", eta.Round(time.Second))
		}
	}
	return b.String()
}

type countingReader struct {
	r io.Reader
	t *Task
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.t.Add(int64(n))
	}
	return n, err
}

// FormatBytes renders a byte count with binary units ("1.5 MiB").
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

type progressKey struct{}

// WithProgress returns a context under which a Runner call reports its
// progress to p instead of the Runner's own reporter, so one long-lived
// Runner can show a single operator's command its progress.
func WithProgress(ctx context.Context, p *Progress) context.Context {
	return context.WithValue(ctx, progressKey{}, p)
}

func progressFor(ctx context.Context, def *Progress) *Progress {
	if p, ok := ctx.Value(progressKey{}).(*Progress); ok && p != nil {
		return p
	}
	return def
}
