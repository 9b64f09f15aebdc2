package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/protocols/tlsrpt"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// tlsReporter sends the daily aggregate TLS reports (RFC 8460) of the
// connections the cluster's deliverers made, through the outbound queue,
// from the configured postmaster. Each node counts its own connections
// (outTLS.rpt) and stores the counts of the current period in the meta
// shard (tlsReportStore) every save interval, at the period's end and
// when it stops, and takes them back after a restart; once a period has
// ended and its grace time passed, the first node to claim it merges the
// counts of every node into one report per domain, sends them and
// deletes the counts. A node that crashes loses at most one save
// interval of counts; a claimer that crashes before sending loses that
// period's reports (reports are sent at most once).
type tlsReporter struct {
	node  string
	store tlsReportStore
	rpt   *tlsrpt.Collector
	now   func() time.Time
	log   *slog.Logger
	// every replaces the daily period (tests); saveEvery is how often
	// changed counts are stored; grace is how long after a period's end
	// its report waits for the other nodes' last counts.
	every, saveEvery, grace time.Duration
	// deliver sends the reports of a period.
	deliver func(ctx context.Context, reports []*tlsrpt.Report)

	// Only the run goroutine (or a test driving the steps) touches these.
	end   time.Time // the end of the current period
	saved uint64    // rpt.Changes() when the counts were last stored

	n      *Node
	sub    outboundSubmitter
	txt    func(ctx context.Context, name string) ([]string, error)
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// tlsReportStore keeps every node's counts until a period is reported;
// the directory (meta shard) satisfies it.
type tlsReportStore interface {
	SaveTLSReportCounts(ctx context.Context, end int64, node string, counts []byte) error
	TLSReportCounts(ctx context.Context) (map[int64]map[string][]byte, error)
	ClaimTLSReport(ctx context.Context, end int64, node string) (bool, error)
	TLSReportClaimed(end int64) (bool, error)
	DeleteTLSReportCounts(ctx context.Context, end int64) error
	PruneTLSReportClaims(ctx context.Context, before int64) error
}

// Defaults of the reporter's intervals.
const (
	tlsReportSaveEvery = time.Minute
	tlsReportGrace     = 5 * time.Minute
	// tlsReportClaimsKept is how long a claim of a reported period is
	// kept, so that a late node's counts of it are recognised and
	// dropped.
	tlsReportClaimsKept = 7 * 24 * time.Hour
)

// startTLSReports starts the reporter when a postmaster is configured
// (reports come from that address; without one none are sent).
func (n *Node) startTLSReports(sub outboundSubmitter) {
	if n.cfg.Postmaster == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := n.cfg.Outbound
	r := &tlsReporter{node: n.cfg.NodeID, store: n.directory, rpt: n.outTLS.rpt, now: n.now, log: n.log.With("component", "tlsrpt"),
		every: o.TLSReportEvery, saveEvery: cmp.Or(o.TLSReportSave, tlsReportSaveEvery), grace: tlsReportGrace,
		n: n, sub: sub, txt: n.cfg.DNS.resolver().LookupTXT, cancel: cancel}
	if o.TLSReportEvery > 0 {
		r.grace = min(r.grace, o.TLSReportEvery/2)
	}
	r.deliver = r.send
	n.tlsReports = r
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.run(ctx)
	}()
}

// close stops the reporter after storing the counts of the current
// period one last time.
func (r *tlsReporter) close() {
	r.cancel()
	r.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.saveIfChanged(ctx)
}

// nextReport is when the period that includes now ends: the next UTC
// midnight (RFC 8460 section 4.1's daily report), or the next multiple
// of every when set (tests), the same on every node.
func nextReport(now time.Time, every time.Duration) time.Time {
	if every > 0 {
		return now.Truncate(every).Add(every)
	}
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

func (r *tlsReporter) run(ctx context.Context) {
	r.restore(ctx)
	for {
		wait := min(time.Until(r.end), r.saveEvery)
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		r.step(ctx)
	}
}

// restore starts the current period and takes back the counts this node
// stored for it before a restart.
func (r *tlsReporter) restore(ctx context.Context) {
	r.end = nextReport(r.now(), r.every)
	counts, err := r.store.TLSReportCounts(ctx)
	if err != nil {
		r.log.Warn("stored TLS report counts not read", "err", err)
		return
	}
	if b, ok := counts[r.end.Unix()][r.node]; ok {
		var st tlsrpt.State
		if err := json.Unmarshal(b, &st); err != nil {
			r.log.Warn("stored TLS report counts not readable", "err", err)
			return
		}
		r.rpt.Merge(st)
		r.saved = r.rpt.Changes()
	}
}

// step stores the counts (all of them when the period has ended, which
// starts the next one) and reports the periods that are due.
func (r *tlsReporter) step(ctx context.Context) {
	if now := r.now(); !now.Before(r.end) {
		end := r.end
		st := r.rpt.Rotate(end)
		r.saved = r.rpt.Changes()
		if len(st.Domains) > 0 {
			r.saveState(ctx, end, st)
		}
		r.end = nextReport(now, r.every)
	} else {
		r.saveIfChanged(ctx)
	}
	r.reportDue(ctx)
}

// saveIfChanged stores the counts of the current period if they changed
// since they were last stored.
func (r *tlsReporter) saveIfChanged(ctx context.Context) {
	changes := r.rpt.Changes()
	if changes == r.saved || r.end.IsZero() {
		return
	}
	if r.saveState(ctx, r.end, r.rpt.State()) {
		r.saved = changes
	}
}

// saveState stores st as this node's counts of the period ending at end.
func (r *tlsReporter) saveState(ctx context.Context, end time.Time, st tlsrpt.State) bool {
	b, err := json.Marshal(st)
	if err == nil {
		err = r.store.SaveTLSReportCounts(ctx, end.Unix(), r.node, b)
	}
	if err != nil {
		r.log.Warn("TLS report counts not stored", "err", err)
		return false
	}
	return true
}

// reportDue reports every stored period that ended at least grace ago
// and that no node claimed yet, and drops counts that came too late.
func (r *tlsReporter) reportDue(ctx context.Context) {
	counts, err := r.store.TLSReportCounts(ctx)
	if err != nil {
		r.log.Warn("stored TLS report counts not read", "err", err)
		return
	}
	ends := make([]int64, 0, len(counts))
	for end := range counts {
		ends = append(ends, end)
	}
	slices.Sort(ends)
	now := r.now()
	for _, end := range ends {
		endTime := time.Unix(end, 0)
		if now.Before(endTime.Add(r.grace)) {
			continue
		}
		if claimed, err := r.store.TLSReportClaimed(end); err != nil || claimed {
			if claimed {
				// Counts stored after the period was reported.
				_ = r.store.DeleteTLSReportCounts(ctx, end)
			}
			continue
		}
		won, err := r.store.ClaimTLSReport(ctx, end, r.node)
		if err != nil || !won {
			continue
		}
		all := tlsrpt.NewCollector(endTime)
		for node, b := range counts[end] {
			var st tlsrpt.State
			if err := json.Unmarshal(b, &st); err != nil {
				r.log.Warn("TLS report counts of a node not readable", "node", node, "err", err)
				continue
			}
			all.Merge(st)
		}
		r.log.Info("reporting a TLS report period", "end", endTime.UTC(), "nodes", len(counts[end]))
		r.deliver(ctx, all.State().Reports(endTime, r.org(), r.contact()))
		if err := r.store.DeleteTLSReportCounts(ctx, end); err != nil {
			r.log.Warn("reported TLS report counts not deleted", "err", err)
		}
	}
	keep := max(tlsReportClaimsKept, 7*r.every)
	_ = r.store.PruneTLSReportClaims(ctx, now.Add(-keep).Unix())
}

// org and contact name the reporting organisation in reports.
func (r *tlsReporter) org() string {
	if r.n == nil {
		return r.node
	}
	return r.n.cfg.Hostname
}

func (r *tlsReporter) contact() string {
	if r.n == nil {
		return ""
	}
	return r.n.cfg.Postmaster
}

// send mails each report to its domain's rua addresses.
func (r *tlsReporter) send(ctx context.Context, reports []*tlsrpt.Report) {
	log := r.log
	for _, rep := range reports {
		dom := rep.Domain()
		to, err := r.rua(ctx, dom)
		if err != nil {
			log.Info("no TLS report sent", "domain", dom, "reason", err)
			continue
		}
		if err := r.submit(ctx, rep, to); err != nil {
			log.Warn("TLS report not queued", "domain", dom, "err", err)
			continue
		}
		log.Info("TLS report queued", "domain", dom, "report_id", rep.ReportID, "recipients", len(to))
	}
}

// errNoTLSRPT: the domain publishes no usable _smtp._tls record.
var errNoTLSRPT = errors.New("no _smtp._tls record with a mailto: rua")

// rua returns the mailto: addresses of a domain's _smtp._tls record.
func (r *tlsReporter) rua(ctx context.Context, domain string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	txts, err := r.txt(ctx, "_smtp._tls."+domain)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, errNoTLSRPT
	}
	if err != nil {
		return nil, fmt.Errorf("look up _smtp._tls.%s: %w", domain, err)
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=TLSRPTv1") {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		// RFC 8460 section 3: none, or more than one, means no reports.
		return nil, errNoTLSRPT
	}
	to, err := tlsrpt.ParseRecord(recs[0])
	if err != nil {
		return nil, err
	}
	if len(to) == 0 {
		return nil, errNoTLSRPT
	}
	return to, nil
}

// submit queues a report from the postmaster.
func (r *tlsReporter) submit(ctx context.Context, rep *tlsrpt.Report, to []string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pm := r.n.cfg.Postmaster
	users, err := r.n.directory.ResolveRecipients(ctx, pm)
	if err != nil {
		return fmt.Errorf("postmaster %s: %w", pm, err)
	}
	if len(users) == 0 {
		return fmt.Errorf("postmaster %s reaches no user", pm)
	}
	msg, err := rep.Message(pm, to, r.n.cfg.Hostname, r.n.now())
	if err != nil {
		return err
	}
	return r.sub.Submit(ctx, schema.Submission{User: users[0].Address, From: pm, Recipients: to, Message: msg})
}
