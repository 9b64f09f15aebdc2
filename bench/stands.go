package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/report"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/bench/workload"
)

// stand is one target through a run: started, then given each workload
// in its turn, between the other targets' turns at the same workload
// (and paused between its turns when it can be), and stopped at the
// end.
type stand struct {
	t        targets.Target
	tr       report.TargetRun
	env      workload.Env
	baseline targets.Disk
	ingest   *workload.IngestResult
	// out is set when the target cannot go on: it did not start, or a
	// workload the later ones depend on failed. Its figures so far stay
	// in its report.
	out bool
	// paused is set while a Pausable target is stopped between turns.
	paused bool
	// diagnosed is set once what its processes logged has been written
	// out for a failure.
	diagnosed bool
}

// Pausable is a target that can stop between its turns and start again
// on its data. Only the target whose turn it is then runs: an idle
// target takes CPU and memory from the one measured (a cluster's idle
// Raft traffic alone took a third of a core here), and it would take
// more from some targets than from others.
type Pausable interface {
	// Pause stops the target's processes, keeping its data.
	Pause() error
	// Resume starts them again and returns once the target serves.
	Resume(ctx context.Context) error
}

// alone runs a turn with the target started again before it and paused
// after it. After each start it is warmed up again: a restart empties
// every target's cache of verified logins. A target that cannot pause
// runs throughout. A failure is diagnosed before the pause, while the
// processes still run and can say where their goroutines wait.
func alone(cfg Config, run func(ctx context.Context, s *stand) bool) func(ctx context.Context, s *stand) bool {
	return func(ctx context.Context, s *stand) bool {
		ok := s.resume(ctx) && run(ctx, s)
		s.diagnoseFailure(ctx, cfg)
		return s.pause() && ok
	}
}

// diagnoseFailure writes what the target's processes logged, and where
// their goroutines wait, to cfg.Diagnostics the first time its run has
// failed.
func (s *stand) diagnoseFailure(ctx context.Context, cfg Config) {
	in, ok := s.t.(Inspectable)
	if !ok || cfg.Diagnostics == nil || s.diagnosed || len(failures(s.tr)) == 0 {
		return
	}
	s.diagnosed = true
	diagnose(ctx, cfg.Diagnostics, s.tr.Info.Name, in)
}

// resume starts a paused target again and warms it up.
func (s *stand) resume(ctx context.Context) bool {
	p, ok := s.t.(Pausable)
	if !ok || !s.paused {
		return true
	}
	s.paused = false
	if err := p.Resume(ctx); err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("start again after a pause: %v", err))
		return false
	}
	s.env.Endpoints, s.env.Nodes = s.t.Endpoints(), nodesOf(s.t)
	if err := workload.WarmUp(ctx, s.env); err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("warm-up after a pause: %v", err))
		return false
	}
	return true
}

// pause stops a Pausable target until its next turn.
func (s *stand) pause() bool {
	p, ok := s.t.(Pausable)
	if !ok || s.paused {
		return true
	}
	if err := p.Pause(); err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("pause: %v", err))
		return false
	}
	s.paused = true
	return true
}

// turn is one workload's turn on one target; it returns false when the
// target cannot go on.
type turn struct {
	name string
	run  func(ctx context.Context, s *stand) bool
}

// interleave gives every target still in the run its turn at one
// workload, the targets in order, before the next workload starts.
//
// The machines the suite runs on change speed over its hour (the disk's
// fsync rate and the targets' own rates move by half between runs on
// one host), so a target that ran all its workloads before the next
// target started took a slow quarter of an hour alone. Back to back,
// each workload's figures for the targets come from the same minutes,
// and their ratios from one machine state.
func interleave(ctx context.Context, stands []*stand, turns []turn, log *slog.Logger) {
	for _, tu := range turns {
		for _, s := range stands {
			if ctx.Err() != nil {
				return
			}
			if s.out {
				continue
			}
			if !tu.run(ctx, s) {
				log.Warn("target out of the run", "target", s.tr.Info.Name, "after", tu.name)
				s.out = true
			}
		}
	}
}

// runStands starts every target, runs the selected workloads on them
// interleaved, and stops them; each stand's report is in its tr.
func runStands(ctx context.Context, cfg Config, stands []*stand, corp *corpus.Corpus, users []targets.User, log *slog.Logger) {
	runStandsTurns(ctx, cfg, stands, workloadTurns(cfg, corp, users, log), log)
}

// runStandsTurns gives the stands the turns, interleaved, and stops them.
func runStandsTurns(ctx context.Context, cfg Config, stands []*stand, turns []turn, log *slog.Logger) {
	defer func() {
		for _, s := range stands {
			stopStand(ctx, cfg, s)
		}
	}()
	interleave(ctx, stands, turns, log)
}

// stopStand stops one target; when its run failed, or it would not stop,
// what its processes logged goes to cfg.Diagnostics.
func stopStand(ctx context.Context, cfg Config, s *stand) {
	in, inspectable := s.t.(Inspectable)
	inspectable = inspectable && cfg.Diagnostics != nil
	s.diagnoseFailure(ctx, cfg)
	if err := s.t.Stop(); err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("stop: %v", err))
		// A process that would not stop has dumped its goroutines
		// into its log (see targets.process.stop).
		if inspectable {
			diagnose(ctx, cfg.Diagnostics, s.tr.Info.Name, in)
		}
	}
}

// workloadTurns lists the turns of a run in their order: the targets'
// start, then each selected workload, the size series one size at a
// time.
func workloadTurns(cfg Config, corp *corpus.Corpus, users []targets.User, log *slog.Logger) []turn {
	turns := []turn{{"start", func(ctx context.Context, s *stand) bool {
		ok := startStand(ctx, s, corp, users, log)
		s.diagnoseFailure(ctx, cfg)
		return s.pause() && ok
	}}}
	if cfg.needsMail() {
		turns = append(turns, turn{SMTPIngest, alone(cfg, func(ctx context.Context, s *stand) bool {
			return ingestTurn(ctx, cfg, s, log)
		})})
		if cfg.wants(Storage) {
			turns = append(turns, turn{Storage, alone(cfg, func(ctx context.Context, s *stand) bool {
				return storageTurn(ctx, s, log)
			})})
		}
		imapUsers, pop3Users := cfg.userSplit()
		if cfg.wants(IMAPMixed) {
			closed := workload.IMAPConfig{Sessions: cfg.IMAPSessions, Duration: cfg.IMAPDuration, Seed: cfg.Seed}
			turns = append(turns, turn{IMAPMixed, alone(cfg, func(ctx context.Context, s *stand) bool {
				var err error
				profileWorkload(ctx, cfg, s.t, &s.tr, IMAPMixed, log, func() {
					s.tr.IMAP, err = workload.IMAP(ctx, withUsers(s.env, imapUsers), closed)
				})
				if err != nil {
					s.tr.Errors = append(s.tr.Errors, err.Error())
				}
				return true
			})})
			if cfg.IMAPRate > 0 {
				paced := closed
				paced.Seed, paced.Rate = cfg.Seed+1, cfg.IMAPRate
				turns = append(turns, turn{IMAPMixed + " (paced)", alone(cfg, func(ctx context.Context, s *stand) bool {
					var err error
					if s.tr.IMAPPaced, err = workload.IMAP(ctx, withUsers(s.env, imapUsers), paced); err != nil {
						s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("%s at %g operations/s: %v", IMAPMixed, cfg.IMAPRate, err))
					}
					return true
				})})
			}
		}
		if cfg.wants(POP3Drain) {
			pc := workload.POP3Config{Clients: cfg.POP3Clients, Duration: cfg.POP3Duration}
			turns = append(turns, turn{POP3Drain, alone(cfg, func(ctx context.Context, s *stand) bool {
				var err error
				if s.tr.POP3, err = workload.POP3(ctx, withUsers(s.env, pop3Users), pc); err != nil {
					s.tr.Errors = append(s.tr.Errors, err.Error())
				}
				return true
			})})
		}
	}
	if cfg.wants(SMTPIngestSizes) {
		for _, st := range cfg.SizeSeries {
			turns = append(turns, sizeTurn(cfg, st, log))
		}
	}
	if cfg.wants(Failover) {
		run := alone(cfg, func(ctx context.Context, s *stand) bool {
			failoverTurn(ctx, cfg, s)
			return true
		})
		turns = append(turns, turn{Failover, func(ctx context.Context, s *stand) bool {
			if !canFailOver(s.t) { // recorded as skipped without starting the target again
				failoverTurn(ctx, cfg, s)
				return true
			}
			return run(ctx, s)
		}})
	}
	return turns
}

// startStand starts a target, records its disk use before any mail and
// warms it up.
func startStand(ctx context.Context, s *stand, corp *corpus.Corpus, users []targets.User, log *slog.Logger) bool {
	t0 := time.Now()
	err := s.t.Start(ctx, users)
	s.tr.Info = s.t.Info()
	s.tr.StartSec = time.Since(t0).Seconds()
	if err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("start: %v", err))
		return false
	}
	if s.baseline, err = s.t.Disk(); err != nil {
		s.tr.Errors = append(s.tr.Errors, err.Error())
		return false
	}
	s.env = workload.Env{Target: s.tr.Info.Name, Endpoints: s.t.Endpoints(), Nodes: nodesOf(s.t), TLS: s.t.ClientTLS(),
		Users: users, Corpus: corp, Logger: log}
	if err := workload.WarmUp(ctx, s.env); err != nil {
		s.tr.Errors = append(s.tr.Errors, err.Error())
		return false
	}
	return true
}

// ingestTurn runs smtp-ingest and its check; every later mail workload
// needs the mail it delivers.
func ingestTurn(ctx context.Context, cfg Config, s *stand, log *slog.Logger) bool {
	var err error
	profileWorkload(ctx, cfg, s.t, &s.tr, SMTPIngest, log, func() {
		s.ingest, err = workload.Ingest(ctx, s.env, workload.IngestConfig{Clients: cfg.SMTPClients, Duration: cfg.IngestDuration, Pipelining: cfg.SMTPPipelining})
	})
	if err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("%s: %v", SMTPIngest, err))
		return false
	}
	s.tr.Ingest, s.tr.Preload = s.ingest, !cfg.wants(SMTPIngest)
	check, err := workload.Verify(ctx, s.env, s.ingest.AckedMessages(), workload.VerifyConfig{
		SentAt: time.Now(), Wait: cfg.VerifyWait, Via: s.ingest.AckedVia()})
	if err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("%s verification: %v", SMTPIngest, err))
		return false
	}
	s.ingest.Check = check
	return s.ingest.Acked > 0
}

// storageTurn measures what the delivered mail takes on disk.
func storageTurn(ctx context.Context, s *stand, log *slog.Logger) bool {
	var err error
	if s.tr.Storage, err = workload.Storage(ctx, s.t, s.baseline, s.ingest.Acked, s.ingest.AckedBytes); err != nil {
		s.tr.Errors = append(s.tr.Errors, err.Error())
		return false
	}
	log.Info("done", "target", s.tr.Info.Name, "workload", Storage, "bytes_per_byte", fmt.Sprintf("%.2f", s.tr.Storage.BytesPerByte),
		"compact", time.Duration(s.tr.Storage.CompactSec*float64(time.Second)).Round(time.Millisecond))
	s.env.Endpoints, s.env.Nodes = s.t.Endpoints(), nodesOf(s.t)
	// Compacting restarts a target that needs it (ours; Dovecot's
	// maildir needs none), which empties its cache of verified logins.
	// A target that pauses is warmed up again at its next turn; one
	// that runs throughout is warmed up now, as before the first
	// workload, so that the workloads after storage find it in its
	// steady state.
	if _, pauses := s.t.(Pausable); pauses {
		return true
	}
	if err := workload.WarmUp(ctx, s.env); err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("%s: warm-up after compaction: %v", Storage, err))
		return false
	}
	return true
}

// sizeTurn is one step of smtp-ingest-sizes: st.Messages messages of
// st.Bytes each (a corpus of its own, with tags no other corpus uses, the
// same for every target), a CPU profile of its own, and the same
// correctness check as smtp-ingest: every acknowledged message fetched
// back and compared by SHA-256. The mailboxes may hold mail already: the
// check waits for that many more messages than each INBOX held before.
func sizeTurn(cfg Config, st SizeStep, log *slog.Logger) turn {
	label := SizeLabel(st.Bytes)
	name := SMTPIngestSizes + "-" + label
	var corp *corpus.Corpus
	return turn{name, alone(cfg, func(ctx context.Context, s *stand) bool {
		err := func() error {
			if corp == nil {
				c, err := corpus.Generate(corpus.Config{Seed: cfg.Seed, Messages: st.Messages, Users: len(s.env.Users), Domain: Domain,
					Size: st.Bytes, TagPrefix: "size" + label + "-"})
				if err != nil {
					return err
				}
				corp = c
			}
			senv := s.env
			senv.Corpus = corp
			senv.Endpoints, senv.Nodes = s.t.Endpoints(), nodesOf(s.t)
			before, err := workload.InboxCounts(ctx, senv)
			if err != nil {
				return err
			}
			var res *workload.IngestResult
			send := func() {
				res, err = workload.Ingest(ctx, senv, workload.IngestConfig{Clients: cfg.SMTPClients, Duration: cfg.SizeDuration, Workload: name, Pipelining: cfg.SMTPPipelining})
			}
			if cfg.SizeProfiles {
				profileWorkload(ctx, cfg, s.t, &s.tr, name, log, send)
			} else {
				send()
			}
			if err != nil {
				return err
			}
			check, err := workload.Verify(ctx, senv, res.AckedMessages(), workload.VerifyConfig{Workload: name,
				SentAt: time.Now(), Wait: cfg.VerifyWait, Via: res.AckedVia(), Before: before})
			if err != nil {
				return fmt.Errorf("verification: %w", err)
			}
			res.Check = check
			s.tr.Sizes = append(s.tr.Sizes, report.SizeRun{Bytes: st.Bytes, Ingest: res})
			return nil
		}()
		if err != nil {
			s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("%s: %s: %v", SMTPIngestSizes, label, err))
			return false
		}
		return true
	})}
}

// failoverTurn kills a shard's leader under load on a target of several
// nodes, and records why it is skipped on a target of one.
func failoverTurn(ctx context.Context, cfg Config, s *stand) {
	env := s.env
	env.Endpoints, env.Nodes = s.t.Endpoints(), nodesOf(s.t)
	if !canFailOver(s.t) {
		s.tr.Skipped = append(s.tr.Skipped, report.SkippedWorkload{Workload: Failover,
			Reason: fmt.Sprintf("%s is one server; failover kills the leader of a shard, which needs a target of several nodes (cluster3)", s.tr.Info.Name)})
		return
	}
	var err error
	s.tr.Failover, err = workload.Failover(ctx, env, s.t.(workload.Cluster), workload.FailoverConfig{
		Senders: cfg.FailoverSenders, Before: cfg.FailoverBefore, After: cfg.FailoverAfter})
	if err != nil {
		s.tr.Errors = append(s.tr.Errors, fmt.Sprintf("%s: %v", Failover, err))
	}
}

// canFailOver reports whether failover can run on t: a target of several
// nodes whose leaders can be found and killed.
func canFailOver(t targets.Target) bool {
	_, ok := t.(workload.Cluster)
	return ok && len(nodesOf(t)) >= 2
}
