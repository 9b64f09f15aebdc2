package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/bench/report"
	"github.com/mailcluster/mailcluster/bench/stats"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/bench/workload"
)

func TestSuitesValidate(t *testing.T) {
	for _, c := range []Config{Standard(), Quick()} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s suite: %v", c.Suite, err)
		}
	}
	q := Quick()
	if total := q.IngestDuration + q.IMAPDuration + q.POP3Duration + q.FailoverBefore + q.FailoverAfter; total > 45*time.Second {
		t.Errorf("quick suite's workloads may take %v per target; it must stay near two minutes for everything", total)
	}
	for _, c := range []Config{Standard(), Quick()} {
		if !slices.Contains(c.Targets, "cluster3") || !slices.Contains(c.Workloads, Failover) {
			t.Errorf("%s suite leaves out cluster3 or failover: %v %v", c.Suite, c.Targets, c.Workloads)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	tests := map[string]func(*Config){
		"unknown target":                     func(c *Config) { c.Targets = []string{"exchange"} },
		"unknown workload":                   func(c *Config) { c.Workloads = []string{"idle"} },
		"no workload":                        func(c *Config) { c.Workloads = nil },
		"more sessions than users":           func(c *Config) { c.IMAPSessions = c.Users },
		"more pop3 clients":                  func(c *Config) { c.POP3Clients = c.Users/2 + 1 },
		"no users":                           func(c *Config) { c.Users = 0 },
		"zero ingest time":                   func(c *Config) { c.IngestDuration = 0 },
		"endless imap":                       func(c *Config) { c.IMAPDuration = 3 * time.Hour },
		"zero smtp clients":                  func(c *Config) { c.SMTPClients = 0 },
		"negative verify wait":               func(c *Config) { c.VerifyWait = -time.Second },
		"no target":                          func(c *Config) { c.Targets = nil },
		"pop3 clients above all users alone": func(c *Config) { c.Workloads = []string{POP3Drain}; c.POP3Clients = c.Users + 1 },
		"no failover senders":                func(c *Config) { c.FailoverSenders = 0 },
		"no load before the kill":            func(c *Config) { c.FailoverBefore = 0 },
		"endless failover":                   func(c *Config) { c.FailoverAfter = 3 * time.Hour },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			c := Standard()
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// Sessions of a workload that does not run do not matter.
	c0 := Standard()
	c0.Workloads = []string{SMTPIngest}
	c0.IMAPSessions, c0.POP3Clients, c0.FailoverSenders = 0, 0, 0
	if err := c0.Validate(); err != nil {
		t.Fatalf("smtp-ingest alone: %v", err)
	}
	// Alone, pop3-drain may use every user.
	c := Standard()
	c.Workloads = []string{POP3Drain}
	c.POP3Clients = c.Users
	if err := c.Validate(); err != nil {
		t.Fatalf("pop3-drain alone with a client per user: %v", err)
	}
}

func TestUserSplit(t *testing.T) {
	c := Standard()
	c.Users = 9
	imapUsers, pop3Users := c.userSplit()
	if len(imapUsers) != 4 || len(pop3Users) != 5 {
		t.Fatalf("split %d/%d, want 4/5", len(imapUsers), len(pop3Users))
	}
	seen := make(map[int]bool)
	for _, u := range append(append([]int{}, imapUsers...), pop3Users...) {
		if seen[u] {
			t.Fatalf("user %d in both halves", u)
		}
		seen[u] = true
	}
	c.Workloads = []string{SMTPIngest, IMAPMixed}
	if imapUsers, _ := c.userSplit(); len(imapUsers) != 9 {
		t.Fatalf("imap-mixed alone gets %d users, want all 9", len(imapUsers))
	}
	env := workload.Env{Users: []targets.User{{Address: "a"}, {Address: "b"}, {Address: "c"}}}
	if got := withUsers(env, []int{2, 0}).Users; len(got) != 2 || got[0].Address != "c" || got[1].Address != "a" {
		t.Fatalf("withUsers = %v", got)
	}
}

func TestFailures(t *testing.T) {
	ok := func() report.TargetRun {
		return report.TargetRun{
			Info:   targets.Info{Name: "single"},
			Ingest: &workload.IngestResult{Acked: 1000, Failed: 5, Check: &workload.CheckResult{Expected: 1000, Matched: 1000}},
			IMAP:   &workload.IMAPResult{Ops: 500, Failed: 0},
			POP3:   &workload.POP3Result{PerOp: map[string]stats.Summary{"retr": {Count: 10}}},
		}
	}
	if f := failures(ok()); len(f) != 0 {
		t.Fatalf("a sound run fails: %v", f)
	}
	// A slow failover with refusals is a figure, not a failure.
	slow := ok()
	slow.Failover = okFailover()
	slow.Failover.FailoverSec, slow.Failover.Refused = 30, 5000
	if f := failures(slow); len(f) != 0 {
		t.Fatalf("a slow failover fails the run: %v", f)
	}
	tests := map[string]func(*report.TargetRun){
		"check mismatch": func(tr *report.TargetRun) {
			tr.Ingest.Check = &workload.CheckResult{Expected: 1000, Matched: 999, Mismatched: 1}
		},
		"check missing": func(tr *report.TargetRun) {
			tr.Ingest.Check = &workload.CheckResult{Expected: 1000, Matched: 999, Missing: 1}
		},
		"nothing acknowledged": func(tr *report.TargetRun) { tr.Ingest.Acked, tr.Ingest.Failed = 0, 3 },
		"many imap failures":   func(tr *report.TargetRun) { tr.IMAP.Failed = 50 },
		"pop3 download differs": func(tr *report.TargetRun) {
			tr.POP3.Mismatched = 1
		},
		"start failed": func(tr *report.TargetRun) { tr.Errors = []string{"start: boom"} },
		"failover lost a message": func(tr *report.TargetRun) {
			tr.Failover = okFailover()
			tr.Failover.Check.Missing, tr.Failover.Check.Matched, tr.Failover.Lost, tr.Failover.Found = 1, 99, 1, 99
		},
		"failover duplicated a message": func(tr *report.TargetRun) {
			tr.Failover = okFailover()
			tr.Failover.Check.Duplicates, tr.Failover.Duplicates = 1, 1
		},
		"failover not read back": func(tr *report.TargetRun) {
			tr.Failover = okFailover()
			tr.Failover.Check, tr.Failover.Errors = nil, []string{"verify: dial: refused"}
		},
		"shard never recovered":      func(tr *report.TargetRun) { tr.Failover = okFailover(); tr.Failover.Recovered = false },
		"killed node did not rejoin": func(tr *report.TargetRun) { tr.Failover = okFailover(); tr.Failover.Rejoined = false },
		"failover bounced mail": func(tr *report.TargetRun) {
			tr.Failover = okFailover()
			tr.Failover.Rejected = 10
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			tr := ok()
			mutate(&tr)
			if f := failures(tr); len(f) == 0 {
				t.Fatal("not reported as a failure")
			}
		})
	}
}

// okFailover is a sound failover result.
func okFailover() *workload.FailoverResult {
	return &workload.FailoverResult{Senders: 4, Shard: 3, Killed: "n2", NewLeader: "n1", Recovered: true, FailoverSec: 1.2,
		Sent: 100, Acked: 100, Refused: 12, Refused4xx: 10, RefusedConn: 2, Found: 100, Rejoined: true,
		Check: &workload.CheckResult{Expected: 100, Matched: 100}}
}

func TestWriteResultsAndDocs(t *testing.T) {
	run := &report.Run{Format: report.Format, Suite: "standard", Started: time.Date(2026, 11, 23, 1, 2, 3, 0, time.UTC),
		Targets: []report.TargetRun{{Info: targets.Info{Name: "single"},
			Ingest: &workload.IngestResult{Acked: 10, MessagesPerSec: 5, ElapsedSec: 2, Check: &workload.CheckResult{Expected: 10, Matched: 10}}}}}
	dir := t.TempDir()
	outs, err := WriteResults(run, filepath.Join(dir, "results"))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(outs.JSON) != "20261123-010203.json" {
		t.Errorf("results named %s", outs.JSON)
	}
	for _, p := range []string{outs.JSON, outs.Markdown, outs.Throughput, outs.Latency} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
	md, _ := os.ReadFile(outs.Markdown)
	if !strings.Contains(string(md), "(20261123-010203-throughput.svg)") {
		t.Error("results Markdown does not embed its chart by a relative name")
	}
	page, err := WriteDocs(run, dir, filepath.Base(outs.JSON))
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := os.ReadFile(page)
	for _, want := range []string{"# Benchmarks\n", "## Latest results", "### Summary", "(benchmarks-throughput.svg)", "make bench", "20261123-010203.json"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs page lacks %q", want)
		}
	}
	if strings.Count(string(doc), "\n# ") != 0 {
		t.Error("docs page has a second top-level title")
	}
	for _, svg := range []string{"benchmarks-throughput.svg", "benchmarks-latency.svg"} {
		if _, err := os.Stat(filepath.Join(dir, svg)); err != nil {
			t.Error(err)
		}
	}
}
