// Command mailbench runs the benchmark harness: `mailbench run` starts
// each target on loopback, runs the workloads and writes the results;
// `mailbench limits` measures the machine's physical limits only;
// `mailbench render` re-renders a results JSON file as Markdown and SVG
// (and the documentation page with --docs).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mailcluster/mailcluster/bench"
	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/limits"
	"github.com/mailcluster/mailcluster/bench/report"
	"github.com/mailcluster/mailcluster/bench/targets"
)

const usage = `mailbench: how mailnode compares with established mail servers, on this machine

Usage:
  mailbench run [--quick] [--target single,cluster3,dovecot]
                [--workload smtp-ingest,storage,imap-mixed,pop3-drain,smtp-ingest-sizes,failover]
                [--out bench-results] [--docs DIR] [options]
  mailbench limits [--dir DIR]
  mailbench render [--docs DIR] FILE.json

run starts every selected target in a temporary directory on 127.0.0.1,
runs the workloads in order (smtp-ingest with its correctness check,
storage, imap-mixed, pop3-drain, smtp-ingest-sizes, failover), each on
every target in turn with the other targets stopped, stops them, and writes
OUT/<timestamp>.json, .md and two SVG charts. --docs DIR also writes
DIR/benchmarks.md with the charts. The exit status is 1 when a
correctness check failed or a workload could not run; speed figures never
fail a run. Targets: single (one bin/mailnode, see --mailnode), cluster3
(three bin/mailnode processes forming one cluster, 3 replicas per shard),
dovecot (Dovecot + Postfix from Debian's packages, installed with apt-get
when missing unless --install=false). failover (kill the leader of a
shard under SMTP load, then check that no acknowledged message is lost or
duplicated) runs on cluster3 only. smtp-ingest-sizes repeats smtp-ingest
with messages of exactly each size of --sizes (default 4 KiB, 64 KiB and
1 MiB), each checked like smtp-ingest, and reports msgs/s and MiB/s per
size with the ratio to dovecot.

run options (defaults are the standard suite; --quick changes them):
`

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "limits":
		err = cmdLimits(args[1:], stdout)
	case "render":
		err = cmdRender(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		runFlags(new(bench.Config), new(runOptions), stdout).PrintDefaults()
		return 0
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		fmt.Fprintf(stderr, "mailbench: %v\n", err)
		if strings.HasPrefix(err.Error(), "unknown command") || errors.Is(err, flag.ErrHelp) {
			return 2
		}
		return 1
	}
	return 0
}

// runOptions are run's flags that are not part of bench.Config.
type runOptions struct {
	quick     bool
	targets   string
	workloads string
	out       string
	docs      string
	logLevel  string
	// noProfiles skips the CPU profiles of our targets.
	noProfiles bool
}

// runFlags declares run's flags over cfg (already holding the defaults).
func runFlags(cfg *bench.Config, o *runOptions, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&o.quick, "quick", false, "run every available target and workload briefly (about two minutes); for CI, not for comparison")
	fs.StringVar(&o.targets, "target", strings.Join(cfg.Targets, ","), "targets, comma-separated ("+strings.Join(targets.Names(), ", ")+")")
	fs.StringVar(&o.workloads, "workload", strings.Join(cfg.Workloads, ","), "workloads, comma-separated ("+strings.Join(bench.Workloads(), ", ")+")")
	fs.StringVar(&o.out, "out", "bench-results", "directory for <timestamp>.json, .md and .svg")
	fs.StringVar(&o.docs, "docs", "", "also write DIR/benchmarks.md and its charts (make bench: docs)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "corpus seed")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "users per target")
	fs.IntVar(&cfg.Messages, "messages", cfg.Messages, "corpus messages (smtp-ingest sends at most these)")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", cfg.MaxMessageSize, "cap of the corpus's size distribution in bytes (0: 5 MiB)")
	fs.IntVar(&cfg.SMTPClients, "smtp-clients", cfg.SMTPClients, "concurrent SMTP clients")
	fs.BoolVar(&cfg.SMTPPipelining, "smtp-pipelining", cfg.SMTPPipelining, "send MAIL, RCPT and DATA in one write where the server offers PIPELINING, as MTAs do (default: one command at a time)")
	fs.DurationVar(&cfg.IngestDuration, "ingest-time", cfg.IngestDuration, "longest smtp-ingest")
	fs.DurationVar(&cfg.VerifyWait, "verify-wait", cfg.VerifyWait, "longest wait for acknowledged mail to appear")
	fs.IntVar(&cfg.IMAPSessions, "imap-sessions", cfg.IMAPSessions, "concurrent IMAP sessions (at most users)")
	fs.DurationVar(&cfg.IMAPDuration, "imap-time", cfg.IMAPDuration, "imap-mixed duration")
	fs.Float64Var(&cfg.IMAPRate, "imap-rate", cfg.IMAPRate, "pace of imap-mixed's second pass in commands/s, the same for every target (0: no second pass)")
	fs.IntVar(&cfg.POP3Clients, "pop3-clients", cfg.POP3Clients, "concurrent POP3 clients (at most users)")
	fs.DurationVar(&cfg.POP3Duration, "pop3-time", cfg.POP3Duration, "longest pop3-drain")
	fs.IntVar(&cfg.FailoverSenders, "failover-senders", cfg.FailoverSenders, "concurrent SMTP senders of failover")
	fs.DurationVar(&cfg.FailoverBefore, "failover-before", cfg.FailoverBefore, "failover: load before the kill")
	fs.DurationVar(&cfg.FailoverAfter, "failover-after", cfg.FailoverAfter, "failover: load after the kill (longer until the shard accepts a write)")
	fs.Var(sizesFlag{&cfg.SizeSeries}, "sizes", "smtp-ingest-sizes steps, comma-separated SIZE:MESSAGES (SIZE in bytes or with k/m: 4k:20000,64k:6000,1m:1000)")
	fs.DurationVar(&cfg.SizeDuration, "sizes-time", cfg.SizeDuration, "longest smtp-ingest-sizes step")
	fs.DurationVar(&cfg.FsyncDuration, "fsync-time", cfg.FsyncDuration, "fsync measurement (0 skips the physical limits)")
	fs.StringVar(&cfg.Mailnode, "mailnode", cfg.Mailnode, "mailnode binary for the single and cluster3 targets")
	fs.StringVar(&cfg.DovecotFormat, "dovecot-format", cfg.DovecotFormat, "Dovecot mailbox format: maildir or sdbox")
	fs.BoolVar(&cfg.Install, "install", cfg.Install, "install missing Debian packages for the dovecot target with apt-get")
	fs.StringVar(&cfg.WorkDir, "work-dir", cfg.WorkDir, "where the targets' temporary directories go (default: the system's)")
	fs.BoolVar(&cfg.Keep, "keep", cfg.Keep, "keep the targets' directories (data, configuration, logs)")
	fs.BoolVar(&o.noProfiles, "no-profiles", false, "take no CPU profiles of mailnode targets (default: one per workload, in -out)")
	return fs
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// --quick changes the defaults, so look for it before parsing.
	cfg := bench.Standard()
	for _, a := range args {
		if a == "--quick" || a == "-quick" || a == "--quick=true" || a == "-quick=true" {
			cfg = bench.Quick()
		}
	}
	var o runOptions
	fs := runFlags(&cfg, &o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailbench run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	defaults := bench.Standard()
	if o.quick {
		defaults = bench.Quick()
	}
	cfg.Targets, cfg.Workloads = splitList(o.targets), splitList(o.workloads)
	if !o.noProfiles {
		cfg.ProfileDir = o.out
	}
	if !sameConfig(cfg, defaults) && !o.quick {
		cfg.Suite = "custom"
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "mailbench run: --log-level: %v\n", err)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Diagnostics = stderr
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "mailbench run: %v\n", err)
		return 2
	}
	run, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "mailbench run: %v\n", err)
		return 1
	}
	outs, err := bench.WriteResults(run, o.out)
	if err != nil {
		fmt.Fprintf(stderr, "mailbench run: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "results: %s\n         %s\n         %s\n         %s\n", outs.JSON, outs.Markdown, outs.Throughput, outs.Latency)
	if o.docs != "" {
		page, err := bench.WriteDocs(run, o.docs, filepath.Base(outs.JSON))
		if err != nil {
			fmt.Fprintf(stderr, "mailbench run: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "docs:    %s\n", page)
	}
	for _, s := range run.Skipped {
		fmt.Fprintf(stdout, "skipped: %s: %s\n", s.Target, s.Reason)
	}
	for _, r := range run.Ratios() {
		fmt.Fprintf(stdout, "ratio:   %s\n", r)
	}
	if len(run.Failures) > 0 {
		for _, f := range run.Failures {
			fmt.Fprintf(stderr, "FAILED: %s\n", f)
		}
		return 1
	}
	return 0
}

// sameConfig reports whether the sizing of a run is a suite's.
func sameConfig(a, b bench.Config) bool {
	return a.Seed == b.Seed && a.Users == b.Users && a.Messages == b.Messages && a.MaxMessageSize == b.MaxMessageSize &&
		a.SMTPClients == b.SMTPClients && a.SMTPPipelining == b.SMTPPipelining && a.IngestDuration == b.IngestDuration && a.IMAPSessions == b.IMAPSessions &&
		a.IMAPDuration == b.IMAPDuration && a.IMAPRate == b.IMAPRate && a.POP3Clients == b.POP3Clients && a.POP3Duration == b.POP3Duration &&
		a.FailoverSenders == b.FailoverSenders && a.FailoverBefore == b.FailoverBefore && a.FailoverAfter == b.FailoverAfter &&
		strings.Join(a.Targets, ",") == strings.Join(b.Targets, ",") && strings.Join(a.Workloads, ",") == strings.Join(b.Workloads, ",") &&
		a.DovecotFormat == b.DovecotFormat && fmt.Sprint(a.SizeSeries) == fmt.Sprint(b.SizeSeries) && a.SizeDuration == b.SizeDuration && a.SizeProfiles == b.SizeProfiles
}

// sizesFlag parses --sizes into the steps of smtp-ingest-sizes.
type sizesFlag struct{ steps *[]bench.SizeStep }

func (f sizesFlag) String() string {
	if f.steps == nil {
		return ""
	}
	parts := make([]string, len(*f.steps))
	for i, st := range *f.steps {
		parts[i] = fmt.Sprintf("%d:%d", st.Bytes, st.Messages)
	}
	return strings.Join(parts, ",")
}

func (f sizesFlag) Set(s string) error {
	var steps []bench.SizeStep
	for _, part := range splitList(s) {
		size, count, ok := strings.Cut(part, ":")
		if !ok || size == "" {
			return fmt.Errorf("size step %q: want SIZE:MESSAGES", part)
		}
		mult := 1
		switch strings.ToLower(size[len(size)-1:]) {
		case "k":
			mult, size = 1<<10, size[:len(size)-1]
		case "m":
			mult, size = 1<<20, size[:len(size)-1]
		}
		n, err := strconv.Atoi(size)
		if err != nil {
			return fmt.Errorf("size step %q: %w", part, err)
		}
		m, err := strconv.Atoi(count)
		if err != nil {
			return fmt.Errorf("size step %q: %w", part, err)
		}
		steps = append(steps, bench.SizeStep{Bytes: n * mult, Messages: m})
	}
	*f.steps = steps
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func cmdLimits(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("limits", flag.ContinueOnError)
	dir := fs.String("dir", os.TempDir(), "directory on the data disk to measure fsync in")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := corpus.Generate(corpus.Config{Seed: 1, Messages: 500, Users: 10})
	if err != nil {
		return err
	}
	msgs := make([][]byte, len(c.Messages))
	for i, m := range c.Messages {
		msgs[i] = m.Data
	}
	l, err := limits.Measure(*dir, 2*time.Second, time.Second, msgs)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "fsync (4 KiB append + fdatasync) in %s: %.0f/s, %.2f ms each\n", *dir, l.FsyncPerSec, l.FsyncMeanMS)
	fmt.Fprintf(stdout, "XChaCha20-Poly1305 seal, one core: %.0f MiB/s\n", l.SealMBPerSec)
	fmt.Fprintf(stdout, "zstd default level, one core: %.0f MiB/s, ratio %.2f on the corpus\n", l.ZstdMBPerSec, l.ZstdRatio)
	fmt.Fprintf(stdout, "compress then seal, one core: %.0f MiB/s = %.0f corpus messages/s\n", l.PipelineMBPerSec, l.PipelineMsgPerSec)
	return nil
}

func cmdRender(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	docs := fs.String("docs", "", "also write DIR/benchmarks.md and its charts from this run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("render takes one results JSON file: %w", flag.ErrHelp)
	}
	path := fs.Arg(0)
	run, err := report.ReadJSON(path)
	if err != nil {
		return err
	}
	outs, err := bench.WriteResults(run, filepath.Dir(path))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n%s\n%s\n", outs.Markdown, outs.Throughput, outs.Latency)
	if *docs != "" {
		page, err := bench.WriteDocs(run, *docs, filepath.Base(path))
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, page)
	}
	return nil
}
