package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"

	"github.com/mailcluster/mailcluster/bench/report"
)

// Profiled is a target whose processes serve Go's CPU profiles
// (mailnode's /debug/pprof/, on with [debug] pprof). The harness records
// where a workload's CPU time goes on such a target.
type Profiled interface {
	// ProfileURLs are the CPU profile endpoints of every process of the
	// target, without the seconds parameter.
	ProfileURLs() []string
}

const (
	// profileChunk is the length of one profile request. The harness
	// takes back-to-back chunks while a workload runs (its end is not
	// known in advance) and merges them, so a workload's profile ends at
	// most one chunk after the workload.
	profileChunk = 5 * time.Second
	// profileTop is how many functions the report lists per profile.
	profileTop = 12
	// maxProfileBytes bounds one downloaded profile.
	maxProfileBytes = 64 << 20
)

// cpuProfiler takes CPU profiles of every process of a target while a
// workload runs.
type cpuProfiler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	parts  []*profile.Profile
	errs   []error
}

// startCPUProfile starts profiling urls until stop is called.
func startCPUProfile(ctx context.Context, urls []string, chunk time.Duration) *cpuProfiler {
	ctx, cancel := context.WithCancel(ctx)
	p := &cpuProfiler{cancel: cancel}
	client := &http.Client{Timeout: chunk + 30*time.Second}
	for _, u := range urls {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for ctx.Err() == nil {
				prof, err := fetchProfile(client, u, chunk)
				p.mu.Lock()
				if err != nil {
					p.errs = append(p.errs, err)
				} else {
					p.parts = append(p.parts, prof)
				}
				p.mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	return p
}

// fetchProfile takes one chunk. It does not follow ctx: a chunk in
// flight is completed, so that the end of a workload is in the profile.
func fetchProfile(client *http.Client, url string, chunk time.Duration) (*profile.Profile, error) {
	resp, err := client.Get(fmt.Sprintf("%s?seconds=%d", url, max(int(chunk/time.Second), 1)))
	if err != nil {
		return nil, fmt.Errorf("CPU profile from %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("CPU profile from %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxProfileBytes))
	if err != nil {
		return nil, fmt.Errorf("CPU profile from %s: %w", url, err)
	}
	prof, err := profile.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("CPU profile from %s: %w", url, err)
	}
	return prof, nil
}

// stop ends profiling and returns the merged profile of every process
// and chunk.
func (p *cpuProfiler) stop() (*profile.Profile, error) {
	p.cancel()
	p.wg.Wait()
	if len(p.parts) == 0 {
		if len(p.errs) > 0 {
			return nil, p.errs[0]
		}
		return nil, fmt.Errorf("no CPU profile taken")
	}
	merged, err := profile.Merge(p.parts)
	if err != nil {
		return nil, fmt.Errorf("merge CPU profiles: %w", err)
	}
	return merged, nil
}

// profileWorkload runs fn while a CPU profile of t is taken, when t is
// Profiled and cfg.ProfileDir is set; the profile is written to
// ProfileDir and summarised in tr.Profiles. A failed profile is logged,
// never the workload's failure.
func profileWorkload(ctx context.Context, cfg Config, t any, tr *report.TargetRun, workload string, log *slog.Logger, fn func()) {
	pt, ok := t.(Profiled)
	if !ok || cfg.ProfileDir == "" {
		fn()
		return
	}
	p := startCPUProfile(ctx, pt.ProfileURLs(), profileChunk)
	fn()
	prof, err := p.stop()
	if err == nil {
		var summary report.Profile
		summary, err = writeProfile(prof, cfg.ProfileDir, cfg.profileStamp, tr.Info.Name, workload)
		if err == nil {
			tr.Profiles = append(tr.Profiles, summary)
		}
	}
	if err != nil {
		log.Warn("CPU profile not recorded", "target", tr.Info.Name, "workload", workload, "err", err)
	}
}

// writeProfile writes prof as DIR/<stamp>-<target>-<workload>.cpu.pprof
// and summarises it.
func writeProfile(prof *profile.Profile, dir, stamp, target, workload string) (report.Profile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return report.Profile{}, err
	}
	name := fmt.Sprintf("%s-%s-%s.cpu.pprof", stamp, target, workload)
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return report.Profile{}, err
	}
	if err := prof.Write(f); err != nil {
		f.Close()
		return report.Profile{}, fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return report.Profile{}, err
	}
	s := summarise(prof)
	s.Workload, s.File = workload, name
	return s, nil
}

// A stage is a part of the server's work that a CPU sample is counted
// for, named by the prefixes of its functions' names.
type stage struct {
	name     string
	prefixes []string
}

const modulePath = "github.com/mailcluster/mailcluster/"

// componentStages are the libraries a sample is counted for when one of
// them is on its stack, the innermost one deciding: compression called
// while sealing is compression, and the socket write under a TLS record
// is a socket write.
var componentStages = []stage{
	{"zstd compression", []string{"github.com/klauspost/compress/"}},
	{"encryption at rest (XChaCha20-Poly1305)", []string{"golang.org/x/crypto/chacha20", "golang.org/x/crypto/internal/poly1305"}},
	{"password hashing (argon2id)", []string{"golang.org/x/crypto/argon2", "golang.org/x/crypto/blake2b"}},
	{"Raft log (raft-wal)", []string{"github.com/hashicorp/raft-wal"}},
	{"state file (bbolt)", []string{"go.etcd.io/bbolt"}},
	{"TLS", []string{"crypto/tls."}},
	{"sockets", []string{"net."}},
	{"garbage collection", []string{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge"}},
}

// callerStages count a sample no library claimed for the first of them,
// in this order, with a function anywhere on its stack: building a
// search record is that, not the IMAP code it is made of, and a
// directory lookup made for RCPT is the directory's.
var callerStages = []stage{
	{"search records", []string{modulePath + "protocols/imap.BuildSearchRecord"}},
	{"directory", []string{modulePath + "cluster/directory."}},
	{"mail store (commands and their apply)", []string{modulePath + "cluster/mailstore.", modulePath + "raftstore"}},
	{"Raft", []string{"github.com/hashicorp/raft."}},
	{"SMTP", []string{"github.com/emersion/go-smtp", modulePath + "protocols/smtp."}},
	{"IMAP", []string{"github.com/emersion/go-imap", modulePath + "protocols/imap."}},
	{"POP3", []string{modulePath + "protocols/pop3."}},
}

// otherStage counts what no stage claims: the scheduler, allocation
// outside any stage, the rest of the node.
const otherStage = "other (scheduler, runtime, the rest)"

func (st stage) matches(fn string) bool {
	for _, p := range st.prefixes {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// stageOf returns the stage a sample with these functions (innermost
// first) is counted for.
func stageOf(fns []string) string {
	for _, fn := range fns {
		for _, st := range componentStages {
			if st.matches(fn) {
				return st.name
			}
		}
	}
	for _, st := range callerStages {
		for _, fn := range fns {
			if st.matches(fn) {
				return st.name
			}
		}
	}
	return otherStage
}

// summarise returns a profile's total CPU time, its split by stage, and
// the functions with the most CPU time of their own (flat) and including
// callees (cum).
func summarise(prof *profile.Profile) report.Profile {
	cpu := -1
	for i, st := range prof.SampleType {
		if st.Type == "cpu" {
			cpu = i
		}
	}
	if cpu < 0 {
		return report.Profile{}
	}
	flat, cum, stages := map[string]int64{}, map[string]int64{}, map[string]int64{}
	var total int64
	var fns []string
	for _, s := range prof.Sample {
		v := s.Value[cpu]
		total += v
		seen := map[string]bool{}
		fns = fns[:0]
		for i, loc := range s.Location {
			for j, line := range loc.Line {
				if line.Function == nil {
					continue
				}
				fn := line.Function.Name
				fns = append(fns, fn)
				// The leaf is the innermost line of the first location.
				if i == 0 && j == 0 {
					flat[fn] += v
				}
				if !seen[fn] {
					seen[fn] = true
					cum[fn] += v
				}
			}
		}
		stages[stageOf(fns)] += v
	}
	out := report.Profile{CPUSec: float64(total) / float64(time.Second)}
	if total == 0 {
		return out
	}
	for name, v := range stages {
		out.Stages = append(out.Stages, report.ProfileStage{Name: name, Share: float64(v) / float64(total)})
	}
	slices.SortFunc(out.Stages, func(a, b report.ProfileStage) int {
		if c := cmp.Compare(b.Share, a.Share); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	names := make([]string, 0, len(flat))
	for fn := range flat {
		names = append(names, fn)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(flat[b], flat[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, fn := range names[:min(len(names), profileTop)] {
		out.Top = append(out.Top, report.ProfileFunc{Name: fn,
			Flat: float64(flat[fn]) / float64(total), Cum: float64(cum[fn]) / float64(total)})
	}
	return out
}
