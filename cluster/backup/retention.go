package backup

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Retention says which complete backups to keep: every backup younger
// than Within, and the newest of each of the last Daily days, Weekly ISO
// weeks and Monthly months that have backups (UTC). The newest complete
// backup is always kept. Zero fields take the defaults (24h, 7 daily, 4
// weekly, 12 monthly); a negative field keeps none of that class.
type Retention struct {
	// Within keeps every backup of the recent past, so a schedule more
	// often than daily keeps its recovery points for a while.
	Within  time.Duration `toml:"within"`
	Daily   int           `toml:"daily"`
	Weekly  int           `toml:"weekly"`
	Monthly int           `toml:"monthly"`
}

// DefaultRetention returns what zero fields mean.
func DefaultRetention() Retention {
	return Retention{Within: 24 * time.Hour, Daily: 7, Weekly: 4, Monthly: 12}
}

func (p Retention) withDefaults() Retention {
	def := DefaultRetention()
	if p.Within == 0 {
		p.Within = def.Within
	}
	if p.Daily == 0 {
		p.Daily = def.Daily
	}
	if p.Weekly == 0 {
		p.Weekly = def.Weekly
	}
	if p.Monthly == 0 {
		p.Monthly = def.Monthly
	}
	return p
}

// partialGrace is how long a partial backup with no complete backup after
// it is left alone (it may still be uploading elsewhere).
const partialGrace = 48 * time.Hour

// keep returns the ids of the complete backups (newest first) to keep at
// time now.
func (p Retention) keep(complete []*BackupInfo, now time.Time) map[string]bool {
	keep := map[string]bool{}
	if len(complete) == 0 {
		return keep
	}
	keep[complete[0].ID] = true
	for _, b := range complete {
		if p.Within > 0 && now.Sub(b.Created) < p.Within {
			keep[b.ID] = true
		}
	}
	classes := []struct {
		n   int
		key func(time.Time) string
	}{
		{p.Daily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{p.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{p.Monthly, func(t time.Time) string { return t.Format("2006-01") }},
	}
	for _, c := range classes {
		seen := map[string]bool{}
		for _, b := range complete {
			k := c.key(b.Created.UTC())
			if seen[k] {
				continue
			}
			if len(seen) >= c.n {
				break
			}
			seen[k] = true
			keep[b.ID] = true
		}
	}
	return keep
}

// Prune applies retention: it deletes complete backups the policy does not
// keep and partial backups older than the newest complete one (or older
// than two days), from every target. It does nothing while a target is
// unreachable, since it could not tell what is complete.
func (r *Runner) Prune(ctx context.Context) ([]string, error) {
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	cat, err := r.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	return r.prune(ctx, cat)
}

func (r *Runner) prune(ctx context.Context, cat *Catalog) ([]string, error) {
	if len(cat.Unreachable) > 0 {
		return nil, fmt.Errorf("prune: skipped while target %s is unreachable: %w", cat.Unreachable[0].Region, cat.Unreachable[0].Err)
	}
	var complete []*BackupInfo
	for _, b := range cat.Backups {
		if b.Complete {
			complete = append(complete, b)
		}
	}
	now := r.clock.Now()
	keep := r.cfg.Retention.keep(complete, now)
	newest := ""
	if len(complete) > 0 {
		newest = complete[0].ID
	}
	var pruned []string
	var errs []error
	for _, b := range cat.Backups {
		drop := false
		switch {
		case b.Complete:
			drop = !keep[b.ID]
		default:
			drop = b.ID < newest || now.Sub(idTime(b.ID)) > partialGrace
		}
		if !drop {
			continue
		}
		var failed bool
		for i, c := range b.Copies {
			if c.Objects == 0 {
				continue
			}
			if err := deleteFrom(ctx, r.cfg.Targets[i], b.ID, c.keys); err != nil {
				errs = append(errs, fmt.Errorf("delete %s from %s: %w", b.ID, c.Region, err))
				failed = true
			}
		}
		if !failed {
			pruned = append(pruned, b.ID)
			r.metrics.pruned.Inc()
			r.log.Info("backup deleted by retention", "id", b.ID, "complete", b.Complete)
		}
	}
	return pruned, errors.Join(errs...)
}
