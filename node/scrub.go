package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/cluster/mailstore"
)

// ScrubConfig is the scrub of the node's replicas: every piece of every
// stored message read and opened under its user's key, so that a disk
// that hands back other bytes is found, and the damage mended from
// another replica, before a client meets it.
type ScrubConfig struct {
	// Every is the time between the starts of two scrubs: 0 means weekly,
	// a negative value turns scrubs off.
	Every time.Duration `toml:"every"`
	// Rate bounds the sealed bytes a scrub reads a second (default 16
	// MiB), so it takes a small share of the disk.
	Rate ByteSize `toml:"rate"`
}

// Scrub defaults.
const (
	DefaultScrubEvery = 7 * 24 * time.Hour
	DefaultScrubRate  = 16 << 20
	// scrubStateName is the file in the data directory that records when
	// the last scrub ended, so a restart does not start one over.
	scrubStateName = "scrub.json"
	// scrubCheck is how often the node looks whether a scrub is due;
	// scrubFirst is when it first looks after it starts, so a start's own
	// work (replicas catching up, sessions logging in again) comes first.
	scrubCheck = time.Hour
	scrubFirst = 10 * time.Minute
	// scrubRetry is how soon a scrub that could not read every replica
	// (one closed or being rebuilt) runs again, if its period is longer.
	scrubRetry = 6 * time.Hour
)

func (s ScrubConfig) validate() []error {
	if s.Rate < 0 {
		return []error{fmt.Errorf("scrub.rate %d: want 0 (the default) or more", s.Rate)}
	}
	return nil
}

func (s ScrubConfig) every() time.Duration { return durationOr(s.Every, DefaultScrubEvery) }

func (s ScrubConfig) rate() int64 {
	if s.Rate == 0 {
		return DefaultScrubRate
	}
	return int64(s.Rate)
}

// scrubState is what scrub.json records.
type scrubState struct {
	Ended time.Time `json:"ended"`
	// Incomplete says a replica's scrub stopped with an error (its
	// outcome has it), so the next scrub comes after scrubRetry.
	Incomplete bool                    `json:"incomplete,omitempty"`
	Shards     map[uint32]scrubOutcome `json:"shards"`
}

// due reports whether a scrub is due at now after the one st records
// (none: zero st), for a period of every.
func (st scrubState) due(now time.Time, every time.Duration) bool {
	if st.Ended.IsZero() {
		return true
	}
	if st.Incomplete {
		every = min(every, scrubRetry)
	}
	return now.Sub(st.Ended) >= every
}

// scrubOutcome is one replica's part of a scrub, for the record.
type scrubOutcome struct {
	mailstore.ScrubReport
	Err string `json:"error,omitempty"`
}

// scrubber runs the node's scrubs.
type scrubber struct {
	// scrub scrubs one replica (mailstore.Store.Scrub).
	scrub func(ctx context.Context, n uint32, pace func(context.Context, int) error) (mailstore.ScrubReport, error)
	// shards lists the mail shards this node keeps a replica of.
	shards func() []uint32
	path   string
	every  time.Duration
	rate   int64
	now    func() time.Time
	log    *slog.Logger
	// done, if set, is told of every scrub that ends (metrics).
	done func(scrubState)
	// trigger starts a scrub at once, due or not (`mailnode scrub
	// start`); running is set while one runs.
	trigger chan struct{}
	running atomic.Bool
}

// errScrubRunning refuses a scrub asked for while one runs.
var errScrubRunning = errors.New("a scrub is running")

// start asks run for a scrub now.
func (s *scrubber) start() error {
	if s.running.Load() {
		return errScrubRunning
	}
	select {
	case s.trigger <- struct{}{}:
		return nil
	default:
		return errScrubRunning // asked already, about to start
	}
}

// run looks whether a scrub is due after first, then every check, until
// stop ends, and runs it: when the last one ended every or more ago, or
// none did, or when start asked for one. A scrub in which a replica
// failed runs again scrubRetry after it, if that is sooner.
func (s *scrubber) run(stop context.Context, first, check time.Duration) {
	wait := first
	for {
		t := time.NewTimer(wait)
		asked := false
		select {
		case <-stop.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.trigger:
			t.Stop()
			asked = true
		}
		wait = check
		if !asked && !s.last().due(s.now(), s.every) {
			continue
		}
		s.running.Store(true)
		st := s.scrubAll(stop)
		s.running.Store(false)
		if stop.Err() != nil {
			return
		}
		s.record(st)
	}
}

// last reads the last scrub's record (zero: none).
func (s *scrubber) last() scrubState {
	var st scrubState
	if b, err := os.ReadFile(s.path); err == nil && json.Unmarshal(b, &st) != nil {
		st = scrubState{}
	}
	return st
}

// record writes st to the state file, through a new file renamed over
// the old, and tells done.
func (s *scrubber) record(st scrubState) {
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := s.path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		s.log.Warn("record the scrub's end", "err", err)
	} else if err := os.Rename(tmp, s.path); err != nil {
		s.log.Warn("record the scrub's end", "err", err)
	}
	if s.done != nil {
		s.done(st)
	}
}

// scrubAll scrubs every mail replica of the node, one after another, at
// the rate for all of them together.
func (s *scrubber) scrubAll(ctx context.Context) scrubState {
	st := scrubState{Shards: map[uint32]scrubOutcome{}}
	started := s.now()
	pace := s.pace(started)
	s.log.Info("scrub started", "rate_bytes", s.rate)
	for _, n := range s.shards() {
		rep, err := s.scrub(ctx, n, pace)
		out := scrubOutcome{ScrubReport: rep}
		if err != nil {
			if ctx.Err() != nil {
				return st
			}
			st.Incomplete = true
			out.Err = err.Error()
			s.log.Warn("scrub of a replica stopped; the next scrub comes sooner", "shard", n, "err", err,
				"retry_after", min(s.every, scrubRetry))
		}
		st.Shards[n] = out
		lvl := slog.LevelInfo
		if rep.Damaged > 0 {
			lvl = slog.LevelWarn
		}
		s.log.Log(ctx, lvl, "replica scrubbed", "shard", n, "users", rep.Users, "messages", rep.Blobs,
			"records", rep.Records, "queued", rep.Queued, "bytes", rep.Bytes, "damaged", rep.Damaged, "unreadable", rep.Unreadable)
	}
	st.Ended = s.now()
	s.log.Info("scrub ended", "took", st.Ended.Sub(started).Round(time.Second), "incomplete", st.Incomplete)
	return st
}

// pace holds the scrub to its rate: before a message of n bytes it
// waits until the bytes read since start fit rate.
func (s *scrubber) pace(start time.Time) func(ctx context.Context, n int) error {
	var read int64
	return func(ctx context.Context, n int) error {
		read += int64(n)
		due := start.Add(time.Duration(float64(read) / float64(s.rate) * float64(time.Second)))
		wait := due.Sub(s.now())
		if wait <= 0 {
			return ctx.Err()
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
}

// startScrubs runs the scrubs in the background upkeep (stop ends them).
func (n *Node) startScrubs(stop context.Context) {
	sc := n.cfg.Scrub
	if sc.Every < 0 {
		n.log.Info("scrubs are off (scrub.every is negative)", "component", "node")
		return
	}
	s := &scrubber{
		scrub:   n.store.Scrub,
		shards:  n.localMailShards,
		path:    filepath.Join(n.cfg.DataDir, scrubStateName),
		every:   sc.every(),
		rate:    sc.rate(),
		now:     time.Now,
		log:     n.log.With("component", "scrub"),
		done:    n.metrics.scrubEnded,
		trigger: make(chan struct{}, 1),
	}
	n.scrubs.Store(s)
	if last := s.last(); !last.Ended.IsZero() {
		n.metrics.scrubEnded(last)
	}
	n.maintenance.Add(1)
	go func() {
		defer n.maintenance.Done()
		s.run(stop, scrubFirst, scrubCheck)
	}()
}

// localMailShards lists the mail shards this node keeps a replica of.
func (n *Node) localMailShards() []uint32 {
	var out []uint32
	for _, s := range n.cluster.Shards() {
		if s.ID() != 0 {
			out = append(out, s.ID())
		}
	}
	return out
}
