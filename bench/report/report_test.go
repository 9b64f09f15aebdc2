package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/bench/limits"
	"github.com/mailcluster/mailcluster/bench/stats"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/bench/workload"
)

// fixture is a run with our target twice as fast as the peer at
// ingest, with half its IMAP latency and 1.5 times its storage.
func fixture() *Run {
	summary := func(count int64, p50, p99 float64) stats.Summary {
		return stats.Summary{Count: count, P50MS: p50, P90MS: p99 * 0.8, P99MS: p99, MaxMS: p99 * 2, PerSecond: float64(count) / 10}
	}
	target := func(name string, rate, imapP50, bpb float64) TargetRun {
		return TargetRun{
			Info: targets.Info{Name: name, Software: name + " 1.0", Durability: "fsync | always", Settings: map[string]string{"b": "2", "a": "1"}},
			Ingest: &workload.IngestResult{Clients: 4, Attempted: 100, Acked: 100, AckedBytes: 100 << 10, ElapsedSec: 100 / rate,
				MessagesPerSec: rate, MBPerSec: rate / 10,
				Ops:   map[string]stats.Summary{"transaction": summary(100, 1000/rate, 3000/rate), "connect": summary(10, 2, 4)},
				Check: &workload.CheckResult{Expected: 100, Matched: 100, VisibleAfterSec: 0.5}},
			IMAP: &workload.IMAPResult{Sessions: 4, Logins: 10, Ops: 200, ElapsedSec: 10, OpsPerSec: 20, All: summary(200, imapP50, imapP50*5),
				PerOp: map[string]stats.Summary{"login": summary(10, imapP50, imapP50*3), "search": summary(20, imapP50*2, imapP50*4)}},
			POP3: &workload.POP3Result{Clients: 2, Mailboxes: 4, Messages: 50, Bytes: 5 << 20, ElapsedSec: 5, MessagesPerSec: 10, MBPerSec: 1,
				PerOp: map[string]stats.Summary{"retr": summary(50, 3, 9), "quit": summary(4, 5, 6)}},
			Storage: &workload.StorageResult{DeliveredMessages: 100, DeliveredBytes: 100 << 10, BytesPerByte: bpb},
		}
	}
	return &Run{
		Format:    Format,
		Started:   time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		Finished:  time.Date(2026, 11, 23, 10, 5, 0, 0, time.UTC),
		Suite:     "standard",
		GitCommit: "0123456789abcdef",
		Machine:   Machine{Hostname: "bench-host", OS: "linux", Arch: "amd64", CPUs: 2, Go: "go1.26.8"},
		Settings:  Settings{Seed: 1, Users: 10, Messages: 100, SMTPClients: 4, IMAPSessions: 4, POP3Clients: 2},
		Limits:    &limits.Limits{FsyncPerSec: 1000, SealMBPerSec: 1000, ZstdMBPerSec: 300, ZstdRatio: 2, PipelineMBPerSec: 260, PipelineMsgPerSec: 3000},
		Targets:   []TargetRun{target("single", 200, 5, 1.5), target("dovecot", 100, 10, 1.0)},
		Skipped:   []Skipped{{Target: "mox", Reason: "not available"}},
	}
}

// clusterFixture adds cluster3, with a failover, to fixture's run, and
// marks the failover skipped on the others.
func clusterFixture() *Run {
	r := fixture()
	c := r.Targets[0]
	c.Info = targets.Info{Name: "cluster3", Software: "mailnode", Durability: "majority of 3"}
	c.Ingest = &workload.IngestResult{Clients: 4, Acked: 100, ElapsedSec: 0.5, MessagesPerSec: 150, MBPerSec: 15,
		Ops:   map[string]stats.Summary{"transaction": {Count: 100, P50MS: 8, P99MS: 30}},
		Check: &workload.CheckResult{Expected: 100, Matched: 100, ReadElsewhere: 100}}
	c.Failover = &workload.FailoverResult{Senders: 4, Shard: 3, ShardUsers: 12, Killed: "n2", NewLeader: "n1", Recovered: true,
		FailoverSec: 1.25, Sent: 300, Acked: 300, Refused: 17, Refused4xx: 15, RefusedConn: 2, Found: 300, Rejoined: true, RejoinSec: 2.5,
		Check: &workload.CheckResult{Expected: 300, Matched: 300}, Refusals: []string{"end of data: 451 4.3.0 try again (x15)"}}
	r.Targets = []TargetRun{r.Targets[0], c, r.Targets[1]}
	for _, i := range []int{0, 2} {
		r.Targets[i].Skipped = []SkippedWorkload{{Workload: "failover", Reason: "one server"}}
	}
	r.Settings.Workloads = []string{"smtp-ingest", "failover"}
	r.Settings.FailoverSenders, r.Settings.FailoverBeforeSec, r.Settings.FailoverAfterSec = 4, 10, 30
	return r
}

func TestMarkdownCluster(t *testing.T) {
	md := render(t, clusterFixture())
	for _, want := range []string{
		"| workload | figure | single | cluster3 | dovecot | single / dovecot | cluster3 / dovecot |",
		"| smtp-ingest | acknowledged messages/s | 200 | 150 | 100 | 2.00× (better) | 1.50× (better) |",
		"| failover | seconds from the kill to the first 250 on the shard | - | 1.25 | - | - | - |",
		"| failover | writes refused meanwhile (retried) | - | 17 | - | - | - |",
		"; 100 of them through another node than the one that acknowledged them",
		"## failover",
		"| cluster3 | 4 | 3 (12 users) | n2 → n1 | 1.25 | 17 (15 / 2) | 300 | 300 | 300 | 0 | 0 | 2.50 | every one of the 300 acknowledged messages found exactly once",
		"- single: not run: one server.",
		"- dovecot: not run: one server.",
		"- cluster3: end of data: 451 4.3.0 try again (x15)",
		"failover 4 senders, 10.0 s before and 30.0 s after the kill",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "RUN FAILED") || strings.Contains(md, "**FAILED**") {
		t.Error("a clean run is reported as failed")
	}
	r := clusterFixture()
	f := r.Targets[1].Failover
	f.Check.Duplicates, f.Duplicates, f.UnknownOutcome, f.DuplicatesLostReply = 1, 1, 1, 1
	md = render(t, r)
	for _, want := range []string{"**FAILED**: 300 acknowledged, 0 lost, 1 duplicated", "1 of the duplicates are such messages"} {
		if !strings.Contains(md, want) {
			t.Errorf("failed failover: report lacks %q", want)
		}
	}
}

func render(t *testing.T, r *Run) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b, "Results", Charts{Throughput: "t.svg", Latency: "l.svg"}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestMarkdown(t *testing.T) {
	md := render(t, fixture())
	for _, want := range []string{
		"# Results",
		"| workload | figure | single | dovecot | single / dovecot |",
		"| smtp-ingest | acknowledged messages/s | 200 | 100 | 2.00× (better) |",
		"| smtp-ingest | p50 ms to the final 250 | 5.00 | 10.0 | 0.50× (better) |",
		"| imap-mixed | p50 ms, all commands | 5.00 | 10.0 | 0.50× (better) |",
		"| storage | disk bytes per delivered byte | 1.50 | 1.00 | 1.50× (worse) |",
		"| pop3-drain | messages/s (RETR + DELE) | 10.0 | 10.0 | 1.00× (same) |",
		"| search | 20 | 10.0 | 20.0 | 20 | 20.0 | 40.0 | 0.50× (better) |",
		"all 100 acknowledged messages fetched back, byte-identical",
		"![Throughput per target](t.svg)",
		"fsync \\| always",               // table cells are escaped
		"- single settings: a: 1; b: 2.", // settings sorted
		"- mox: not available",
		"commit `0123456789abcdef`",
		"1000 fsyncs/s",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "RUN FAILED") {
		t.Error("a clean run is reported as failed")
	}
	if md != render(t, fixture()) {
		t.Error("rendering is not deterministic")
	}
}

func TestMarkdownFailure(t *testing.T) {
	r := fixture()
	r.Targets[1].Ingest.Check = &workload.CheckResult{Expected: 100, Matched: 98, Missing: 1, Mismatched: 1,
		Problems: []string{"message 1-5 differs from what was sent"}}
	r.Failures = []string{"dovecot: smtp-ingest check failed"}
	md := render(t, r)
	for _, want := range []string{"**FAILED**: 100 expected, 98 matched, 1 missing, 1 different", "## RUN FAILED", "message 1-5 differs"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestRatios(t *testing.T) {
	tests := []struct {
		ours, peer     float64
		oursOK, peerOK bool
		want           float64
		ok             bool
	}{
		{200, 100, true, true, 2, true},
		{1, 4, true, true, 0.25, true},
		{1, 0, true, true, 0, false},
		{1, 1, false, true, 0, false},
		{1, 1, true, false, 0, false},
	}
	for _, tt := range tests {
		got, ok := Ratio(tt.ours, tt.peer, tt.oursOK, tt.peerOK)
		if ok != tt.ok || got != tt.want {
			t.Errorf("Ratio(%v, %v) = %v, %v; want %v, %v", tt.ours, tt.peer, got, ok, tt.want, tt.ok)
		}
	}
	lines := fixture().Ratios()
	if len(lines) == 0 {
		t.Fatal("no ratios")
	}
	if got := lines[0].String(); got != "smtp-ingest acknowledged messages/s: single/dovecot = 2.00× (better)" {
		t.Errorf("first ratio line %q", got)
	}
	// A peer alone has nothing to compare with.
	r := fixture()
	r.Targets = r.Targets[1:]
	if n := len(r.Ratios()); n != 0 {
		t.Errorf("%d ratios without our target", n)
	}
}

// wellFormed parses an SVG as XML and returns its text content.
func wellFormed(t *testing.T, svg string) string {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	var text strings.Builder
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch v := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = v.Name.Local
			}
		case xml.CharData:
			text.Write(v)
			text.WriteByte(' ')
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q", root)
	}
	return text.String()
}

func TestSVG(t *testing.T) {
	r := fixture()
	r.Targets[0].Info.Name = "single<&>" // escaped, not breaking the XML
	var tp, lat bytes.Buffer
	if err := r.WriteThroughputSVG(&tp); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteLatencySVG(&lat); err != nil {
		t.Fatal(err)
	}
	text := wellFormed(t, tp.String())
	for _, want := range []string{"single<&>", "dovecot", "smtp-ingest: acknowledged messages/s", "imap-mixed: operations/s", "200"} {
		if !strings.Contains(text, want) {
			t.Errorf("throughput chart lacks %q", want)
		}
	}
	text = wellFormed(t, lat.String())
	for _, want := range []string{"imap-mixed: search", "pop3-drain: retr", "10.0 / 20.0 ms", "logarithmic"} {
		if !strings.Contains(text, want) {
			t.Errorf("latency chart lacks %q", want)
		}
	}
	if strings.Contains(text, "failover") {
		t.Error("latency chart has a failover bar without a failover")
	}
	lat.Reset()
	tp.Reset()
	c := clusterFixture()
	if err := c.WriteLatencySVG(&lat); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteThroughputSVG(&tp); err != nil {
		t.Fatal(err)
	}
	if text := wellFormed(t, lat.String()); !strings.Contains(text, "failover: kill to the first 250 on the shard") || !strings.Contains(text, "1.25 s") {
		t.Error("latency chart lacks the failover time")
	}
	if text := wellFormed(t, tp.String()); !strings.Contains(text, "cluster3") {
		t.Error("throughput chart lacks cluster3")
	}
	// An empty run still draws valid charts.
	empty := &Run{Format: Format}
	tp.Reset()
	lat.Reset()
	if err := empty.WriteThroughputSVG(&tp); err != nil {
		t.Fatal(err)
	}
	if err := empty.WriteLatencySVG(&lat); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, tp.String())
	wellFormed(t, lat.String())
}

func TestJSONRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.json")
	r := clusterFixture()
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if render(t, back) != render(t, r) {
		t.Fatal("a report re-rendered from JSON differs")
	}
}

func TestMarkdownSizes(t *testing.T) {
	r := fixture()
	for i, rate := range []float64{300, 100} {
		for _, n := range []int{1 << 20, 4 << 10} {
			r.Targets[i].Sizes = append(r.Targets[i].Sizes, SizeRun{Bytes: n, Ingest: &workload.IngestResult{
				Clients: 4, Attempted: 50, Acked: 50, MessagesPerSec: rate * float64(4<<10) / float64(n), MBPerSec: rate / 256,
				Ops:   map[string]stats.Summary{"transaction": {Count: 50, P50MS: 4, P99MS: 9}},
				Check: &workload.CheckResult{Expected: 50, Matched: 50}}})
		}
	}
	r.Settings.SizeSeries = []SizeSetting{{4 << 10, 50}, {1 << 20, 50}}
	r.Settings.SizeSec = 5
	md := render(t, r)
	for _, want := range []string{
		"## smtp-ingest-sizes",
		"smtp-ingest-sizes up to 4KiB × 50, 1MiB × 50 messages (at most 5.00 s each)",
		"| smtp-ingest-sizes | 4KiB acknowledged messages/s | 300 | 100 | 3.00× (better) |",
		"| smtp-ingest-sizes | 1MiB acknowledged messages/s | 1.17 | 0.39 | 3.00× (better) |",
		"| 4KiB | single | 50 | 0 | 300 | 1.17 | 3.00× (better) vs dovecot | 3.33 | 4.00 | 9.00 | all 50 fetched back, byte-identical |",
		"| 4KiB | dovecot | 50 | 0 | 100 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Smaller sizes come first.
	if strings.Index(md, "| 4KiB | single") > strings.Index(md, "| 1MiB | single") {
		t.Error("sizes are not in increasing order")
	}
	found := false
	for _, l := range r.Ratios() {
		found = found || l.String() == "smtp-ingest-sizes 1MiB acknowledged messages/s: single/dovecot = 3.00× (better)"
	}
	if !found {
		t.Error("no ratio line for the 1 MiB step")
	}
}

func TestSizeLabel(t *testing.T) {
	for n, want := range map[int]string{4 << 10: "4KiB", 64 << 10: "64KiB", 1 << 20: "1MiB", 1536 << 10: "1536KiB", 1000: "1000B"} {
		if got := SizeLabel(n); got != want {
			t.Errorf("SizeLabel(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestMarkdownPacedIMAP: imap-mixed's paced pass has its summary rows
// and its own table of commands, and a run without it shows neither.
func TestMarkdownPacedIMAP(t *testing.T) {
	r := fixture()
	r.Settings.IMAPRate = 200
	for i, p50 := range []float64{1.5, 3} {
		r.Targets[i].IMAPPaced = &workload.IMAPResult{Sessions: 4, Rate: 200, Ops: 100, ElapsedSec: 10, OpsPerSec: 10,
			All:   stats.Summary{Count: 100, P50MS: p50, P99MS: p50 * 4},
			PerOp: map[string]stats.Summary{"store": {Count: 40, P50MS: p50, P99MS: p50 * 2}}}
	}
	md := render(t, r)
	for _, want := range []string{
		"| imap-mixed, paced | p50 ms, all commands | 1.50 | 3.00 | 0.50× (better) |",
		"| imap-mixed, paced | p99 ms, all commands | 6.00 | 12.0 | 0.50× (better) |",
		"## imap-mixed paced to 200 commands/s: latency per command",
		"| store | 40 | 1.50 | 3.00 | 40 | 3.00 | 6.00 | 0.50× (better) |",
		"imap-mixed 4 sessions for 0 s, then as long again paced to 200 commands/s",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if md := render(t, fixture()); strings.Contains(md, "paced") {
		t.Error("a run without the paced pass mentions it")
	}
}

func TestMarkdownProfileStages(t *testing.T) {
	r := fixture()
	r.Targets[0].Profiles = []Profile{{Workload: "smtp-ingest", File: "x-single-smtp-ingest.cpu.pprof", CPUSec: 8.5,
		Stages: []ProfileStage{{Name: "state file (bbolt)", Share: 0.4}, {Name: "zstd compression", Share: 0.25}},
		Top:    []ProfileFunc{{Name: "go.etcd.io/bbolt.(*Tx).Commit", Flat: 0.1, Cum: 0.3}}}}
	md := render(t, r)
	for _, want := range []string{
		"### single, smtp-ingest (`x-single-smtp-ingest.cpu.pprof`, 8.50 CPU-seconds)\n\n| stage | share |\n| --- | --- |\n" +
			"| state file (bbolt) | 40.0% |\n| zstd compression | 25.0% |\n\n| function | flat | cum |",
		"| `go.etcd.io/bbolt.(*Tx).Commit` | 10.0% | 30.0% |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
