package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/mtasts"
)

const dkimNodeMessage = "From: Alice <alice@example.org>\r\nTo: Bob <bob@remote.test>\r\nCc: carol@remote.test\r\n" +
	"Subject: DKIM test\r\nDate: Tue, 02 Dec 2025 10:00:00 +0000\r\nMessage-ID: <dkim-1@example.org>\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\n\r\nthe signed body.\r\n"

// TestDKIMAndDomainDNSCommands: the keys made with a domain are shown,
// rotated (the old pair listed as retiring until the end of the
// overlap), and "domain dns" prints every record a domain needs, the
// MTA-STS id matching the policy the HTTP listener serves.
func TestDKIMAndDomainDNSCommands(t *testing.T) {
	cfg := testConfig(t)
	cfg.Hostname = "mx1.example.net"
	cfg.MTASTS = MTASTSConfig{Mode: "enforce", MaxAge: 24 * time.Hour}
	n := startNode(t, cfg)
	dir := cfg.DataDir
	mustCLI(t, "", "domain", "add", "--data", dir, "example.org")
	day := time.Now().UTC().Format("20060102")

	out := mustCLI(t, "", "dkim", "show", "--data", dir, "Example.org")
	for _, want := range []string{
		`mc` + day + `e._domainkey.example.org. 3600 IN TXT "v=DKIM1; k=ed25519; p=`,
		`mc` + day + `r._domainkey.example.org. 3600 IN TXT "v=DKIM1; k=rsa; p=MIIBIjAN`,
		"; ed25519-sha256, signing", "; rsa-sha256, signing",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dkim show lacks %q:\n%s", want, out)
		}
	}
	// A 2048-bit RSA key is longer than one TXT string: split in quoted
	// strings of at most 255 bytes.
	if !regexp.MustCompile(`"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]{237}" "[A-Za-z0-9+/=]+"`).MatchString(out) {
		t.Errorf("rsa record not split into strings:\n%s", out)
	}

	out = mustCLI(t, "", "dkim", "rotate", "--data", dir, "--overlap", "48h", "example.org")
	until := time.Now().Add(48 * time.Hour).UTC().Format(time.DateOnly)
	if !strings.Contains(out, "now signs with mc"+day+"x2e and mc"+day+"x2r") {
		t.Errorf("dkim rotate:\n%s", out)
	}
	out = mustCLI(t, "", "dkim", "show", "--data", dir, "example.org")
	if strings.Count(out, "retiring until "+until) != 2 || strings.Count(out, ", signing") != 2 ||
		!strings.Contains(out, "mc"+day+"x2e._domainkey") || !strings.Contains(out, "mc"+day+"e._domainkey") {
		t.Errorf("dkim show after rotate:\n%s", out)
	}
	var recs []directory.DKIMRecord
	if err := json.Unmarshal([]byte(mustCLI(t, "", "dkim", "show", "--json", "--data", dir, "example.org")), &recs); err != nil || len(recs) != 4 {
		t.Fatalf("dkim show --json: %d records, %v", len(recs), err)
	}
	failCLI(t, ExitError, "example.com", "", "dkim", "show", "--data", dir, "example.com")
	failCLI(t, ExitUsage, "show or rotate", "", "dkim", "list", "--data", dir, "example.org")
	failCLI(t, ExitUsage, "positive", "", "dkim", "rotate", "--overlap", "-1h", "--data", dir, "example.org")

	out = mustCLI(t, "", "domain", "dns", "--data", dir, "example.org")
	served := fetchPolicy(t, n, "mta-sts.example.org")
	for _, want := range []string{
		"example.org. 3600 IN MX 10 mx1.example.net.",
		`example.org. 3600 IN TXT "v=spf1 mx -all"`,
		"mc" + day + "x2e._domainkey.example.org. 3600 IN TXT",
		"mc" + day + "x2r._domainkey.example.org. 3600 IN TXT",
		"mc" + day + "e._domainkey.example.org. 3600 IN TXT",
		"retiring until " + until,
		`_dmarc.example.org. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"`,
		`_mta-sts.example.org. 3600 IN TXT "v=STSv1; id=` + served.TextID() + `"`,
		"mta-sts.example.org. 3600 IN CNAME mx1.example.net.",
		`_smtp._tls.example.org. 3600 IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example.org"`,
		"_imaps._tcp.example.org. 3600 IN SRV 0 1 993 mx1.example.net.",
		"; Mail client discovery for example.org (RFC 6186, RFC 8314): clients connect to mx1.example.net.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("domain dns lacks %q:\n%s", want, out)
		}
	}
	if served.Mode != mtasts.ModeEnforce || strings.Join(served.MX, " ") != "mx1.example.net" || served.MaxAge != 24*time.Hour {
		t.Errorf("served policy %+v", served)
	}
	var all []dnsRecord
	if err := json.Unmarshal([]byte(mustCLI(t, "", "domain", "dns", "--json", "--data", dir, "example.org")), &all); err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, r := range all {
		types[r.Type]++
	}
	if types["MX"] != 1 || types["TXT"] != 8 || types["SRV"] < 6 || types["CNAME"] != 3 {
		t.Errorf("domain dns --json: %v", types)
	}
	failCLI(t, ExitError, "example.com", "", "domain", "dns", "--data", dir, "example.com")
	// Without a node to ask: the client records, and what is missing.
	r := runCLI(t, context.Background(), "", "domain", "dns", "--data", t.TempDir(), "example.org")
	if r.code != ExitError || !strings.Contains(r.stderr, "no node") {
		t.Errorf("domain dns against no node: exit %d, %q", r.code, r.stderr)
	}

	// A host that is not mta-sts of a served domain gets no policy.
	for _, host := range []string{"mta-sts.example.com", "example.org", "mx1.example.net"} {
		if code := policyStatus(t, n, host); code != http.StatusNotFound {
			t.Errorf("policy for host %s: status %d, want 404", host, code)
		}
	}
}

func TestMTASTSConfig(t *testing.T) {
	for _, c := range []struct {
		m  MTASTSConfig
		ok bool
	}{
		{MTASTSConfig{}, true},
		{MTASTSConfig{Mode: "none", MaxAge: 24 * time.Hour}, true},
		{MTASTSConfig{Mode: "strict"}, false},
		{MTASTSConfig{MaxAge: time.Minute}, false},
		{MTASTSConfig{MaxAge: 400 * 24 * time.Hour}, false},
	} {
		cfg := testConfig(t)
		cfg.MTASTS = c.m
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v, want ok=%v", c.m, err, c.ok)
		}
	}
	cfg, err := Parse("test.toml", []byte("[mta_sts]\nmode = \"enforce\"\nmax_age = \"720h\"\n"))
	if err != nil || cfg.MTASTS.Mode != "enforce" || cfg.MTASTS.MaxAge != 720*time.Hour {
		t.Fatalf("parse [mta_sts]: %+v, %v", cfg.MTASTS, err)
	}
}

// fetchPolicy fetches the MTA-STS policy from the node's HTTP listener
// as host.
func fetchPolicy(t *testing.T, n *Node, host string) *mtasts.Policy {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr(ListenHTTP).String()+mtasts.PolicyPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, mtasts.MaxPolicySize))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("policy of %s: %s %q", host, resp.Status, resp.Header.Get("Content-Type"))
	}
	p, err := mtasts.Parse(body)
	if err != nil {
		t.Fatalf("served policy %q: %v", body, err)
	}
	return p
}

func policyStatus(t *testing.T, n *Node, host string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.Addr(ListenHTTP).String()+mtasts.PolicyPath, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDKIMVerifiedByOpenDKIM signs a message with the node's signer and
// has OpenDKIM (Debian's opendkim, in its test mode, resolving through a
// real NSD that serves the records "dkim show" prints) and go-msgauth
// verify both signatures; a tampered body fails both.
func TestDKIMVerifiedByOpenDKIM(t *testing.T) {
	opendkim := requireOpenDKIM(t)
	cfg := testConfig(t)
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Directory().AddDomain(ctx, "example.org", "", ""); err != nil {
		t.Fatal(err)
	}
	recs, err := n.Directory().DKIMRecords(ctx, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.Name+" IN TXT "+r.ZoneData())
	}
	dns := dnstest.StartNSD(t, map[string]string{"example.org": dnstest.ZoneFile("example.org", lines...)})

	fields, err := n.Directory().DKIMSigner().Sign(ctx, "example.org", []byte(dkimNodeMessage))
	if err != nil {
		t.Fatal(err)
	}
	signed := append(fields, dkimNodeMessage...)
	tampered := bytes.Replace(signed, []byte("the signed body"), []byte("the signed b0dy"), 1)

	// go-msgauth, resolving through NSD too.
	r := resolverFor(dns)
	lookup := func(name string) ([]string, error) { return r.LookupTXT(ctx, name) }
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil || len(vs) != 2 {
		t.Fatalf("go-msgauth: %d verifications, %v", len(vs), err)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("go-msgauth: %v", v.Err)
		}
	}
	vs, _ = dkim.VerifyWithOptions(bytes.NewReader(tampered), &dkim.VerifyOptions{LookupTXT: lookup})
	for _, v := range vs {
		if v.Err == nil {
			t.Error("go-msgauth verified a tampered body")
		}
	}

	// OpenDKIM: each signature on its own, so that a pass of one cannot
	// hide a failure of the other.
	ed, rsa := splitSignatures(t, fields)
	for _, c := range []struct {
		name, selector string
		field          []byte
	}{{"ed25519", recs[0].Selector, ed}, {"rsa", recs[1].Selector, rsa}} {
		msg := append(append([]byte(nil), c.field...), dkimNodeMessage...)
		pass := regexp.MustCompile(`dkim=pass (\([^)]*\) )?header\.d=example\.org header\.i=@example\.org header\.a=` + c.name + `-sha256 header\.s=` + c.selector + " ")
		if out := openDKIMVerify(t, opendkim, dns, msg); !pass.MatchString(out) {
			t.Errorf("opendkim does not verify the %s signature (want %q):\n%s", c.name, pass, out)
		}
		bad := bytes.Replace(msg, []byte("the signed body"), []byte("the signed b0dy"), 1)
		if out := openDKIMVerify(t, opendkim, dns, bad); !strings.Contains(out, "dkim=fail") {
			t.Errorf("opendkim does not fail the %s signature of a tampered body:\n%s", c.name, out)
		}
	}
}

// splitSignatures returns the ed25519 and rsa DKIM-Signature fields of
// what Sign returned.
func splitSignatures(t *testing.T, fields []byte) (ed, rsa []byte) {
	t.Helper()
	parts := bytes.SplitAfter(fields, []byte("\r\nDKIM-Signature:"))
	if len(parts) != 2 {
		t.Fatalf("want two signature fields: %q", fields)
	}
	first := bytes.TrimSuffix(parts[0], []byte("DKIM-Signature:"))
	second := append([]byte("DKIM-Signature:"), parts[1]...)
	for _, f := range [][]byte{first, second} {
		switch {
		case bytes.Contains(f, []byte("a=ed25519-sha256")):
			ed = f
		case bytes.Contains(f, []byte("a=rsa-sha256")):
			rsa = f
		}
	}
	if ed == nil || rsa == nil {
		t.Fatalf("signature fields %q", fields)
	}
	return ed, rsa
}

// requireOpenDKIM returns the opendkim binary; it skips when OpenDKIM is
// missing unless MAILCLUSTER_REQUIRE_OPENDKIM is set.
func requireOpenDKIM(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"opendkim", "/usr/sbin/opendkim"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	if os.Getenv("MAILCLUSTER_REQUIRE_OPENDKIM") != "" {
		t.Fatal("opendkim is required (MAILCLUSTER_REQUIRE_OPENDKIM): install the opendkim and opendkim-tools packages")
	}
	t.Skip("opendkim not installed")
	return ""
}

// openDKIMVerify runs OpenDKIM's test mode on msg, resolving through the
// DNS server at dns (its unbound resolver, configured to ask that server
// for everything), and returns its output: the Authentication-Results
// field it would add says pass or fail.
func openDKIMVerify(t *testing.T, bin, dns string, msg []byte) string {
	t.Helper()
	dir := t.TempDir()
	host, port, _ := strings.Cut(dns, ":")
	// "test." is one of unbound's default local zones (RFC 6761); it is
	// switched off so that test domains are asked of NSD.
	unbound := fmt.Sprintf("server:\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n  local-zone: \"test.\" nodefault\nforward-zone:\n  name: \".\"\n  forward-addr: %s@%s\n", host, port)
	conf := fmt.Sprintf("Mode v\nResolverConfiguration %s\nSyslog no\nCanonicalization relaxed/relaxed\nAlwaysAddARHeader yes\nAuthservID test.invalid\n",
		filepath.Join(dir, "unbound.conf"))
	msgFile := filepath.Join(dir, "msg.eml")
	for name, body := range map[string][]byte{"unbound.conf": []byte(unbound), "opendkim.conf": []byte(conf), "msg.eml": msg} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-x", filepath.Join(dir, "opendkim.conf"), "-t", msgFile, "-vvv")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim: %v\n%s", err, out)
	}
	return string(out)
}

// resolverFor returns a resolver asking the DNS server at addr.
func resolverFor(addr string) *net.Resolver {
	return DNSConfig{Servers: []string{addr}}.resolver()
}
