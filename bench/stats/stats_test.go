package stats

import (
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", ms(7), 99, 7 * time.Millisecond},
		{"p0 is the minimum", ms(1, 2, 3), 0, time.Millisecond},
		{"median of odd count", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"median of even count is the lower middle", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p100 is the maximum", ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p90 of 1..100", hundred, 90, 90 * time.Millisecond},
		{"p99.9 of 1..100 rounds up", hundred, 99.9, 100 * time.Millisecond},
		{"p1 of 1..100", hundred, 1, time.Millisecond},
		{"p25 of four", ms(10, 20, 30, 40), 25, 10 * time.Millisecond},
		{"p26 of four", ms(10, 20, 30, 40), 26, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Fatalf("Percentile(p=%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestRecorder(t *testing.T) {
	r := NewRecorder()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= 25; i++ {
				r.Observe("fetch", time.Duration(i)*time.Millisecond, 100)
			}
		}()
	}
	wg.Wait()
	r.Fail("fetch")
	r.Observe("login", 3*time.Millisecond, 0)
	s := r.Summaries(2 * time.Second)
	f := s["fetch"]
	if f.Count != 100 || f.Errors != 1 || f.Bytes != 10000 {
		t.Fatalf("fetch counts %+v", f)
	}
	if f.PerSecond != 50 {
		t.Fatalf("fetch rate %v, want 50/s", f.PerSecond)
	}
	if f.P50MS != 13 || f.P99MS != 25 || f.MaxMS != 25 || f.MeanMS != 13 {
		t.Fatalf("fetch percentiles %+v", f)
	}
	tot := r.Total(2 * time.Second)
	if tot.Count != 101 || tot.Errors != 1 {
		t.Fatalf("total %+v", tot)
	}
	if empty := NewRecorder().Total(time.Second); empty.Count != 0 || empty.P99MS != 0 {
		t.Fatalf("empty recorder %+v", empty)
	}
}

func TestRecorderBoundsMemory(t *testing.T) {
	r := NewRecorder()
	for i := 0; i < maxSamples+1000; i++ {
		r.Observe("x", time.Microsecond, 0)
	}
	if n := len(r.ops["x"].samples); n != maxSamples {
		t.Fatalf("kept %d samples, want the bound %d", n, maxSamples)
	}
	if c := r.Total(time.Second).Count; c != maxSamples+1000 {
		t.Fatalf("count %d", c)
	}
}
