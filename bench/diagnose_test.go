package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	httppprof "net/http/pprof"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/bench/targets"
)

// parkedForDiagnosis blocks until ch is closed: a goroutine with a known
// function and state for the summary to find.
func parkedForDiagnosis(ch chan struct{}) { <-ch }

func TestSummariseGoroutines(t *testing.T) {
	ch := make(chan struct{})
	defer close(ch)
	for range 3 {
		go parkedForDiagnosis(ch)
	}
	var groups []goroutineGroup
	var found *goroutineGroup
	// The goroutines may not have parked yet; a few dumps at most.
	for range 100 {
		var buf bytes.Buffer
		if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
			t.Fatal(err)
		}
		groups = summariseGoroutines(buf.Bytes())
		found = nil
		for i, g := range groups {
			if len(g.frames) > 0 && strings.HasPrefix(g.frames[0], "github.com/mailcluster/mailcluster/bench.parkedForDiagnosis (diagnose_test.go:") {
				found = &groups[i]
			}
		}
		if found != nil && found.count == 3 {
			break
		}
	}
	if found == nil || found.count != 3 || found.state != "chan receive" {
		t.Fatalf("no group of 3 goroutines parked in parkedForDiagnosis: %+v", groups)
	}
	for _, f := range found.frames {
		if strings.Contains(f, "0x") || strings.Contains(f, "\t") {
			t.Errorf("frame keeps arguments or offsets: %q", f)
		}
	}
	var out bytes.Buffer
	writeGoroutines(&out, groups)
	if !strings.Contains(out.String(), "3 × [chan receive]") {
		t.Errorf("summary does not show the group:\n%s", out.String())
	}
}

// processes is an Inspectable with fixed processes.
type processes []targets.Process

func (p processes) Processes() []targets.Process { return p }

func TestDiagnose(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "mailnode.log")
	content := `{"time":"t","level":"INFO","msg":"quiet"}
{"time":"t","level":"WARN","msg":"shard slow"}
not json at all
{"time":"t","level":"ERROR","msg":"deliver failed"}
SIGQUIT: quit
PC=0x46f0e1 m=0 sigcode=0

goroutine 7 [semacquire, 4 minutes]:
sync.runtime_SemacquireMutex(0xc000010000?, 0x0?, 0x1?)
	/usr/lib/go/src/runtime/sema.go:77 +0x25
github.com/mailcluster/mailcluster/cluster.(*subscription).follow(0xc0001a2000, {0x9d4f20, 0xc000012345})
	/src/cluster/watch.go:210 +0x1b4
created by github.com/mailcluster/mailcluster/cluster.(*Cluster).Watch in goroutine 1
	/src/cluster/watch.go:90 +0x2c5

goroutine 8 [semacquire, 4 minutes]:
sync.runtime_SemacquireMutex(0xc000010008?, 0x0?, 0x1?)
	/usr/lib/go/src/runtime/sema.go:77 +0x25
github.com/mailcluster/mailcluster/cluster.(*subscription).follow(0xc0001a2100, {0x9d4f20, 0xc000012399})
	/src/cluster/watch.go:210 +0x1b4
created by github.com/mailcluster/mailcluster/cluster.(*Cluster).Watch in goroutine 3
	/src/cluster/watch.go:90 +0x2c5
`
	if err := os.WriteFile(log, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/goroutine", httppprof.Handler("goroutine"))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var out bytes.Buffer
	diagnose(context.Background(), &out, "single", processes{{Name: "mailnode", Log: log, Debug: srv.URL}})
	got := out.String()
	for _, want := range []string{
		`"msg":"shard slow"`, `"msg":"deliver failed"`,
		"not json at all", "SIGQUIT: quit",
		"goroutines dumped in the log:",
		"2 × [semacquire, up to 4 minutes]",
		"github.com/mailcluster/mailcluster/cluster.(*subscription).follow (watch.go:210)",
		"created by github.com/mailcluster/mailcluster/cluster.(*Cluster).Watch (watch.go:90)",
		"goroutines (all of them in " + filepath.Join(dir, "mailnode-goroutines.txt"),
		"bench.TestDiagnose",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diagnosis lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, `"msg":"quiet"`) {
		t.Errorf("diagnosis shows an INFO record:\n%s", got)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "mailnode-goroutines.txt")); err != nil || !bytes.Contains(b, []byte("goroutine ")) {
		t.Errorf("full dump not kept: %v", err)
	}
}
