// Package report is the benchmark's output: the Run record written as
// JSON (every raw figure, the machine, the settings, the git commit), a
// Markdown report with the figures and the ratios ours/peer for each
// workload of the same run, and SVG charts of throughput and latency per
// target.
//
// Invariants: rendering is a pure function of a Run (the same Run gives
// the same bytes), so reports can be re-rendered from old JSON files; a
// ratio is only computed between targets of the same run.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/limits"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/bench/workload"
)

// Format is the version of the JSON layout.
const Format = 1

// Run is everything one `mailbench run` measured.
type Run struct {
	Format   int       `json:"format"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Suite is "standard", "quick" or "custom".
	Suite     string         `json:"suite"`
	GitCommit string         `json:"git_commit"`
	Machine   Machine        `json:"machine"`
	Settings  Settings       `json:"settings"`
	Corpus    corpus.Stats   `json:"corpus"`
	Limits    *limits.Limits `json:"limits,omitempty"`
	Targets   []TargetRun    `json:"targets"`
	// Skipped lists targets that could not run here, and why.
	Skipped []Skipped `json:"skipped,omitempty"`
	// Failures are reasons the run failed (a correctness check, an
	// aborted workload). Speed figures never fail a run.
	Failures []string `json:"failures,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Hostname string `json:"hostname"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model,omitempty"`
	MemoryMB int64  `json:"memory_mib,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	Go       string `json:"go"`
	// DataDir is where the targets stored their data, and its file system.
	DataDir    string `json:"data_dir"`
	FileSystem string `json:"file_system,omitempty"`
}

// Settings are the run's parameters.
type Settings struct {
	Seed        uint64 `json:"seed"`
	Users       int    `json:"users"`
	Messages    int    `json:"messages"`
	SMTPClients int    `json:"smtp_clients"`
	// SMTPPipelining: the SMTP clients pipelined MAIL, RCPT and DATA.
	SMTPPipelining bool    `json:"smtp_pipelining,omitempty"`
	IngestSec      float64 `json:"ingest_max_sec"`
	IMAPSessions   int     `json:"imap_sessions"`
	IMAPSec        float64 `json:"imap_sec"`
	// IMAPRate is the pace of imap-mixed's second pass (0: not run).
	IMAPRate      float64  `json:"imap_rate_per_sec,omitempty"`
	POP3Clients   int      `json:"pop3_clients"`
	POP3Sec       float64  `json:"pop3_max_sec"`
	Workloads     []string `json:"workloads"`
	DovecotFormat string   `json:"dovecot_format,omitempty"`
	// FailoverSenders, FailoverBeforeSec and FailoverAfterSec shape the
	// failover workload (when it ran).
	FailoverSenders   int     `json:"failover_senders,omitempty"`
	FailoverBeforeSec float64 `json:"failover_before_sec,omitempty"`
	FailoverAfterSec  float64 `json:"failover_after_sec,omitempty"`
	// SizeSeries and SizeSec shape smtp-ingest-sizes (when it ran).
	SizeSeries []SizeSetting `json:"size_series,omitempty"`
	SizeSec    float64       `json:"size_max_sec,omitempty"`
}

// SizeSetting is one step of the message-size series: up to Messages
// messages of exactly Bytes bytes.
type SizeSetting struct {
	Bytes    int `json:"bytes"`
	Messages int `json:"messages"`
}

// SizeRun is smtp-ingest of one fixed message size
// (smtp-ingest-sizes), with its correctness check.
type SizeRun struct {
	Bytes  int                    `json:"bytes"`
	Ingest *workload.IngestResult `json:"smtp_ingest"`
}

// SizeLabel names a message size: "4KiB", "64KiB", "1MiB", or bytes
// when it is no whole KiB.
func SizeLabel(bytes int) string {
	switch {
	case bytes >= 1<<20 && bytes%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", bytes>>20)
	case bytes%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", bytes>>10)
	}
	return fmt.Sprintf("%dB", bytes)
}

// TargetRun is one target's figures.
type TargetRun struct {
	Info     targets.Info `json:"info"`
	StartSec float64      `json:"start_sec"`
	// Ingest is smtp-ingest; Preload marks an ingest that only filled the
	// mailboxes for the other workloads (not reported as a figure).
	Ingest  *workload.IngestResult  `json:"smtp_ingest,omitempty"`
	Preload bool                    `json:"preload,omitempty"`
	Storage *workload.StorageResult `json:"storage,omitempty"`
	IMAP    *workload.IMAPResult    `json:"imap_mixed,omitempty"`
	// IMAPPaced is imap-mixed's second pass, at a fixed rate the same
	// for every target (Settings.IMAPRate).
	IMAPPaced *workload.IMAPResult `json:"imap_mixed_paced,omitempty"`
	POP3      *workload.POP3Result `json:"pop3_drain,omitempty"`
	// Sizes is smtp-ingest-sizes, one entry per message size.
	Sizes []SizeRun `json:"smtp_ingest_sizes,omitempty"`
	// Failover is the failover workload (targets of several nodes).
	Failover *workload.FailoverResult `json:"failover,omitempty"`
	// Skipped lists selected workloads that cannot run on this target.
	Skipped []SkippedWorkload `json:"skipped_workloads,omitempty"`
	// Errors are workloads that could not complete.
	Errors []string `json:"errors,omitempty"`
	// Profiles summarise the CPU profiles taken while workloads ran
	// (targets that serve them: ours).
	Profiles []Profile `json:"cpu_profiles,omitempty"`
}

// Profile is where a target's CPU time went during one workload: the
// CPU profile of all its processes, merged, written next to the report.
type Profile struct {
	Workload string `json:"workload"`
	// File is the profile's file name in the results directory, for
	// `go tool pprof`.
	File string `json:"file"`
	// CPUSec is the CPU time sampled, over every process.
	CPUSec float64 `json:"cpu_sec"`
	// Stages split the CPU time by what the server was doing (sealing,
	// the Raft log, the state file, sockets, TLS, ...), largest first.
	Stages []ProfileStage `json:"stages,omitempty"`
	// Top are the functions with the most CPU time of their own.
	Top []ProfileFunc `json:"top"`
}

// ProfileStage is one stage's share of a profile's CPU time.
type ProfileStage struct {
	Name  string  `json:"name"`
	Share float64 `json:"share"`
}

// ProfileFunc is one function's share of a profile's CPU time: Flat in
// the function itself, Cum including what it calls.
type ProfileFunc struct {
	Name string  `json:"name"`
	Flat float64 `json:"flat"`
	Cum  float64 `json:"cum"`
}

// SkippedWorkload is a selected workload a target did not run.
type SkippedWorkload struct {
	Workload string `json:"workload"`
	Reason   string `json:"reason"`
}

// Skipped is a target that did not run.
type Skipped struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// WriteJSON writes the run to path.
func (r *Run) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode run: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a run written by WriteJSON.
func ReadJSON(path string) (*Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if r.Format != Format {
		return nil, fmt.Errorf("%s: format %d, this mailbench reads %d", path, r.Format, Format)
	}
	return &r, nil
}

// target returns the named target's figures, or nil.
func (r *Run) target(name string) *TargetRun {
	for i := range r.Targets {
		if r.Targets[i].Info.Name == name {
			return &r.Targets[i]
		}
	}
	return nil
}
