package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/limits"
	"github.com/mailcluster/mailcluster/bench/report"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/bench/workload"
)

// Workload names, in the order a run executes them on each target.
const (
	SMTPIngest = "smtp-ingest"
	Storage    = "storage"
	IMAPMixed  = "imap-mixed"
	POP3Drain  = "pop3-drain"
	// SMTPIngestSizes is smtp-ingest once per fixed message size
	// (Config.SizeSeries), each with its own correctness check.
	SMTPIngestSizes = "smtp-ingest-sizes"
	Failover        = "failover"
)

// Workloads lists every workload in execution order: storage measures
// what smtp-ingest delivered, before imap-mixed and pop3-drain change it;
// smtp-ingest-sizes adds mail of its own to the mailboxes, so it comes
// after the workloads that read what smtp-ingest delivered; failover
// kills a node, so it comes last (it runs on targets of several nodes
// only).
func Workloads() []string {
	return []string{SMTPIngest, Storage, IMAPMixed, POP3Drain, SMTPIngestSizes, Failover}
}

// SizeStep is one step of the message-size series: Messages messages of
// exactly Bytes bytes each.
type SizeStep struct {
	Bytes    int
	Messages int
}

// StandardSizes is the message-size series of the standard suite:
// small, medium and large mail (4 KiB, 64 KiB, 1 MiB). The counts make
// every target's step last ten seconds or more, and the slowest fit in
// the step's time limit: a step of a few seconds weighs the clients'
// start and the last stragglers heavily, more so the faster a target
// sends.
func StandardSizes() []SizeStep {
	return []SizeStep{{4 << 10, 20000}, {64 << 10, 6000}, {1 << 20, 1000}}
}

// SizeLabel names a message size in reports and profile file names
// ("4KiB", "64KiB", "1MiB").
func SizeLabel(bytes int) string { return report.SizeLabel(bytes) }

// Domain is the mail domain of the benchmark's users.
const Domain = "bench.test"

// Config is one run's parameters. Standard and Quick return the two
// suites; a command line may change any field.
type Config struct {
	// Suite names the configuration in the report.
	Suite string
	// Targets and Workloads select what runs (names as in
	// targets.Names and Workloads).
	Targets   []string
	Workloads []string

	Seed     uint64
	Users    int
	Messages int
	// MaxMessageSize caps the corpus's long tail (0: 5 MiB).
	MaxMessageSize int

	SMTPClients    int
	IngestDuration time.Duration
	// SMTPPipelining makes the SMTP clients of smtp-ingest and
	// smtp-ingest-sizes send MAIL, RCPT and DATA in one write where the
	// server offers PIPELINING, as MTAs do (workload.IngestConfig).
	SMTPPipelining bool
	// VerifyWait bounds the wait for asynchronously delivered mail.
	VerifyWait   time.Duration
	IMAPSessions int
	IMAPDuration time.Duration
	// IMAPRate, when above zero, adds a second pass of imap-mixed after
	// the closed loop: the same sessions for IMAPDuration, paced to
	// IMAPRate commands per second in all (workload.IMAPConfig.Rate),
	// a load below every target's capacity, so that the targets'
	// latencies are compared under the same load.
	IMAPRate     float64
	POP3Clients  int
	POP3Duration time.Duration
	// FailoverSenders send to the cluster while a shard's leader is
	// killed, FailoverBefore before the kill and FailoverAfter after it.
	FailoverSenders int
	FailoverBefore  time.Duration
	FailoverAfter   time.Duration
	// SizeSeries are the steps of smtp-ingest-sizes, sent by SMTPClients
	// clients, each step for at most SizeDuration.
	SizeSeries   []SizeStep
	SizeDuration time.Duration
	// SizeProfiles takes a CPU profile of each size step (with
	// ProfileDir): each costs up to one profile chunk of waiting after
	// its step, which the quick suite's tiny steps cannot afford.
	SizeProfiles bool
	// FsyncDuration and CryptoDuration bound the physical-limit
	// measurements; zero FsyncDuration skips them.
	FsyncDuration  time.Duration
	CryptoDuration time.Duration

	// Mailnode is the mailnode binary for the single and cluster3
	// targets.
	Mailnode string
	// DovecotFormat is maildir or sdbox.
	DovecotFormat string
	// Install allows installing the dovecot target's Debian packages.
	Install bool
	// WorkDir holds the run's temporary directory ("" for the system's).
	WorkDir string
	// Keep leaves the temporary directory (data, configs, logs) in place.
	Keep   bool
	Logger *slog.Logger
	// Diagnostics receives, when a target fails, what its processes
	// logged at warning level and above and where their goroutines wait
	// (see diagnose); nil writes nothing.
	Diagnostics io.Writer
	// ProfileDir receives a CPU profile of each workload on the targets
	// that serve one (ours), as <stamp>-<target>-<workload>.cpu.pprof
	// beside the report; "" takes none.
	ProfileDir string

	// profileStamp names the run's profiles like its report.
	profileStamp string
}

// Standard is the standard suite: long enough for stable figures on a
// small machine (about a quarter of an hour on two cores).
func Standard() Config {
	return Config{
		Suite: "standard", Targets: targets.Names(), Workloads: Workloads(),
		Seed: 1, Users: 100, Messages: 6000,
		SMTPClients: 8, IngestDuration: 4 * time.Minute, VerifyWait: 5 * time.Minute,
		IMAPSessions: 8, IMAPDuration: time.Minute, IMAPRate: 200,
		POP3Clients: 4, POP3Duration: 2 * time.Minute,
		FailoverSenders: 6, FailoverBefore: 10 * time.Second, FailoverAfter: 30 * time.Second,
		SizeSeries: StandardSizes(), SizeDuration: time.Minute, SizeProfiles: true,
		FsyncDuration: 2 * time.Second, CryptoDuration: time.Second,
		Mailnode: "bin/mailnode", DovecotFormat: "maildir", Install: true,
	}
}

// Quick runs every target and workload briefly (a couple of minutes in
// total): it proves the harness works; its figures are not for
// comparison.
func Quick() Config {
	c := Standard()
	c.Suite = "quick"
	c.Users, c.Messages = 8, 200
	c.SMTPClients, c.IngestDuration, c.VerifyWait = 4, 15*time.Second, time.Minute
	c.IMAPSessions, c.IMAPDuration, c.IMAPRate = 4, 8*time.Second, 40
	c.POP3Clients, c.POP3Duration = 4, 10*time.Second
	c.FailoverSenders, c.FailoverBefore, c.FailoverAfter = 4, 3*time.Second, 6*time.Second
	c.SizeSeries, c.SizeDuration, c.SizeProfiles = []SizeStep{{4 << 10, 60}, {64 << 10, 30}, {1 << 20, 6}}, 5*time.Second, false
	c.FsyncDuration, c.CryptoDuration = time.Second, 300*time.Millisecond
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	for _, t := range c.Targets {
		if !slices.Contains(targets.Names(), t) && !slices.Contains([]string{"mox", "maddy"}, t) {
			errs = append(errs, fmt.Errorf("unknown target %q (known: %s)", t, strings.Join(targets.Names(), ", ")))
		}
	}
	for _, w := range c.Workloads {
		if !slices.Contains(Workloads(), w) {
			errs = append(errs, fmt.Errorf("unknown workload %q (known: %s)", w, strings.Join(Workloads(), ", ")))
		}
	}
	if len(c.Targets) == 0 || len(c.Workloads) == 0 {
		errs = append(errs, errors.New("no target or no workload selected"))
	}
	if c.Users < 1 || c.Messages < 1 || c.SMTPClients < 1 {
		errs = append(errs, errors.New("users, messages and smtp clients must be positive"))
	}
	imapUsers, pop3Users := c.userSplit()
	if c.wants(IMAPMixed) && (c.IMAPSessions < 1 || c.IMAPSessions > len(imapUsers)) {
		errs = append(errs, fmt.Errorf("imap sessions must be 1..%d: each uses users of its own, "+
			"and imap-mixed and pop3-drain share the %d users when both run", len(imapUsers), c.Users))
	}
	if c.wants(POP3Drain) && (c.POP3Clients < 1 || c.POP3Clients > len(pop3Users)) {
		errs = append(errs, fmt.Errorf("pop3 clients must be 1..%d: each uses users of its own, "+
			"and imap-mixed and pop3-drain share the %d users when both run", len(pop3Users), c.Users))
	}
	durations := map[string]time.Duration{"ingest": c.IngestDuration, "imap": c.IMAPDuration, "pop3": c.POP3Duration, "verify": c.VerifyWait}
	if c.wants(SMTPIngestSizes) {
		durations["size series"] = c.SizeDuration
		if len(c.SizeSeries) == 0 {
			errs = append(errs, errors.New("smtp-ingest-sizes needs at least one size"))
		}
		for _, st := range c.SizeSeries {
			if st.Bytes < 1<<10 || st.Bytes > 16<<20 || st.Messages < 1 {
				errs = append(errs, fmt.Errorf("size step %d bytes x %d messages: want 1 KiB..16 MiB and at least one message", st.Bytes, st.Messages))
			}
		}
	}
	if c.wants(Failover) {
		durations["failover before"], durations["failover after"] = c.FailoverBefore, c.FailoverAfter
		if c.FailoverSenders < 1 {
			errs = append(errs, errors.New("failover senders must be positive"))
		}
	}
	for name, d := range durations {
		if d <= 0 || d > 2*time.Hour {
			errs = append(errs, fmt.Errorf("%s duration %v: want more than 0 and at most 2h", name, d))
		}
	}
	return errors.Join(errs...)
}

func (c Config) wants(workload string) bool { return slices.Contains(c.Workloads, workload) }

// needsMail reports whether a selected workload works on the mail
// smtp-ingest delivers (failover brings its own).
func (c Config) needsMail() bool {
	return c.wants(SMTPIngest) || c.wants(Storage) || c.wants(IMAPMixed) || c.wants(POP3Drain)
}

// userSplit returns the user indexes imap-mixed and pop3-drain work on:
// when both run, the first half of the users and the second, so that
// pop3-drain finds the mailboxes as smtp-ingest filled them.
func (c Config) userSplit() (imapUsers, pop3Users []int) {
	all := make([]int, c.Users)
	for i := range all {
		all[i] = i
	}
	if !c.wants(IMAPMixed) || !c.wants(POP3Drain) || c.Users < 2 {
		return all, all
	}
	return all[:c.Users/2], all[c.Users/2:]
}

// withUsers returns env restricted to the given users.
func withUsers(env workload.Env, idx []int) workload.Env {
	users := make([]targets.User, len(idx))
	for i, u := range idx {
		users[i] = env.Users[u]
	}
	env.Users = users
	return env
}

// Run executes the configured run: it generates the corpus, measures the
// physical limits, starts every target, runs each workload on every
// target in turn before the next workload (runStands), and stops them.
// A target that cannot run here is skipped and listed;
// a failed correctness check or an aborted workload is listed in
// Run.Failures. The error is for problems that stop the whole run.
func Run(ctx context.Context, cfg Config) (*report.Run, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root, err := os.MkdirTemp(cfg.WorkDir, "mailbench-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	if cfg.Keep {
		log.Info("keeping the work directory", "dir", root)
	} else {
		defer os.RemoveAll(root)
	}
	run := &report.Run{
		Format: report.Format, Started: time.Now().UTC(), Suite: cfg.Suite,
		GitCommit: gitCommit(), Machine: describeMachine(root),
		Settings: report.Settings{
			Seed: cfg.Seed, Users: cfg.Users, Messages: cfg.Messages,
			SMTPClients: cfg.SMTPClients, SMTPPipelining: cfg.SMTPPipelining, IngestSec: cfg.IngestDuration.Seconds(),
			IMAPSessions: cfg.IMAPSessions, IMAPSec: cfg.IMAPDuration.Seconds(), IMAPRate: cfg.IMAPRate,
			POP3Clients: cfg.POP3Clients, POP3Sec: cfg.POP3Duration.Seconds(),
			Workloads: cfg.Workloads, DovecotFormat: cfg.DovecotFormat,
		},
	}
	cfg.profileStamp = resultStamp(run.Started)
	if cfg.wants(SMTPIngestSizes) {
		for _, st := range cfg.SizeSeries {
			run.Settings.SizeSeries = append(run.Settings.SizeSeries, report.SizeSetting{Bytes: st.Bytes, Messages: st.Messages})
		}
		run.Settings.SizeSec = cfg.SizeDuration.Seconds()
	}
	if cfg.wants(Failover) {
		run.Settings.FailoverSenders = cfg.FailoverSenders
		run.Settings.FailoverBeforeSec, run.Settings.FailoverAfterSec = cfg.FailoverBefore.Seconds(), cfg.FailoverAfter.Seconds()
	}
	t0 := time.Now()
	corp, err := corpus.Generate(corpus.Config{Seed: cfg.Seed, Messages: cfg.Messages, Users: cfg.Users, Domain: Domain, MaxSize: cfg.MaxMessageSize})
	if err != nil {
		return nil, err
	}
	run.Corpus = corp.Stats()
	log.Info("corpus generated", "messages", run.Corpus.Messages, "mib", run.Corpus.TotalBytes>>20, "took", time.Since(t0).Round(time.Millisecond))
	if cfg.FsyncDuration > 0 {
		msgs := make([][]byte, len(corp.Messages))
		for i, m := range corp.Messages {
			msgs[i] = m.Data
		}
		l, err := limits.Measure(root, cfg.FsyncDuration, cfg.CryptoDuration, msgs)
		if err != nil {
			return nil, fmt.Errorf("physical limits: %w", err)
		}
		run.Limits = &l
		log.Info("physical limits", "fsync_per_sec", int(l.FsyncPerSec), "seal_mib_s", int(l.SealMBPerSec), "zstd_mib_s", int(l.ZstdMBPerSec))
	}
	cert, err := targets.NewCertificate("mail." + Domain)
	if err != nil {
		return nil, err
	}
	users := make([]targets.User, cfg.Users)
	for i := range users {
		users[i] = targets.User{Address: fmt.Sprintf("user%d@%s", i, Domain), Password: fmt.Sprintf("bench-password-%d", i)}
	}
	var stands []*stand
	for _, name := range cfg.Targets {
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		t, err := targets.New(name, targets.Options{
			Dir: dir, Domain: Domain, Cert: cert, Logger: log, Mailnode: cfg.Mailnode,
			DovecotFormat: cfg.DovecotFormat, Install: cfg.Install,
		})
		if errors.Is(err, targets.ErrUnavailable) {
			log.Warn("target skipped", "target", name, "reason", err)
			run.Skipped = append(run.Skipped, report.Skipped{Target: name, Reason: err.Error()})
			continue
		}
		if err != nil {
			run.Failures = append(run.Failures, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		stands = append(stands, &stand{t: t})
	}
	runStands(ctx, cfg, stands, corp, users, log)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, s := range stands {
		run.Targets = append(run.Targets, s.tr)
		run.Failures = append(run.Failures, failures(s.tr)...)
	}
	if len(run.Targets) == 0 {
		run.Failures = append(run.Failures, "no target could run")
	}
	run.Finished = time.Now().UTC()
	return run, nil
}

// nodesOf returns the endpoints of every node of a target of several
// nodes, and nil for a target of one.
func nodesOf(t targets.Target) []targets.Endpoints {
	if eps := targets.AllEndpoints(t); len(eps) > 1 {
		return eps
	}
	return nil
}

// maxErrorShare is the share of failed operations above which a workload
// counts as broken (a few failures are reported, not fatal).
const maxErrorShare = 0.01

// failures lists why a target's figures cannot be trusted: a failed
// correctness check, a workload that did not run or mostly failed.
// Speed never fails a run.
func failures(tr report.TargetRun) []string {
	name := tr.Info.Name
	var out []string
	for _, e := range tr.Errors {
		out = append(out, fmt.Sprintf("%s: %s", name, e))
	}
	broken := func(workload string, ok, failed int64) {
		if ok == 0 || float64(failed) > maxErrorShare*float64(ok+failed) {
			out = append(out, fmt.Sprintf("%s: %s: %d operations failed, %d succeeded", name, workload, failed, ok))
		}
	}
	if in := tr.Ingest; in != nil {
		broken(SMTPIngest, int64(in.Acked), int64(in.Failed))
		if c := in.Check; c != nil && !c.OK() {
			out = append(out, fmt.Sprintf("%s: %s check failed: of %d acknowledged messages %d missing, %d different, %d duplicated",
				name, SMTPIngest, c.Expected, c.Missing, c.Mismatched, c.Duplicates))
		}
	}
	for _, sz := range tr.Sizes {
		in, w := sz.Ingest, SMTPIngestSizes+" "+SizeLabel(sz.Bytes)
		broken(w, int64(in.Acked), int64(in.Failed))
		if c := in.Check; c != nil && !c.OK() {
			out = append(out, fmt.Sprintf("%s: %s check failed: of %d acknowledged messages %d missing, %d different, %d duplicated",
				name, w, c.Expected, c.Missing, c.Mismatched, c.Duplicates))
		}
	}
	if im := tr.IMAP; im != nil {
		broken(IMAPMixed, im.Ops, im.Failed)
	}
	if im := tr.IMAPPaced; im != nil {
		broken(IMAPMixed+" (paced)", im.Ops, im.Failed)
	}
	if f := tr.Failover; f != nil {
		out = append(out, failoverFailures(name, f)...)
	}
	if p := tr.POP3; p != nil {
		var ok, failed int64
		for _, s := range p.PerOp {
			ok += s.Count
			failed += s.Errors
		}
		broken(POP3Drain, ok, failed)
		if p.Mismatched > 0 {
			out = append(out, fmt.Sprintf("%s: %s: %d downloaded messages differ from what was sent", name, POP3Drain, p.Mismatched))
		}
	}
	return out
}

// failoverFailures lists why a failover run fails: an acknowledged
// message lost, duplicated or changed; mail that could not be read back;
// a shard that never accepted a write again; a killed node that did not
// rejoin. How long the failover took never fails it.
func failoverFailures(name string, f *workload.FailoverResult) []string {
	var out []string
	switch c := f.Check; {
	case c == nil:
		out = append(out, fmt.Sprintf("%s: %s: the acknowledged messages could not be read back: %s", name, Failover, strings.Join(f.Errors, "; ")))
	case !f.OK():
		why := ""
		if f.DuplicatesLostReply > 0 {
			why = fmt.Sprintf(" (%d of the duplicated had their 250 lost with the killed node's connection after the end of data, "+
				"so the sender retried a message that was stored)", f.DuplicatesLostReply)
		}
		out = append(out, fmt.Sprintf("%s: %s check failed: of %d acknowledged messages %d lost, %d duplicated, %d different%s",
			name, Failover, c.Expected, f.Lost, f.Duplicates, c.Mismatched, why))
	}
	if !f.Recovered {
		out = append(out, fmt.Sprintf("%s: %s: shard %d acknowledged no write in the %.0f s after its leader %s was killed",
			name, Failover, f.Shard, f.AfterSec, f.Killed))
	}
	if !f.Rejoined {
		out = append(out, fmt.Sprintf("%s: %s: the killed node %s did not rejoin the cluster", name, Failover, f.Killed))
	}
	if f.Acked == 0 || float64(f.Rejected) > maxErrorShare*float64(f.Acked+f.Rejected) {
		out = append(out, fmt.Sprintf("%s: %s: %d messages refused for good (5xx), %d acknowledged", name, Failover, f.Rejected, f.Acked))
	}
	return out
}
