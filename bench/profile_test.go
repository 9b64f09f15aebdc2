package bench

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/mailcluster/mailcluster/bench/report"
)

// TestCPUProfileOfAWorkload profiles a process serving net/http/pprof
// (as mailnode does with [debug] pprof) while it burns CPU in a known
// function, and finds that function in the written profile's summary.
func TestCPUProfileOfAWorkload(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startCPUProfile(ctx, []string{srv.URL + "/debug/pprof/profile"}, time.Second)
	// The workload: hashing until the first chunk surely covers it.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		burnSHA256()
	}
	prof, err := p.stop()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := writeProfile(prof, dir, "20261202-000000", "single", "smtp-ingest")
	if err != nil {
		t.Fatal(err)
	}
	if s.File != "20261202-000000-single-smtp-ingest.cpu.pprof" || s.Workload != "smtp-ingest" || s.CPUSec <= 0 {
		t.Fatalf("summary: %+v", s)
	}
	f, err := os.Open(filepath.Join(dir, s.File))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := profile.Parse(f); err != nil {
		t.Fatalf("written profile does not parse: %v", err)
	}
	var found bool
	for _, fn := range s.Top {
		found = found || strings.Contains(fn.Name, "burnSHA256") || strings.Contains(fn.Name, "sha256")
	}
	if !found {
		t.Fatalf("the hashing loop is not among the top functions: %+v", s.Top)
	}
}

//go:noinline
func burnSHA256() {
	b := make([]byte, 64<<10)
	for range 16 {
		sum := sha256.Sum256(b)
		b[0] = sum[0]
	}
}

// TestSummariseShares: flat time goes to the leaf of each sample, cum
// time to every function on its stack once, as shares of the total.
func TestSummariseShares(t *testing.T) {
	leaf := &profile.Function{ID: 1, Name: "leaf"}
	mid := &profile.Function{ID: 2, Name: "mid"}
	root := &profile.Function{ID: 3, Name: "root"}
	loc := func(id uint64, fns ...*profile.Function) *profile.Location {
		l := &profile.Location{ID: id}
		for _, fn := range fns {
			l.Line = append(l.Line, profile.Line{Function: fn})
		}
		return l
	}
	// leaf is inlined into mid at location 1; root calls it (location 2).
	inlined, caller, rootOnly := loc(1, leaf, mid), loc(2, root), loc(3, root)
	prof := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{inlined, caller}, Value: []int64{3, int64(3 * time.Second)}},
			{Location: []*profile.Location{rootOnly}, Value: []int64{1, int64(time.Second)}},
		},
		Location: []*profile.Location{inlined, caller, rootOnly},
		Function: []*profile.Function{leaf, mid, root},
	}
	s := summarise(prof)
	if s.CPUSec != 4 {
		t.Fatalf("CPU seconds %v, want 4", s.CPUSec)
	}
	want := []report.ProfileFunc{{Name: "leaf", Flat: 0.75, Cum: 0.75}, {Name: "root", Flat: 0.25, Cum: 1}}
	if len(s.Top) != len(want) {
		t.Fatalf("top %+v, want %+v", s.Top, want)
	}
	for i := range want {
		if s.Top[i] != want[i] {
			t.Fatalf("top %+v, want %+v", s.Top, want)
		}
	}
}

// TestSummariseStages: a sample counts for the innermost library stage
// on its stack, else for the first caller stage found on it, else for
// "other".
func TestSummariseStages(t *testing.T) {
	var fns []*profile.Function
	fn := func(name string) *profile.Function {
		f := &profile.Function{ID: uint64(len(fns) + 1), Name: name}
		fns = append(fns, f)
		return f
	}
	var locs []*profile.Location
	stack := func(names ...string) []*profile.Location { // innermost first
		var out []*profile.Location
		for _, n := range names {
			l := &profile.Location{ID: uint64(len(locs) + 1), Line: []profile.Line{{Function: fn(n)}}}
			locs = append(locs, l)
			out = append(out, l)
		}
		return out
	}
	const mod = "github.com/mailcluster/mailcluster/"
	samples := []struct {
		stack []*profile.Location
		sec   int64
		want  string
	}{
		{stack("github.com/klauspost/compress/zstd.(*Encoder).EncodeAll", mod+"cluster/mailstore.(*Store).sealMessage",
			"github.com/emersion/go-smtp.(*Conn).handle"), 4, "zstd compression"},
		{stack("syscall.write", "net.(*conn).Write", "crypto/tls.(*Conn).Write", mod+"protocols/smtp.(*frontConn).Write"), 3, "sockets"},
		{stack(mod+"protocols/imap.(*wordSet).add", mod+"protocols/imap.BuildSearchRecord",
			mod+"cluster/mailstore.(*Store).sealMessage"), 2, "search records"},
		{stack("crypto/sha256.(*Digest).Write", mod+"cluster/directory.(*Directory).resolveRecipients",
			mod+"protocols/smtp.(*session).Rcpt"), 1, "directory"},
		{stack("runtime.futex", "runtime.schedule"), 2, otherStage},
		// hashicorp/raft is not raft-wal, whose prefix it shares.
		{stack("syscall.Fsync", "github.com/hashicorp/raft-wal/segment.(*Writer).sync", "github.com/hashicorp/raft.(*Raft).leaderLoop"), 3, "Raft log (raft-wal)"},
	}
	prof := &profile.Profile{SampleType: []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}}}
	want := map[string]float64{}
	for _, s := range samples {
		prof.Sample = append(prof.Sample, &profile.Sample{Location: s.stack, Value: []int64{s.sec * int64(time.Second)}})
		want[s.want] += float64(s.sec) / 15
	}
	prof.Location, prof.Function = locs, fns
	got := summarise(prof)
	if len(got.Stages) != len(want) {
		t.Fatalf("stages %+v, want %v", got.Stages, want)
	}
	for i, st := range got.Stages {
		if w, ok := want[st.Name]; !ok || st.Share < w-1e-9 || st.Share > w+1e-9 {
			t.Errorf("stage %q share %v, want %v", st.Name, st.Share, w)
		}
		if i > 0 && st.Share > got.Stages[i-1].Share {
			t.Errorf("stages not largest first: %+v", got.Stages)
		}
	}
}
