package backup

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Schedule configures automatic backups and drills.
type Schedule struct {
	// BackupEvery is the time between backups; 0 means daily. At least a
	// minute.
	BackupEvery time.Duration
	// DrillEvery is the time between restore drills; 0 means weekly, a
	// negative value disables drills.
	DrillEvery time.Duration
	// RetryAfter is the wait after a failed backup; 0 means the smaller
	// of BackupEvery and 15 minutes. A failed drill is retried after the
	// larger of RetryAfter and an hour (at most DrillEvery).
	RetryAfter time.Duration
	// Identity returns the identity drills decrypt with. A nil func, or
	// a nil identity without an error, means no identity is available
	// here and the drill is skipped (drills can run elsewhere: their
	// records on the targets still show in Status and metrics). An error
	// fails the drill.
	Identity func() (*Identity, error)
	// Active reports whether this process takes the cluster's scheduled
	// backups and drills now (in a cluster, one node at a time does);
	// nil means always. An inactive scheduler follows the backups others
	// take, so it picks up the schedule where they left it.
	Active func() bool
}

// inactiveCheck is how often an inactive scheduler looks again.
const inactiveCheck = time.Minute

// Validate checks the schedule.
func (s Schedule) Validate() error {
	if s.BackupEvery != 0 && s.BackupEvery < time.Minute {
		return fmt.Errorf("backup interval %s is shorter than a minute", s.BackupEvery)
	}
	if s.DrillEvery > 0 && s.DrillEvery < time.Minute {
		return fmt.Errorf("drill interval %s is shorter than a minute", s.DrillEvery)
	}
	if s.RetryAfter < 0 {
		return fmt.Errorf("negative retry interval %s", s.RetryAfter)
	}
	return nil
}

func (s Schedule) withDefaults() Schedule {
	if s.BackupEvery == 0 {
		s.BackupEvery = 24 * time.Hour
	}
	if s.DrillEvery == 0 {
		s.DrillEvery = 7 * 24 * time.Hour
	}
	if s.RetryAfter == 0 {
		s.RetryAfter = min(s.BackupEvery, 15*time.Minute)
	}
	return s
}

// Scheduler runs backups (with retention) and drills on a Schedule, on
// the Runner's clock. The next backup is due one interval after the
// newest complete backup on the targets, so restarts neither skip nor
// repeat one.
type Scheduler struct {
	r      *Runner
	s      Schedule
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// StartScheduler starts running s in the background until Close.
func (r *Runner) StartScheduler(s Schedule) (*Scheduler, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("backup schedule: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc := &Scheduler{r: r, s: s.withDefaults(), cancel: cancel, done: make(chan struct{})}
	go sc.run(ctx)
	return sc, nil
}

// Close stops the scheduler, cancelling a run in progress, and waits for
// it. It is idempotent.
func (sc *Scheduler) Close() error {
	sc.once.Do(func() {
		sc.cancel()
		<-sc.done
	})
	return nil
}

func (sc *Scheduler) run(ctx context.Context) {
	defer close(sc.done)
	r, s := sc.r, sc.s
	drills := s.DrillEvery > 0 && s.Identity != nil
	if s.DrillEvery > 0 && s.Identity == nil {
		r.log.Info("restore drills do not run in this process: no backup identity is configured for them")
	}
	now := r.clock.Now()
	nextBackup, nextDrill := now, now
	haveBackup := false
	catchUp := func() {
		if cat, err := r.List(ctx); err != nil {
			r.log.Warn("backup schedule: cannot read the targets; backing up now", "err", err)
		} else {
			if l := cat.Latest(); l != nil {
				haveBackup = true
				nextBackup = l.Created.Add(s.BackupEvery)
			}
			if d := cat.LastDrill; d != nil {
				nextDrill = d.Time.Add(s.DrillEvery)
			}
		}
	}
	catchUp()
	for {
		now = r.clock.Now()
		if s.Active != nil && !s.Active() {
			select {
			case <-ctx.Done():
				return
			case <-r.clock.After(inactiveCheck):
			}
			if s.Active() {
				catchUp() // another node kept the schedule meanwhile
			}
			continue
		}
		due := nextBackup
		if drills && haveBackup && nextDrill.Before(due) {
			due = nextDrill
		}
		if wait := due.Sub(now); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.clock.After(wait):
			}
			continue
		}
		if !now.Before(nextBackup) {
			if _, err := r.Backup(ctx); err != nil {
				nextBackup = now.Add(s.RetryAfter)
			} else {
				haveBackup = true
				nextBackup = now.Add(s.BackupEvery)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if drills && haveBackup && !now.Before(nextDrill) {
			nextDrill = now.Add(s.DrillEvery)
			if err := sc.drill(ctx); err != nil {
				nextDrill = now.Add(min(s.DrillEvery, max(s.RetryAfter, time.Hour)))
			}
		}
	}
}

func (sc *Scheduler) drill(ctx context.Context) error {
	r := sc.r
	id, err := sc.s.Identity()
	if err == nil && id == nil {
		r.log.Info("restore drill skipped: no backup identity is available to this process")
		return nil
	}
	if err != nil {
		now := r.clock.Now().UTC()
		err = fmt.Errorf("restore drill: %w", err)
		r.log.Error("restore drill failed", "err", err)
		r.observeDrill(&Verification{Kind: KindDrill, Time: now, Error: err.Error()})
		return err
	}
	_, err = r.Drill(ctx, id)
	return err
}
