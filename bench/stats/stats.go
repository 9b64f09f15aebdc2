package stats

import (
	"math"
	"slices"
	"sync"
	"time"
)

// maxSamples bounds the samples one Recorder keeps per operation; beyond
// it, samples are kept by reservoir replacement so memory stays bounded in
// a long run while percentiles stay representative.
const maxSamples = 1 << 20

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample such that at least p percent
// of the samples are less than or equal to it. It returns 0 for no
// samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Recorder collects latency samples and error counts per operation name.
type Recorder struct {
	mu  sync.Mutex
	ops map[string]*opData
	// seq drives the reservoir sampling deterministically.
	seq uint64
}

type opData struct {
	samples []time.Duration
	count   int64
	errors  int64
	bytes   int64
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{ops: make(map[string]*opData)}
}

func (r *Recorder) op(name string) *opData {
	d := r.ops[name]
	if d == nil {
		d = &opData{}
		r.ops[name] = d
	}
	return d
}

// Observe records one successful operation that took d and moved n bytes.
func (r *Recorder) Observe(name string, d time.Duration, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.op(name)
	o.count++
	o.bytes += n
	if len(o.samples) < maxSamples {
		o.samples = append(o.samples, d)
		return
	}
	// Reservoir replacement with a cheap deterministic generator.
	r.seq = r.seq*6364136223846793005 + 1442695040888963407
	if j := r.seq % uint64(o.count); j < maxSamples {
		o.samples[j] = d
	}
}

// Fail records one failed operation.
func (r *Recorder) Fail(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.op(name).errors++
}

// Summary is the digest of one operation's samples.
type Summary struct {
	Count  int64   `json:"count"`
	Errors int64   `json:"errors"`
	Bytes  int64   `json:"bytes,omitempty"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
	// PerSecond is Count divided by the measured wall time.
	PerSecond float64 `json:"per_second"`
}

// Summaries digests every operation; elapsed is the measured wall time
// the rates are computed over.
func (r *Recorder) Summaries(elapsed time.Duration) map[string]Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]Summary, len(r.ops))
	for name, o := range r.ops {
		out[name] = summarize(o, elapsed)
	}
	return out
}

// Total digests every operation together, as one.
func (r *Recorder) Total(elapsed time.Duration) Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := &opData{}
	for _, o := range r.ops {
		all.samples = append(all.samples, o.samples...)
		all.count += o.count
		all.errors += o.errors
		all.bytes += o.bytes
	}
	return summarize(all, elapsed)
}

func summarize(o *opData, elapsed time.Duration) Summary {
	s := Summary{Count: o.count, Errors: o.errors, Bytes: o.bytes}
	if elapsed > 0 {
		s.PerSecond = float64(o.count) / elapsed.Seconds()
	}
	if len(o.samples) == 0 {
		return s
	}
	sorted := slices.Clone(o.samples)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	s.MeanMS = ms(sum / time.Duration(len(sorted)))
	s.P50MS = ms(Percentile(sorted, 50))
	s.P90MS = ms(Percentile(sorted, 90))
	s.P99MS = ms(Percentile(sorted, 99))
	s.MaxMS = ms(sorted[len(sorted)-1])
	return s
}

// ms converts to milliseconds rounded to microseconds.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
