package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// fakeScrubs is a scrubber's view of the store: it counts the scrubs of
// each shard and fails shard 2 while fail is set.
type fakeScrubs struct {
	mu    sync.Mutex
	calls map[uint32]int
	fail  atomic.Bool
}

func (f *fakeScrubs) scrub(_ context.Context, n uint32, _ func(context.Context, int) error) (mailstore.ScrubReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[n]++
	if n == 2 && f.fail.Load() {
		return mailstore.ScrubReport{}, errors.New("replica closed")
	}
	return mailstore.ScrubReport{Users: 1, Blobs: int(n), Damaged: int(n) - 1}, nil
}

func (f *fakeScrubs) count(n uint32) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[n]
}

// TestScrubberRunsWhenDue: a node scrubs each replica when no scrub is
// recorded or the last one ended a period ago, records the end in its
// data directory (so a restart does not scrub again), and scrubs again
// at the next check when a replica failed.
func TestScrubberRunsWhenDue(t *testing.T) {
	path := filepath.Join(t.TempDir(), scrubStateName)
	fake := &fakeScrubs{calls: map[uint32]int{}}
	var nowCalls atomic.Int64
	var offset atomic.Int64 // added to the clock
	var ended atomic.Pointer[scrubState]
	newScrubber := func() *scrubber {
		return &scrubber{
			scrub:  fake.scrub,
			shards: func() []uint32 { return []uint32{1, 2} },
			path:   path,
			every:  24 * time.Hour,
			rate:   1 << 30,
			now: func() time.Time {
				nowCalls.Add(1)
				return time.Now().Add(time.Duration(offset.Load()))
			},
			log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
			done:    func(st scrubState) { ended.Store(&st) },
			trigger: make(chan struct{}, 1),
		}
	}
	// checks runs s until it has looked at the clock at least n more
	// times, which each check does.
	checks := func(s *scrubber, n int64) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		from := nowCalls.Load()
		go func() { defer close(done); s.run(ctx, time.Millisecond, time.Millisecond) }()
		waitFor(t, "the scrubber's checks", func() bool { return nowCalls.Load()-from >= n })
		cancel()
		<-done
	}

	// Shard 2 fails: the scrub is recorded incomplete, and comes again
	// after scrubRetry, not a period.
	fake.fail.Store(true)
	checks(newScrubber(), 20)
	if fake.count(1) != 1 || fake.count(2) != 1 {
		t.Fatalf("scrubs with a failing replica: %v", fake.calls)
	}
	st := ended.Load()
	if st == nil || !st.Incomplete || st.Shards[2].Err == "" || st.Shards[1].Err != "" || st.Shards[1].Blobs != 1 {
		t.Fatalf("incomplete scrub recorded as %+v", st)
	}
	fake.fail.Store(false)
	offset.Store(int64(scrubRetry))
	checks(newScrubber(), 20)
	if fake.count(1) != 2 {
		t.Fatalf("%d scrubs of shard 1 after the retry time, want 2", fake.count(1))
	}

	// Complete: recorded, then no scrub while it is recent, even from a
	// new scrubber (a restarted node), until a period has passed.
	st = ended.Load()
	if st.Incomplete || st.Ended.IsZero() || st.Shards[2].Blobs != 2 || st.Shards[2].Damaged != 1 || st.Shards[2].Err != "" {
		t.Fatalf("scrub recorded as %+v", st)
	}
	if last := newScrubber().last(); !last.Ended.Equal(st.Ended) || last.Incomplete {
		t.Fatalf("recorded %+v, read back %+v", st, last)
	}
	offset.Store(int64(scrubRetry + scrubRetry))
	checks(newScrubber(), 20)
	if fake.count(1) != 2 {
		t.Fatalf("%d scrubs of shard 1 within a period, want 2", fake.count(1))
	}
	offset.Store(int64(scrubRetry + 25*time.Hour))
	checks(newScrubber(), 20)
	if fake.count(1) != 3 {
		t.Fatalf("%d scrubs of shard 1 after a period, want 3", fake.count(1))
	}

	// A scrub asked for runs at once, due or not.
	s := newScrubber()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.run(ctx, time.Hour, time.Hour)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the scrub asked for", func() bool { return fake.count(1) == 4 })
}

// TestScrubPace: a scrub ahead of its rate waits (and gives up when its
// context ends meanwhile); one behind it goes on.
func TestScrubPace(t *testing.T) {
	start := time.Now()
	s := &scrubber{rate: 1 << 20, now: func() time.Time { return start }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.pace(start)(ctx, 1<<20); !errors.Is(err, context.Canceled) {
		t.Fatalf("a MiB at once at a MiB a second: %v, want to wait", err)
	}
	s.now = func() time.Time { return start.Add(2 * time.Second) }
	if err := s.pace(start)(context.Background(), 1<<20); err != nil {
		t.Fatalf("a MiB after two seconds: %v", err)
	}
}

// TestScrubCommand: `mailnode scrub start` scrubs a running node's
// replicas at once, and `scrub status` shows what the scrub read; a
// second start while one runs, or with scrubs off, is refused.
func TestScrubCommand(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "sam@example.test", "sam-password-1"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		msg := fmt.Sprintf("Subject: note %d\r\n\r\nwords %d\r\n", i, i)
		if err := n.Store().Deliver(ctx, schema.Delivery{Recipients: []string{"sam@example.test"}, Message: []byte(msg)}); err != nil {
			t.Fatal(err)
		}
	}
	dir := cfg.DataDir
	if out := mustCLI(t, "", "scrub", "status", "--data", dir); !strings.Contains(out, "no scrub has ended yet") {
		t.Fatalf("status before a scrub: %q", out)
	}
	mustCLI(t, "", "scrub", "start", "--data", dir)
	var st scrubStatus
	waitFor(t, "a scrub that ends", func() bool {
		if err := json.Unmarshal([]byte(mustCLI(t, "", "scrub", "status", "--json", "--data", dir)), &st); err != nil {
			t.Fatal(err)
		}
		return st.Last != nil && !st.Running
	})
	messages, users := 0, 0
	for _, o := range st.Last.Shards {
		messages += o.Blobs
		users += o.Users
		if o.Damaged != 0 || o.Err != "" {
			t.Errorf("scrub of an undamaged replica: %+v", o)
		}
	}
	if messages != 3 || users != 1 || len(st.Last.Shards) != cfg.MailShards {
		t.Fatalf("scrub read %d messages of %d users in %d replicas: %+v", messages, users, len(st.Last.Shards), st.Last)
	}
	if out := mustCLI(t, "", "scrub", "status", "--data", dir); !strings.Contains(out, "SHARD") || !strings.Contains(out, "last ended") {
		t.Fatalf("status after a scrub: %q", out)
	}

	cfg2 := testConfig(t)
	cfg2.Scrub.Every = -1
	startNode(t, cfg2)
	failCLI(t, ExitError, "scrubs are off", "", "scrub", "start", "--data", cfg2.DataDir)
}

// TestScrubStatusWhileStarting: before a node has started its scrubber
// (its stores still opening), status says so instead of "off", and a
// start is refused as for now, not as for good.
func TestScrubStatusWhileStarting(t *testing.T) {
	for _, tc := range []struct {
		every time.Duration
		want  string
		code  int
	}{
		{0, "still starting", http.StatusServiceUnavailable},
		{-1, "scrubs are off", http.StatusConflict},
	} {
		n := &Node{cfg: Config{Scrub: ScrubConfig{Every: tc.every}}}
		var out strings.Builder
		if err := writeScrubStatus(&out, n.scrubStatus()); err != nil || !strings.Contains(out.String(), tc.want) {
			t.Errorf("every %v: status %q, %v", tc.every, out.String(), err)
		}
		rec := httptest.NewRecorder()
		n.scrubAdmin(http.NotFoundHandler(), slog.New(slog.DiscardHandler)).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, pathScrub, nil))
		if rec.Code != tc.code {
			t.Errorf("every %v: start answered %d, want %d", tc.every, rec.Code, tc.code)
		}
	}
}
