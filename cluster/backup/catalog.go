package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// TargetCopy is what one target holds of a backup.
type TargetCopy struct {
	Region   string
	Manifest bool  // the manifest is there: the copy is complete
	Objects  int   // objects stored, manifest included
	Bytes    int64 // their total size
	keys     []string
}

// BackupInfo is one backup as found on the targets.
type BackupInfo struct {
	ID      string
	Created time.Time
	// Complete means every configured target holds the manifest (and
	// therefore, by upload order, every object).
	Complete bool
	// Manifest is nil when no target holds a readable manifest.
	Manifest *Manifest
	// Copies has one entry per configured target, in configuration order.
	Copies []TargetCopy
	// Verification is the newest verify or drill record, if any.
	Verification *Verification
	// Problem explains why a manifest could not be read, if so.
	Problem string

	rawManifest []byte
	drill       *Verification // the newest drill record
}

// Regions returns the regions holding a complete copy.
func (b *BackupInfo) Regions() []string {
	var out []string
	for _, c := range b.Copies {
		if c.Manifest {
			out = append(out, c.Region)
		}
	}
	return out
}

// Partial returns the regions holding objects of the backup but no
// manifest.
func (b *BackupInfo) Partial() []string {
	var out []string
	for _, c := range b.Copies {
		if !c.Manifest && c.Objects > 0 {
			out = append(out, c.Region)
		}
	}
	return out
}

// TargetError is a target that could not be listed.
type TargetError struct {
	Region string
	Err    error
}

// Catalog is what the targets hold.
type Catalog struct {
	// Backups are newest first, complete or not.
	Backups []*BackupInfo
	// Unreachable lists targets whose listing failed; no backup counts
	// as complete while one is.
	Unreachable []TargetError
	// LastDrill is the newest drill record found.
	LastDrill *Verification
}

// Latest returns the newest complete backup, or nil.
func (c *Catalog) Latest() *BackupInfo {
	for _, b := range c.Backups {
		if b.Complete {
			return b
		}
	}
	return nil
}

// Find returns the backup with the given id, or nil.
func (c *Catalog) Find(id string) *BackupInfo {
	for _, b := range c.Backups {
		if b.ID == id {
			return b
		}
	}
	return nil
}

// List reads the catalog of every target. It does not wait for a running
// backup. It also refreshes the metrics of the newest backup and drill.
func (r *Runner) List(ctx context.Context) (*Catalog, error) {
	return r.list(ctx)
}

func (r *Runner) list(ctx context.Context) (*Catalog, error) {
	targets := r.cfg.Targets
	listings := make([][]ObjectInfo, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			listings[i], errs[i] = t.List(ctx, "")
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	cat := &Catalog{}
	byID := map[string]*BackupInfo{}
	for i, t := range targets {
		if errs[i] != nil {
			cat.Unreachable = append(cat.Unreachable, TargetError{Region: t.Region(), Err: errs[i]})
			continue
		}
		for _, o := range listings[i] {
			id, name, ok := splitKey(o.Key)
			if !ok {
				continue
			}
			b := byID[id]
			if b == nil {
				b = &BackupInfo{ID: id, Created: idTime(id), Copies: make([]TargetCopy, len(targets))}
				for j, t := range targets {
					b.Copies[j].Region = t.Region()
				}
				byID[id] = b
				cat.Backups = append(cat.Backups, b)
			}
			c := &b.Copies[i]
			c.Objects++
			c.Bytes += o.Size
			c.keys = append(c.keys, o.Key)
			if name == manifestName {
				c.Manifest = true
			}
		}
	}
	if len(cat.Unreachable) == len(targets) {
		return nil, fmt.Errorf("list backups: no target reachable: %w", errors.Join(errs...))
	}
	slices.SortFunc(cat.Backups, func(a, b *BackupInfo) int { return strings.Compare(b.ID, a.ID) })
	// Ids sort by creation time to the millisecond, so newest first.
	for _, b := range cat.Backups {
		r.readRecords(ctx, b)
		b.Complete = len(cat.Unreachable) == 0 && b.Manifest != nil && len(b.Regions()) == len(targets)
		if v := b.drill; v != nil && (cat.LastDrill == nil || v.Time.After(cat.LastDrill.Time)) {
			cat.LastDrill = v
		}
	}
	if l := cat.Latest(); l != nil {
		r.metrics.observeBackup(l.Manifest)
	}
	if cat.LastDrill != nil {
		r.observeDrill(cat.LastDrill)
	}
	return cat, ctx.Err()
}

// readRecords reads a backup's manifest (from the first target that has
// a readable one) and its newest verification record.
func (r *Runner) readRecords(ctx context.Context, b *BackupInfo) {
	var problems []string
	for i, c := range b.Copies {
		t := r.cfg.Targets[i]
		if c.Manifest && b.Manifest == nil {
			m, raw, err := readManifest(ctx, t, b.ID, r.cfg.ManifestKey)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", t.Region(), err))
			} else {
				b.Manifest, b.rawManifest = m, raw
				b.Created = m.Created
			}
		}
		for _, name := range []string{verifyName, drillName} {
			if !slices.Contains(c.keys, objectKey(b.ID, name)) {
				continue
			}
			rc, err := t.Get(ctx, objectKey(b.ID, name))
			if err != nil {
				continue
			}
			v, err := parseVerification(rc)
			rc.Close()
			if err != nil {
				continue
			}
			if b.Verification == nil || v.Time.After(b.Verification.Time) {
				b.Verification = v
			}
			if v.Kind == KindDrill && (b.drill == nil || v.Time.After(b.drill.Time)) {
				b.drill = v
			}
		}
	}
	if b.Manifest == nil && len(problems) > 0 {
		b.Problem = strings.Join(problems, "; ")
	}
}

// readManifest reads and checks a backup's manifest on one target; with
// a key, only an authentic manifest is accepted.
func readManifest(ctx context.Context, t Target, id string, key *[32]byte) (*Manifest, []byte, error) {
	rc, err := t.Get(ctx, objectKey(id, manifestName))
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	m, raw, err := parseManifest(rc, id)
	if err != nil || key == nil {
		return m, raw, err
	}
	if err := m.checkMAC(*key); err != nil {
		return nil, nil, err
	}
	return m, raw, nil
}

// observeDrill keeps the newest drill record for Status and metrics.
func (r *Runner) observeDrill(v *Verification) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastDrill != nil && !v.Time.After(r.lastDrill.Time) {
		return
	}
	r.lastDrill = v
	r.metrics.observeDrill(v)
}
