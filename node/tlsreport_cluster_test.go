package node

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/protocols/tlsrpt"
)

// TestTLSReportCountsClusterWide: two nodes count TLS outcomes of their
// own connections and store them in the meta shard; after the period's
// end (and grace), one node's report covers both nodes' counts, the
// other node reports nothing, and the stored counts are gone. A node's
// counts survive a restart of its reporter (a fresh collector takes
// back what it stored).
func TestTLSReportCountsClusterWide(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, MailShards: 1})
	c.WaitConverged(time.Minute)
	ctx := context.Background()

	var clockMu sync.Mutex
	clock := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	advance := func(d time.Duration) { clockMu.Lock(); clock = clock.Add(d); clockMu.Unlock() }

	var sentMu sync.Mutex
	sent := map[string][]*tlsrpt.Report{}
	reporter := func(i int) *tlsReporter {
		n := c.Nodes[i]
		r := &tlsReporter{node: n.ID, store: n.Directory(), rpt: tlsrpt.NewCollector(now()), now: now,
			log: slog.New(slog.DiscardHandler), every: time.Hour, saveEvery: time.Minute, grace: 5 * time.Minute}
		r.deliver = func(_ context.Context, reports []*tlsrpt.Report) {
			sentMu.Lock()
			sent[n.ID] = append(sent[n.ID], reports...)
			sentMu.Unlock()
		}
		r.restore(ctx)
		return r
	}
	sts := tlsrpt.Policy{Type: tlsrpt.PolicySTS, String: []string{"version: STSv1", "mode: enforce"}, MX: []string{"mx.remote.test"}}
	a, b := reporter(0), reporter(1)
	a.rpt.Record("remote.test", sts, "mx.remote.test", "", "")
	a.rpt.Record("remote.test", sts, "mx.remote.test", "certificate-expired", "expired")
	b.rpt.Record("remote.test", sts, "mx.remote.test", "", "")
	b.rpt.Record("other.test", tlsrpt.Policy{Type: tlsrpt.PolicyNotFound}, "mx.other.test", "starttls-not-supported", "")

	// a's reporter restarts: what it stored comes back, what it had not
	// stored yet is lost.
	advance(time.Minute)
	a.step(ctx)
	b.step(ctx)
	a = reporter(0)
	if st := a.rpt.State(); len(st.Domains) != 1 || st.Domains[0].Policies[0].Success != 1 {
		t.Fatalf("counts after the restart: %+v", st)
	}
	a.rpt.Record("remote.test", sts, "mx.remote.test", "", "")

	// The period ends at 11:00: each node stores its last counts, and
	// nobody reports before the grace time has passed.
	advance(time.Hour)
	a.step(ctx)
	b.step(ctx)
	if len(sent) != 0 {
		t.Fatalf("reported within the grace time: %+v", sent)
	}
	if a.end != time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) {
		t.Fatalf("next period ends %s", a.end)
	}
	advance(10 * time.Minute)
	b.step(ctx)
	a.step(ctx)
	sentMu.Lock()
	defer sentMu.Unlock()
	if len(sent) != 1 || len(sent[c.Nodes[1].ID]) != 2 {
		t.Fatalf("reports by node: %+v, want both domains by the first to look (the second node)", sent)
	}
	byDomain := map[string]*tlsrpt.Report{}
	for _, r := range sent[c.Nodes[1].ID] {
		byDomain[r.Domain()] = r
	}
	rt := byDomain["remote.test"]
	if rt == nil || rt.Policies[0].Summary.TotalSuccessful != 3 || rt.Policies[0].Summary.TotalFailure != 1 {
		t.Errorf("remote.test: %+v, want 3 successes (2 from the first node, 1 from the second) and 1 failure", rt)
	}
	if rt != nil && (!rt.DateRange.Start.Equal(time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)) || !rt.DateRange.End.Equal(time.Date(2025, 6, 1, 11, 0, 0, 0, time.UTC))) {
		t.Errorf("date range %+v", rt.DateRange)
	}
	if ot := byDomain["other.test"]; ot == nil || ot.Policies[0].Summary.TotalFailure != 1 {
		t.Errorf("other.test: %+v", ot)
	}
	counts, err := c.Nodes[0].Directory().TLSReportCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 0 {
		t.Errorf("counts left after the report: %d periods", len(counts))
	}
}
