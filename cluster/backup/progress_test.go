package backup

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProgressLine(t *testing.T) {
	clock := newFakeClock(at("2026-01-01 00:00"))
	var out bytes.Buffer
	p := NewProgressTo(&out, clock, time.Second)
	task := p.Start("upload x", 4<<20)
	clock.Advance(2 * time.Second)
	task.Add(1 << 20)
	got := out.String()
	for _, want := range []string{"upload x: 1.0 MiB / 4.0 MiB", " 25%", "512.0 KiB/s", "ETA 6s"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress %q lacks %q", got, want)
		}
	}
	// Redraws are throttled: more bytes within the interval print nothing.
	n := out.Len()
	task.Add(1024)
	if out.Len() != n {
		t.Fatalf("redrew within the interval: %q", out.String()[n:])
	}
	// Bytes read through Reader count; Finish draws at once and ends
	// the line.
	if _, err := io.Copy(io.Discard, task.Reader(bytes.NewReader(make([]byte, 3<<20-1024)))); err != nil {
		t.Fatal(err)
	}
	task.Finish()
	if last := out.String()[n:]; !strings.Contains(last, "4.0 MiB / 4.0 MiB  100%") || !strings.HasSuffix(last, "\n") || strings.Contains(last, "ETA") {
		t.Fatalf("final line %q", last)
	}
}

func TestProgressSilentWhenNotATerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, w := range []io.Writer{f, &bytes.Buffer{}} {
		if p := NewProgress(w); p != nil {
			t.Fatalf("progress enabled on %T", w)
		}
	}
	// A nil reporter and its tasks are silent no-ops.
	var p *Progress
	task := p.Start("x", 10)
	task.Add(5)
	task.Finish()
	if r := task.Reader(strings.NewReader("abc")); r == nil {
		t.Fatal("nil task returned no reader")
	}
	info, _ := f.Stat()
	if info.Size() != 0 {
		t.Fatal("something was written")
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
