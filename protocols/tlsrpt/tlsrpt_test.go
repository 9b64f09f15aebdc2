package tlsrpt

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
)

func TestParseRecord(t *testing.T) {
	got, err := ParseRecord("v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/x, MAILTO:b@example.org")
	if err != nil || strings.Join(got, ",") != "tls@example.com,b@example.org" {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "v=TLSRPTv2; rua=mailto:a@b", "v=TLSRPTv1", "v=TLSRPTv1; rua=mailto:a@b; rua=mailto:c@d", "v=TLSRPTv1; rua=mailto:not an address", "v=TLSRPTv1; junk", strings.Repeat("x", MaxRecord+1)} {
		if _, err := ParseRecord(bad); err == nil {
			t.Errorf("ParseRecord(%q) accepted", bad)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add("v=TLSRPTv1; rua=mailto:tls@example.com")
	f.Add("v=TLSRPTv1;rua=https://x,mailto:a@b;x=y")
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseRecord(s)
		if err == nil {
			for _, a := range addrs {
				if !strings.Contains(a, "@") {
					t.Fatalf("address %q", a)
				}
			}
		}
	})
}

// TestReportMessage: counted results come out as one RFC 8460 section
// 4.4 report per domain, in a multipart/report message whose
// application/tlsrpt+gzip part holds the JSON with the schema's field
// names.
func TestReportMessage(t *testing.T) {
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	c := NewCollector(start)
	sts := Policy{Type: PolicySTS, String: []string{"version: STSv1", "mode: enforce", "mx: mx.remote.test", "max_age: 86400"}, MX: []string{"mx.remote.test"}}
	c.Record("Remote.test.", sts, "mx.remote.test", "", "")
	c.Record("remote.test", sts, "mx.remote.test", "", "")
	c.Record("remote.test", sts, "mx.remote.test", "certificate-expired", "x509: certificate has expired")
	c.Record("remote.test", sts, "mx2.remote.test", "starttls-not-supported", "")
	c.Record("other.test", Policy{Type: PolicyNotFound}, "mx.other.test", "", "")
	end := start.Add(24 * time.Hour)
	reports := c.Flush(end, "mx.example.test", "postmaster@example.test")
	if len(reports) != 2 || reports[0].Domain() != "other.test" || reports[1].Domain() != "remote.test" {
		t.Fatalf("reports %+v, want other.test and remote.test", reports)
	}
	if again := c.Flush(end.Add(time.Hour), "o", "c"); len(again) != 0 {
		t.Fatalf("second flush gave %d reports, want none", len(again))
	}
	msg, err := reports[1].Message("postmaster@example.test", []string{"tls@remote.test"}, "mx.example.test", end)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("TLS-Report-Domain") != "remote.test" || m.Header.Get("TLS-Report-Submitter") != "mx.example.test" || !strings.HasPrefix(m.Header.Get("Subject"), "Report Domain: remote.test Submitter: mx.example.test Report-ID: <") {
		t.Errorf("header %v", m.Header)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("content type %q: %v", m.Header.Get("Content-Type"), err)
	}
	js := reportJSON(t, multipart.NewReader(m.Body, params["boundary"]))
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"organization-name", "date-range", "contact-info", "report-id", "policies"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("report lacks %q: %s", k, js)
		}
	}
	dr := doc["date-range"].(map[string]any)
	if dr["start-datetime"] != "2025-03-01T00:00:00Z" || dr["end-datetime"] != "2025-03-02T00:00:00Z" {
		t.Errorf("date-range %v", dr)
	}
	pol := doc["policies"].([]any)[0].(map[string]any)
	p := pol["policy"].(map[string]any)
	if p["policy-type"] != "sts" || p["policy-domain"] != "remote.test" || len(p["policy-string"].([]any)) != 4 || p["mx-host"].([]any)[0] != "mx.remote.test" {
		t.Errorf("policy %v", p)
	}
	sum := pol["summary"].(map[string]any)
	if sum["total-successful-session-count"] != 2.0 || sum["total-failure-session-count"] != 2.0 {
		t.Errorf("summary %v", sum)
	}
	fd := pol["failure-details"].([]any)
	if len(fd) != 2 {
		t.Fatalf("failure-details %v", fd)
	}
	f0 := fd[0].(map[string]any)
	if f0["result-type"] != "certificate-expired" || f0["receiving-mx-hostname"] != "mx.remote.test" || f0["failed-session-count"] != 1.0 {
		t.Errorf("failure detail %v", f0)
	}
	if fd[1].(map[string]any)["result-type"] != "starttls-not-supported" {
		t.Errorf("failure detail %v", fd[1])
	}
}

// reportJSON returns the JSON of the application/tlsrpt+gzip part of a
// report message's parts, failing t when there is none.
func reportJSON(t *testing.T, mr *multipart.Reader) []byte {
	t.Helper()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			t.Fatal("no application/tlsrpt+gzip part")
		}
		if err != nil {
			t.Fatal(err)
		}
		if part.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		if _, params, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition")); !strings.HasSuffix(params["filename"], ".json.gz") {
			t.Errorf("attachment name %q", params["filename"])
		}
		zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, part))
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

// TestStateMerge: the counts of two collectors, stored as JSON and
// merged, make the report of both; Changes moves with every change.
func TestStateMerge(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	sts := Policy{Type: PolicySTS, String: []string{"version: STSv1", "mode: enforce"}, MX: []string{"mx.a.test"}}
	a, b := NewCollector(start.Add(time.Hour)), NewCollector(start)
	a.Record("a.test", sts, "mx.a.test", "", "")
	a.Record("a.test", sts, "mx.a.test", "certificate-expired", "x")
	before := b.Changes()
	b.Record("A.test.", sts, "mx.a.test", "", "")
	b.Record("b.test", Policy{Type: PolicyNotFound}, "mx.b.test", "starttls-not-supported", "")
	if b.Changes() == before {
		t.Fatal("Changes did not move")
	}
	all := NewCollector(start.Add(24 * time.Hour))
	for _, c := range []*Collector{a, b} {
		js, err := json.Marshal(c.State())
		if err != nil {
			t.Fatal(err)
		}
		var st State
		if err := json.Unmarshal(js, &st); err != nil {
			t.Fatal(err)
		}
		all.Merge(st)
	}
	end := start.Add(24 * time.Hour)
	reports := all.Flush(end, "o", "c")
	if len(reports) != 2 || reports[0].Domain() != "a.test" || reports[1].Domain() != "b.test" {
		t.Fatalf("reports %+v", reports)
	}
	if r := reports[0]; !r.DateRange.Start.Equal(start) || len(r.Policies) != 1 || r.Policies[0].Summary.TotalSuccessful != 2 ||
		r.Policies[0].Summary.TotalFailure != 1 || strings.Join(r.Policies[0].Policy.String, "\n") != "version: STSv1\nmode: enforce" {
		t.Errorf("a.test report %+v", r)
	}
	if r := reports[1]; r.Policies[0].Policy.Type != PolicyNotFound || r.Policies[0].FailureDetails[0].ResultType != "starttls-not-supported" {
		t.Errorf("b.test report %+v", r)
	}
	if st := all.State(); len(st.Domains) != 0 || !st.Start.Equal(end) {
		t.Errorf("after Flush: %+v", st)
	}
}
