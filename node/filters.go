package node

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocols/filter"
)

// FiltersConfig is the [filters] section: the content scanners every
// message received on the MX port passes before it is stored (rspamd for
// spam, clamd for viruses), each off when its address is empty.
// Submissions are scanned for viruses only.
type FiltersConfig struct {
	// Rspamd is the base URL of rspamd's normal worker, such as
	// http://127.0.0.1:11333.
	Rspamd string `toml:"rspamd"`
	// JunkScore and RejectScore, when positive, replace rspamd's own
	// actions: at or above JunkScore mail goes to Junk, at or above
	// RejectScore it is refused with 550 5.7.1.
	JunkScore   float64 `toml:"junk_score"`
	RejectScore float64 `toml:"reject_score"`
	// Clamd is clamd's address: tcp://HOST:PORT or unix:///PATH.
	Clamd string `toml:"clamd"`
	// OnFailure is what happens to a message when a scanner cannot be
	// asked: "accept" (stored unscanned, the default) or "defer" (451, the
	// sender retries).
	OnFailure string `toml:"on_failure"`
	// Timeout bounds one scan by one scanner (default 30 s).
	Timeout time.Duration `toml:"timeout"`
}

func (f FiltersConfig) validate() []error {
	var errs []error
	if f.Rspamd != "" {
		if u, err := url.Parse(f.Rspamd); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("filters.rspamd %q: want http://HOST:PORT", f.Rspamd))
		}
	}
	if f.Clamd != "" {
		u, err := url.Parse(f.Clamd)
		if err != nil || !(u.Scheme == "tcp" && u.Host != "" || u.Scheme == "unix" && u.Path != "") {
			errs = append(errs, fmt.Errorf("filters.clamd %q: want tcp://HOST:PORT or unix:///PATH", f.Clamd))
		}
	}
	if f.JunkScore < 0 || f.RejectScore < 0 || (f.JunkScore > 0 && f.RejectScore > 0 && f.RejectScore < f.JunkScore) {
		errs = append(errs, fmt.Errorf("filters.junk_score %g, reject_score %g: want positive scores, reject at or above junk", f.JunkScore, f.RejectScore))
	}
	switch f.OnFailure {
	case "", "accept", "defer":
	default:
		errs = append(errs, fmt.Errorf("filters.on_failure %q: want accept or defer", f.OnFailure))
	}
	if f.Timeout < 0 || f.Timeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("filters.timeout %s: want at most 10m", f.Timeout))
	}
	return errs
}

// filterMetrics counts scans by scanner and result, and keeps whether each
// scanner answered its last scan.
type filterMetrics struct {
	scans *prometheus.CounterVec
	up    *prometheus.GaugeVec
}

func newFilterMetrics() *filterMetrics {
	return &filterMetrics{
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mail_filter_scans_total",
			Help: "Messages scanned by a content scanner, by scanner (rspamd, clamd) and result (accept, junk, reject, defer, error).",
		}, []string{"scanner", "result"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mail_filter_up",
			Help: "1 if the content scanner answered its last scan, 0 if it could not be asked.",
		}, []string{"scanner"}),
	}
}

func (m *filterMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.scans, m.up}
}

// filterHealth remembers each scanner's last failure for /readyz.
type filterHealth struct {
	mu   sync.Mutex
	down map[string]string // scanner -> last error, while it fails
	seen map[string]bool
}

func (h *filterHealth) record(scanner string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down == nil {
		h.down, h.seen = map[string]string{}, map[string]bool{}
	}
	h.seen[scanner] = true
	if err != nil {
		h.down[scanner] = err.Error()
	} else {
		delete(h.down, scanner)
	}
}

// details is the /readyz text about the scanners: a scanner that cannot
// be asked leaves the node ready (mail is accepted unscanned or deferred,
// as configured) but is reported.
func (h *filterHealth) details() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for name := range h.seen {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		if e, down := h.down[name]; down {
			fmt.Fprintf(&b, "filter %s: DOWN: %s\n", name, e)
		} else {
			fmt.Fprintf(&b, "filter %s: ok\n", name)
		}
	}
	return b.String()
}

// contentFilters builds the scanner chains of the MX port (spam and
// viruses) and of submission (viruses), or nil for a port with none.
func (n *Node) contentFilters() (mx, submission *filter.Chain) {
	f := n.cfg.Filters
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	var spam, virus filter.Scanner
	if f.Rspamd != "" {
		spam = &filter.Rspamd{URL: f.Rspamd, JunkScore: f.JunkScore, RejectScore: f.RejectScore, Timeout: timeout}
	}
	if f.Clamd != "" {
		virus = &filter.Clamd{Address: f.Clamd, Timeout: timeout}
	}
	for _, s := range []filter.Scanner{spam, virus} {
		if s != nil {
			n.filterHealth.record(s.Name(), nil)
			n.metrics.filters.up.WithLabelValues(s.Name()).Set(1)
		}
	}
	chain := func(scanners ...filter.Scanner) *filter.Chain {
		var list []filter.Scanner
		for _, s := range scanners {
			if s != nil {
				list = append(list, s)
			}
		}
		if len(list) == 0 {
			return nil
		}
		return &filter.Chain{Scanners: list, DeferOnFailure: f.OnFailure == "defer", OnResult: n.filterResult}
	}
	// Viruses first: an infected message is refused whatever its score.
	return chain(virus, spam), chain(virus)
}

// filterResult records one scan in the metrics, the log and /readyz.
func (n *Node) filterResult(scanner string, v filter.Verdict, err error) {
	result := v.Action.String()
	up := 1.0
	if err != nil {
		result, up = "error", 0
		n.log.Warn("content scanner unavailable", "scanner", scanner, "err", err)
	}
	n.metrics.filters.scans.WithLabelValues(scanner, result).Inc()
	n.metrics.filters.up.WithLabelValues(scanner).Set(up)
	n.filterHealth.record(scanner, err)
}
