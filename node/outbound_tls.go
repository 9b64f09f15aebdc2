package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocols/mtasts"
	"github.com/mailcluster/mailcluster/protocols/outbound"
	"github.com/mailcluster/mailcluster/protocols/tlsrpt"
)

// maxCAFile bounds outbound.ca_file.
const maxCAFile = 4 << 20

// loadCAFile reads a PEM file of root certificates.
func loadCAFile(path string) (*x509.CertPool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxCAFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxCAFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificates", path)
	}
	return pool, nil
}

// Policy names of TLS decisions, in logs and metrics (TLSPolicy.Reason).
const (
	tlsPolicyNone       = "none"
	tlsPolicyTesting    = "mta-sts-testing"
	tlsPolicyEnforce    = "mta-sts-enforce"
	tlsPolicyRequireTLS = outbound.ReasonRequireTLS
	tlsPolicyREQUIRETLS = outbound.ReasonREQUIRETLS
)

// tlsPolicy is the node's TLS decision for outbound connections from
// the recipient domain's MTA-STS policy (RFC 8461); the deliverer adds
// outbound.require_tls and REQUIRETLS on top.
type tlsPolicy struct {
	sts        *mtasts.Client
	log        *slog.Logger
	tlsResults *prometheus.CounterVec
	// rpt counts results for the daily TLS reports (RFC 8460).
	rpt *tlsrpt.Collector

	mu sync.Mutex
	// policies is the MTA-STS policy last used per domain, for the
	// reports of the connections made under it.
	policies map[string]tlsrpt.Policy
}

// maxReportPolicies bounds tlsPolicy.policies.
const maxReportPolicies = 10000

// reportPolicy is p as a TLS report names it.
func reportPolicy(p *mtasts.Policy) tlsrpt.Policy {
	return tlsrpt.Policy{Type: tlsrpt.PolicySTS, String: strings.Split(strings.TrimRight(p.Text(), "\r\n"), "\n"), MX: p.MX}
}

// remember keeps the policy used for a domain.
func (t *tlsPolicy) remember(domain string, p tlsrpt.Policy) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.policies) >= maxReportPolicies {
		t.policies = map[string]tlsrpt.Policy{}
	}
	t.policies[domain] = p
}

// policyOf is the report policy of connections to domain under reason.
func (t *tlsPolicy) policyOf(domain, reason string) tlsrpt.Policy {
	if reason != tlsPolicyEnforce && reason != tlsPolicyTesting {
		return tlsrpt.Policy{Type: tlsrpt.PolicyNotFound}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.policies[domain]; ok {
		return p
	}
	return tlsrpt.Policy{Type: tlsrpt.PolicySTS}
}

// decide is outbound.Config.TLSPolicy. An enforce-mode policy refuses
// an MX it does not list and requires verified TLS to one it lists; a
// testing-mode policy delivers as without one but checks and reports;
// a policy that cannot be fetched counts as none (RFC 8461 section
// 5.1).
func (t *tlsPolicy) decide(ctx context.Context, domain, mx string) outbound.TLSPolicy {
	var out outbound.TLSPolicy
	p, err := t.sts.Lookup(ctx, domain)
	if err != nil {
		kind := "sts-policy-fetch-error"
		var certErr *tls.CertificateVerificationError
		switch {
		case errors.Is(err, mtasts.ErrInvalid):
			kind = "sts-policy-invalid"
		case errors.As(err, &certErr):
			kind = "sts-webpki-invalid"
		}
		t.log.Warn("MTA-STS policy lookup failed; delivering without it", "domain", domain, "result", kind, "err", err)
		t.tlsResults.WithLabelValues(tlsPolicyNone, kind).Inc()
		t.rpt.Record(domain, tlsrpt.Policy{Type: tlsrpt.PolicySTS}, mx, kind, "")
		return out
	}
	if p == nil || p.Mode == mtasts.ModeNone {
		return out
	}
	allowed := p.Allowed(mx)
	rp := reportPolicy(p)
	t.remember(domain, rp)
	switch {
	case p.Enforced() && !allowed:
		t.log.Warn("MX not listed in the enforced MTA-STS policy; not used", "domain", domain, "mx", mx)
		t.tlsResults.WithLabelValues(tlsPolicyEnforce, "validation-failure").Inc()
		t.rpt.Record(domain, rp, mx, outbound.ResultValidationFailure, "MX not listed in the policy")
		out.Refuse = "not listed in the MTA-STS policy of " + domain
		out.Reason = tlsPolicyEnforce
	case p.Enforced():
		out.Require, out.Verify, out.Reason = true, true, tlsPolicyEnforce
	default: // testing
		if !allowed {
			t.log.Warn("MX not listed in the MTA-STS policy (testing mode); delivering", "domain", domain, "mx", mx)
			t.tlsResults.WithLabelValues(tlsPolicyTesting, "validation-failure").Inc()
			t.rpt.Record(domain, rp, mx, outbound.ResultValidationFailure, "MX not listed in the policy")
		}
		out.Check, out.Reason = true, tlsPolicyTesting
	}
	return out
}

// record is outbound.Config.OnTLS: each connection's TLS outcome goes
// to the metrics, and a failure under a policy to the log.
func (t *tlsPolicy) record(domain, mx string, p outbound.TLSPolicy, r outbound.TLSResult) {
	kind := p.Reason
	if kind == "" {
		kind = tlsPolicyNone
	}
	result := r.Failure
	if result == "" {
		result = "success"
	}
	t.tlsResults.WithLabelValues(kind, result).Inc()
	t.rpt.Record(domain, t.policyOf(domain, p.Reason), mx, r.Failure, r.Detail)
	if r.Failure != "" && kind != tlsPolicyNone {
		t.log.Warn("TLS with the destination failed its policy", "domain", domain, "mx", mx, "policy", kind, "result", r.Failure, "detail", r.Detail)
	}
}

// outboundTLS is the counter of outbound TLS outcomes by policy and
// result (mail_outbound_tls_total).
func (n *Node) outboundTLS() *prometheus.CounterVec { return n.outTLS.tlsResults }
