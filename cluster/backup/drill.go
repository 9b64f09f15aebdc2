package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Drill proves the newest complete backup restores: it checks every
// target's copy like Verify, restores the backup into a temporary data
// directory, runs Config.DrillCheck on it if set, and deletes it. The
// result, with the time it took (RTO) and the backup's age when the drill
// started (RPO), is recorded beside the manifest, exposed as metrics and
// returned by Status. A failed drill is logged as an error.
func (r *Runner) Drill(ctx context.Context, identity *Identity) (*Verification, error) {
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	start := r.clock.Now()
	v := &Verification{Kind: KindDrill, Time: start.UTC()}
	b, err := r.drill(ctx, identity, v)
	v.RestoreSeconds = r.clock.Now().Sub(start).Seconds()
	if b != nil {
		v.BackupAgeSeconds = start.Sub(b.Created).Seconds()
	}
	v.OK = err == nil
	if err != nil {
		err = fmt.Errorf("restore drill: %w", err)
		v.Error = err.Error()
		r.log.Error("restore drill failed", "err", err)
	} else {
		r.log.Info("restore drill passed", "id", b.ID, "rto", time.Duration(v.RestoreSeconds*float64(time.Second)).Round(time.Millisecond),
			"rpo", time.Duration(v.BackupAgeSeconds*float64(time.Second)).Round(time.Second))
	}
	if b != nil {
		r.record(ctx, b, v)
	}
	r.observeDrill(v)
	return v, err
}

func (r *Runner) drill(ctx context.Context, identity *Identity, v *Verification) (*BackupInfo, error) {
	if identity == nil {
		return nil, errors.New("no backup identity available to decrypt with")
	}
	b, _, err := r.pick(ctx, "", false)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(r.cfg.TempDir, "drill-")
	if err != nil {
		return b, err
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "data")
	nodeID := b.Manifest.NodeID
	cr, err := r.check(ctx, b, checkOptions{identity: identity, allCopies: true, installDir: dir, nodeID: nodeID, label: "drill"})
	if err != nil {
		return b, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	v.Targets = cr.regions
	if err := cr.err(); err != nil {
		return b, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	if r.cfg.DrillCheck != nil {
		if err := r.cfg.DrillCheck(ctx, dir, nodeID); err != nil {
			return b, fmt.Errorf("backup %s: restored directory: %w", b.ID, err)
		}
	}
	return b, nil
}

// Status is the state of backups as this runner knows it, for health
// details and the admin API.
type Status struct {
	// LastBackupError is the error of the last backup run ("" if it
	// succeeded or none ran).
	LastBackupError string
	// LastSuccess is the creation time of the newest complete backup seen.
	LastSuccess time.Time
	// LastDrill is the newest drill result seen (run here or recorded on
	// the targets by another process).
	LastDrill *Verification
}

// Status returns what the runner knows without contacting the targets.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{LastDrill: r.lastDrill}
	if r.lastErr != nil {
		s.LastBackupError = r.lastErr.Error()
	}
	r.metrics.mu.Lock()
	s.LastSuccess = r.metrics.lastSuccessAt
	r.metrics.mu.Unlock()
	return s
}
