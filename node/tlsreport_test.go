package node

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
	"github.com/mailcluster/mailcluster/protocols/tlsrpt"
)

// TestTLSRPTReportDelivered: remote.test publishes a testing-mode
// MTA-STS policy and a _smtp._tls record; its MX (smtp-sink) has no
// STARTTLS. alice's message is delivered anyway, and at the end of the
// (shortened) report period the node sends the RFC 8460 aggregate
// report from the postmaster to the rua address through its own queue:
// the sink receives a multipart/report whose gzip'd JSON names the
// policy and counts the starttls-not-supported session.
func TestTLSRPTReportDelivered(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	stsPort, stsCert := policyServer(t, map[string]string{
		"remote.test": "version: STSv1\nmode: testing\nmx: mx.remote.test\nmax_age: 86400\n",
	})
	zone := dnstest.ZoneFile("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.1", "mta-sts IN A 127.0.0.1",
		`_mta-sts IN TXT "v=STSv1; id=20250101T000000"`, `_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@remote.test"`)
	dns := dnstest.StartNSD(t, map[string]string{"remote.test": zone})
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}
	cfg.Postmaster = "alice@example.test"
	cfg.Outbound = OutboundConfig{Port: port, MTASTSPort: stsPort, CAFile: writeCAFile(t, stsCert),
		RetryBase: 300 * time.Millisecond, Poll: 200 * time.Millisecond, TLSReportEvery: 2 * time.Second}
	n := startNode(t, cfg)
	addAlice(t, n)
	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "rpt1"); err != nil {
		t.Fatal(err)
	}
	var report string
	waitFor(t, "the TLS report at the sink", func() bool {
		for _, m := range sink.Messages(t) {
			if strings.Contains(m, "TLS-Report-Domain: remote.test") {
				report = m
				return true
			}
		}
		return false
	})
	if !strings.Contains(report, "X-Rcpt-Args: <tlsrpt@remote.test>") || !strings.Contains(report, "X-Mail-Args: <alice@example.test>") {
		t.Errorf("report envelope:\n%s", report)
	}
	var rep tlsrpt.Report
	if err := json.Unmarshal(reportJSONOf(t, report), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.OrganizationName != cfg.Hostname || rep.ContactInfo != "alice@example.test" || rep.ReportID == "" || !rep.DateRange.End.After(rep.DateRange.Start) {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Policies) != 1 {
		t.Fatalf("report policies %+v, want the MTA-STS one", rep.Policies)
	}
	p := rep.Policies[0]
	if p.Policy.Type != "sts" || p.Policy.Domain != "remote.test" || strings.Join(p.Policy.MXHost, ",") != "mx.remote.test" || !strings.Contains(strings.Join(p.Policy.String, "\n"), "mode: testing") {
		t.Errorf("policy %+v", p.Policy)
	}
	if p.Summary.TotalFailure < 1 || len(p.FailureDetails) == 0 || p.FailureDetails[0].ResultType != "starttls-not-supported" || p.FailureDetails[0].ReceivingMX != "mx.remote.test" {
		t.Errorf("results %+v", p)
	}
}

// addAlice adds example.test and alice.
func addAlice(t *testing.T, n *Node) {
	t.Helper()
	ctx := t.Context()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "alice@example.test", "alice-password"); err != nil {
		t.Fatal(err)
	}
}

// reportJSONOf returns the JSON in the application/tlsrpt+gzip part of
// a report as smtp-sink dumped it.
func reportJSONOf(t *testing.T, dump string) []byte {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(dump))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("report content type %q", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no application/tlsrpt+gzip part: %v", err)
		}
		if part.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		raw, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, part))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		js, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
}

// TestTLSRPTPeriod: reports cover UTC days (RFC 8460 section 4.1).
func TestTLSRPTPeriod(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	now := time.Date(2025, 3, 1, 0, 30, 0, 0, berlin) // 2025-02-28T23:30Z
	if got, want := nextReport(now, 0), time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("next report after %s: %s, want %s", now, got, want)
	}
	// A shortened period ends at the next multiple of it, the same on
	// every node.
	if got, want := nextReport(now.Add(10*time.Second), time.Minute), now.Add(time.Minute); !got.Equal(want) {
		t.Errorf("shortened period: %s, want %s", got, want)
	}
}

// TestTLSRPTCountsSurviveRestart: the counts a node stored in the meta
// shard come back after the node restarts, and go into the report.
func TestTLSRPTCountsSurviveRestart(t *testing.T) {
	port := mtatest.FreePort(t)
	sink := mtatest.StartSink(t, port)
	zone := dnstest.ZoneFile("remote.test", "@ IN MX 10 mx.remote.test.", "mx IN A 127.0.0.1",
		`_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@remote.test"`)
	dns := dnstest.StartNSD(t, map[string]string{"remote.test": zone})
	cfg := testConfig(t)
	cfg.DNS = DNSConfig{Servers: []string{dns}, Timeout: 2 * time.Second}
	cfg.Postmaster = "alice@example.test"
	cfg.Outbound = OutboundConfig{Port: port, RetryBase: 300 * time.Millisecond, Poll: 200 * time.Millisecond,
		TLSReportEvery: 6 * time.Second, TLSReportSave: 100 * time.Millisecond}
	n := startNode(t, cfg)
	addAlice(t, n)
	n.outTLS.rpt.Record("remote.test", tlsrpt.Policy{Type: tlsrpt.PolicyNotFound}, "mx.remote.test", "validation-failure", "before the restart")
	waitFor(t, "the counts stored", func() bool {
		counts, err := n.Directory().TLSReportCounts(t.Context())
		return err == nil && len(counts) > 0
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	startNode(t, cfg)
	var report string
	waitFor(t, "the TLS report at the sink", func() bool {
		for _, m := range sink.Messages(t) {
			if strings.Contains(m, "TLS-Report-Domain: remote.test") {
				report = m
				return true
			}
		}
		return false
	})
	var rep tlsrpt.Report
	if err := json.Unmarshal(reportJSONOf(t, report), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Policies) != 1 || len(rep.Policies[0].FailureDetails) != 1 || rep.Policies[0].FailureDetails[0].AdditionalInfo != "before the restart" {
		t.Fatalf("report %+v, want the count from before the restart", rep.Policies)
	}
}
