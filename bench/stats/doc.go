// Package stats records latencies and counts during a benchmark and
// summarizes them: exact nearest-rank percentiles over every sample (runs
// are bounded, so keeping every sample is affordable and avoids the
// rounding of histogram buckets), throughput over the measured wall time.
//
// Invariants: a Recorder is safe for concurrent use; a Summary is a plain
// value that serializes to JSON with durations in milliseconds.
package stats
