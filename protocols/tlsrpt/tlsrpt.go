// Package tlsrpt implements the sending side of SMTP TLS Reporting
// (RFC 8460): it counts the TLS outcomes of outbound connections per
// recipient domain and policy, parses a domain's _smtp._tls record, and
// writes the daily aggregate report (JSON, gzip'd, in a multipart/report
// message) to the record's mailto: addresses.
package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"sync"
	"time"
)

// Policy types of RFC 8460 section 4.4.
const (
	PolicySTS      = "sts"
	PolicyNotFound = "no-policy-found"
)

// MaxRecord bounds a _smtp._tls TXT record that is parsed.
const MaxRecord = 4096

// maxDomains bounds the domains a Collector counts between flushes; the
// results of further domains are dropped (and the drop is counted).
const maxDomains = 10000

// maxFailureKinds bounds the failure-details rows of one policy.
const maxFailureKinds = 100

// ErrInvalid marks a malformed _smtp._tls record.
var ErrInvalid = errors.New("tlsrpt: invalid record")

// ParseRecord parses a _smtp._tls TXT record ("v=TLSRPTv1;
// rua=mailto:a@example.com,https://...") and returns its mailto:
// addresses; https: URIs are skipped (this sender reports by mail only).
func ParseRecord(txt string) ([]string, error) {
	if len(txt) > MaxRecord {
		return nil, fmt.Errorf("%w: %d bytes", ErrInvalid, len(txt))
	}
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=TLSRPTv1" {
		return nil, fmt.Errorf("%w: no v=TLSRPTv1", ErrInvalid)
	}
	var out []string
	seenRUA := false
	for _, f := range fields[1:] {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("%w: field %q", ErrInvalid, f)
		}
		if strings.TrimSpace(k) != "rua" {
			continue // RFC 8460 section 3: unknown fields are ignored
		}
		if seenRUA {
			return nil, fmt.Errorf("%w: two rua fields", ErrInvalid)
		}
		seenRUA = true
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			rest, ok := cutPrefixFold(u, "mailto:")
			if !ok {
				continue
			}
			addr, err := mail.ParseAddress(rest)
			if err != nil || addr.Name != "" || !strings.Contains(addr.Address, "@") {
				return nil, fmt.Errorf("%w: rua %q", ErrInvalid, u)
			}
			out = append(out, addr.Address)
		}
	}
	if !seenRUA {
		return nil, fmt.Errorf("%w: no rua", ErrInvalid)
	}
	return out, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// Policy is the policy a result was obtained under.
type Policy struct {
	Type   string   // PolicySTS or PolicyNotFound
	String []string // the policy's lines (MTA-STS text), empty when none
	MX     []string // the policy's mx patterns
}

// key identifies one policy of one domain in a Collector.
func (p Policy) key() string {
	return p.Type + "\x00" + strings.Join(p.String, "\n") + "\x00" + strings.Join(p.MX, ",")
}

// failureKey identifies a failure-details row.
type failureKey struct {
	result, mx, detail string
}

// counts are one policy's results.
type counts struct {
	policy   Policy
	success  int64
	failures map[failureKey]int64
}

// Collector counts TLS outcomes per recipient domain and policy between
// flushes. It is safe for concurrent use.
type Collector struct {
	mu      sync.Mutex
	start   time.Time
	domains map[string]map[string]*counts
	dropped int64
	// changes counts Record and Merge calls, so that a saver can tell
	// whether anything changed since it last saved (Changes).
	changes uint64
}

// NewCollector returns a collector whose first period starts at start.
func NewCollector(start time.Time) *Collector {
	return &Collector{start: start, domains: map[string]map[string]*counts{}}
}

// Record counts one connection's outcome: failure is "" for success,
// else an RFC 8460 result type; mx is the receiving MX; detail is a
// short additional-information text (no secrets).
func (c *Collector) Record(domain string, p Policy, mx, failure, detail string) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes++
	c.add(domain, p, mx, failure, detail, 1)
}

// add counts n sessions; c.mu is held.
func (c *Collector) add(domain string, p Policy, mx, failure, detail string, n int64) {
	byPolicy := c.domains[domain]
	if byPolicy == nil {
		if len(c.domains) >= maxDomains {
			c.dropped++
			return
		}
		byPolicy = map[string]*counts{}
		c.domains[domain] = byPolicy
	}
	k := p.key()
	cs := byPolicy[k]
	if cs == nil {
		cs = &counts{policy: p, failures: map[failureKey]int64{}}
		byPolicy[k] = cs
	}
	if failure == "" {
		cs.success += n
		return
	}
	fk := failureKey{result: failure, mx: mx, detail: truncate(detail, 200)}
	if _, ok := cs.failures[fk]; !ok && len(cs.failures) >= maxFailureKinds {
		fk.detail = ""
	}
	cs.failures[fk] += n
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Flush returns a report per domain for the period from the previous
// flush to end, and starts a new period. Domains without results are
// left out.
func (c *Collector) Flush(end time.Time, org, contact string) []*Report {
	return c.Rotate(end).Reports(end, org, contact)
}

// Rotate returns the counts of the period from the previous rotation
// (or flush) to end, and starts a new period at end.
func (c *Collector) Rotate(end time.Time) State {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stateLocked()
	c.domains, c.start, c.dropped = map[string]map[string]*counts{}, end, 0
	c.changes++
	return st
}

// Reports returns a report per domain of s for the period from s.Start
// to end.
func (s State) Reports(end time.Time, org, contact string) []*Report {
	var out []*Report
	for _, d := range s.Domains {
		r := &Report{
			OrganizationName: org,
			DateRange:        DateRange{Start: s.Start.UTC().Truncate(time.Second), End: end.UTC().Truncate(time.Second)},
			ContactInfo:      contact,
			ReportID:         reportID(s.Start),
		}
		for _, ps := range d.Policies {
			pr := PolicyResult{
				Policy:  PolicyDesc{Type: ps.Policy.Type, String: ps.Policy.String, Domain: d.Domain, MXHost: ps.Policy.MX},
				Summary: Summary{TotalSuccessful: ps.Success},
			}
			for _, f := range ps.Failures {
				pr.Summary.TotalFailure += f.Sessions
				pr.FailureDetails = append(pr.FailureDetails, FailureDetail{ResultType: f.Result, ReceivingMX: f.MX, FailedSessions: f.Sessions, AdditionalInfo: f.Detail})
			}
			r.Policies = append(r.Policies, pr)
		}
		out = append(out, r)
	}
	return out
}

func reportID(start time.Time) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return start.UTC().Format("2006-01-02T15:04:05Z") + "_" + hex.EncodeToString(b[:])
}

// Report is an aggregate report, RFC 8460 section 4.4.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyResult `json:"policies"`
}

// DateRange is the period a report covers.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyResult is the results under one policy.
type PolicyResult struct {
	Policy         PolicyDesc      `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// PolicyDesc describes the policy.
type PolicyDesc struct {
	Type   string   `json:"policy-type"`
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// Summary counts sessions.
type Summary struct {
	TotalSuccessful int64 `json:"total-successful-session-count"`
	TotalFailure    int64 `json:"total-failure-session-count"`
}

// FailureDetail is one kind of failure.
type FailureDetail struct {
	ResultType     string `json:"result-type"`
	ReceivingMX    string `json:"receiving-mx-hostname,omitempty"`
	FailedSessions int64  `json:"failed-session-count"`
	AdditionalInfo string `json:"additional-information,omitempty"`
}

// Domain is the policy domain a report is about.
func (r *Report) Domain() string {
	if len(r.Policies) == 0 {
		return ""
	}
	return r.Policies[0].Policy.Domain
}

// Message returns the report as a mail message (RFC 8460 section 5.3)
// from from to the rua addresses to, submitted by submitter (our host
// name): multipart/report; report-type="tlsrpt" with a text part and
// the JSON report gzip'd as application/tlsrpt+gzip.
func (r *Report) Message(from string, to []string, submitter string, now time.Time) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: encode report: %w", err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(js); err != nil {
		return nil, fmt.Errorf("tlsrpt: gzip report: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("tlsrpt: gzip report: %w", err)
	}
	dom := r.Domain()
	filename := fmt.Sprintf("%s!%s!%d!%d!%s.json.gz", submitter, dom, r.DateRange.Start.Unix(), r.DateRange.End.Unix(), r.ReportID)
	var rb [12]byte
	_, _ = rand.Read(rb[:])
	boundary := "tlsrpt-" + hex.EncodeToString(rb[:])
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <%s>\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", angleList(to))
	fmt.Fprintf(&b, "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", dom, submitter, r.ReportID)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", r.ReportID, submitter)
	fmt.Fprintf(&b, "TLS-Report-Domain: %s\r\n", dom)
	fmt.Fprintf(&b, "TLS-Report-Submitter: %s\r\n", submitter)
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is an aggregate TLS report (RFC 8460) from %s for %s.\r\n\r\n", submitter, dom)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/tlsrpt+gzip\r\n", boundary)
	fmt.Fprintf(&b, "Content-Transfer-Encoding: base64\r\n")
	fmt.Fprintf(&b, "Content-Disposition: %s\r\n\r\n", mime.FormatMediaType("attachment", map[string]string{"filename": filename}))
	enc := base64.StdEncoding.EncodeToString(gz.Bytes())
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes(), nil
}

func angleList(addrs []string) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = "<" + a + ">"
	}
	return strings.Join(parts, ", ")
}
