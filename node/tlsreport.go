package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/protocols/tlsrpt"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// tlsReporter sends the daily aggregate TLS reports (RFC 8460) of the
// connections this node's deliverer made, through the outbound queue,
// from the configured postmaster.
type tlsReporter struct {
	n      *Node
	sub    outboundSubmitter
	txt    func(ctx context.Context, name string) ([]string, error)
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startTLSReports starts the reporter when a postmaster is configured
// (reports come from that address; without one none are sent).
func (n *Node) startTLSReports(sub outboundSubmitter) {
	if n.cfg.Postmaster == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &tlsReporter{n: n, sub: sub, txt: n.cfg.DNS.resolver().LookupTXT, cancel: cancel}
	n.tlsReports = r
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.run(ctx)
	}()
}

// close stops the reporter; results not yet reported are dropped.
func (r *tlsReporter) close() {
	r.cancel()
	r.wg.Wait()
}

// nextReport is when the period that includes now ends: the next UTC
// midnight (RFC 8460 section 4.1's daily report), or now plus every
// when set (tests).
func nextReport(now time.Time, every time.Duration) time.Time {
	if every > 0 {
		return now.Add(every)
	}
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

func (r *tlsReporter) run(ctx context.Context) {
	for {
		next := nextReport(r.n.now(), r.n.cfg.Outbound.TLSReportEvery)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		r.send(ctx, r.n.outTLS.rpt.Flush(next, r.n.cfg.Hostname, r.n.cfg.Postmaster))
	}
}

// send mails each report to its domain's rua addresses.
func (r *tlsReporter) send(ctx context.Context, reports []*tlsrpt.Report) {
	log := r.n.log.With("component", "tlsrpt")
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
