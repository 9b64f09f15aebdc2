package node

import (
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocols/autoconfig"
)

func TestAutoconfigConfig(t *testing.T) {
	cfg := Default()
	cfg.Hostname = "node1.example.com"
	got := cfg.advertised()
	if want := autoconfig.StandardPorts("node1.example.com"); got != want {
		t.Errorf("default: advertised %+v, want the standard ports on hostname %+v", got, want)
	}

	cfg, err := Parse("test", []byte(`
hostname = "node1.example.com"
[listen]
pop3 = ""
[autoconfig]
host = "mail.example.com"
imaps_port = 10993
pop3s_port = 0
`))
	if err != nil {
		t.Fatal(err)
	}
	want := autoconfig.Config{Host: "mail.example.com", IMAPS: 10993, IMAP: 143, Submissions: 465, Submission: 587}
	if got := cfg.advertised(); got != want {
		t.Errorf("advertised %+v, want %+v (pop3 listener off, pop3s port 0)", got, want)
	}

	for _, doc := range []string{
		`autoconfig.host = "bad host"`,
		`autoconfig.imap_port = 70000`,
		`autoconfig.submission_port = -1`,
	} {
		cfg, err := Parse("test", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DataDir = t.TempDir()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "autoconfig.") {
			t.Errorf("%s: Validate() = %v, want an autoconfig error", doc, err)
		}
	}
	if _, err := Parse("test", []byte(`autoconfig.hostname = "x"`)); err == nil {
		t.Error("unknown autoconfig key accepted")
	}
}

// TestAutoconfigServedByNode fetches each document from a started node's
// HTTP listener as the clients do: only for a domain the directory
// serves, whether or not the user exists.
func TestAutoconfigServedByNode(t *testing.T) {
	cfg := testConfig(t)
	cfg.Autoconfig.Host = "mail.example.test"
	cfg.Autoconfig.IMAPSPort = 10993
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Directory().AddDomain(ctx, "example.test", "", ""); err != nil {
		t.Fatal(err)
	}
	base := "http://" + n.Addr(ListenHTTP).String()
	client := &http.Client{Timeout: 10 * time.Second}
	fetch := func(method, path, body string) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "autoconfig.example.test"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b), resp.Header
	}
	q := func(addr string) string { return "?emailaddress=" + url.QueryEscape(addr) }

	// Thunderbird.
	var tb struct {
		Provider struct {
			ID       string `xml:"id,attr"`
			Incoming []struct {
				Type       string `xml:"type,attr"`
				Hostname   string `xml:"hostname"`
				Port       int    `xml:"port"`
				SocketType string `xml:"socketType"`
				Username   string `xml:"username"`
			} `xml:"incomingServer"`
			Outgoing []struct {
				Hostname   string `xml:"hostname"`
				Port       int    `xml:"port"`
				SocketType string `xml:"socketType"`
			} `xml:"outgoingServer"`
		} `xml:"emailProvider"`
	}
	code, body, _ := fetch("GET", "/mail/config-v1.1.xml"+q("nobody@example.test"), "")
	if code != http.StatusOK {
		t.Fatalf("autoconfig: %d %s", code, body)
	}
	if err := xml.Unmarshal([]byte(body), &tb); err != nil {
		t.Fatalf("autoconfig: %v\n%s", err, body)
	}
	in, out := tb.Provider.Incoming, tb.Provider.Outgoing
	if tb.Provider.ID != "example.test" || len(in) != 4 || len(out) != 2 ||
		in[0].Hostname != "mail.example.test" || in[0].Port != 10993 || in[0].SocketType != "SSL" || in[0].Username != "%EMAILADDRESS%" ||
		in[1].Port != 143 || in[1].SocketType != "STARTTLS" || in[2].Type != "pop3" || in[2].Port != 995 ||
		out[0].Port != 465 || out[0].SocketType != "SSL" || out[1].Port != 587 || out[1].SocketType != "STARTTLS" {
		t.Errorf("autoconfig document:\n%s", body)
	}
	if code, _, _ := fetch("GET", "/.well-known/autoconfig/mail/config-v1.1.xml"+q("alice@EXAMPLE.test"), ""); code != http.StatusOK {
		t.Errorf("well-known autoconfig: %d", code)
	}

	// Outlook.
	var ad struct {
		Response struct {
			Account struct {
				Protocol []struct {
					Type      string
					Server    string
					Port      int
					LoginName string
				}
			}
		}
	}
	req := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.test</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	code, body, _ = fetch("POST", "/autodiscover/autodiscover.xml", req)
	if code != http.StatusOK {
		t.Fatalf("autodiscover: %d %s", code, body)
	}
	if err := xml.Unmarshal([]byte(body), &ad); err != nil {
		t.Fatalf("autodiscover: %v\n%s", err, body)
	}
	p := ad.Response.Account.Protocol
	if len(p) != 3 || p[0].Type != "IMAP" || p[0].Port != 10993 || p[0].Server != "mail.example.test" || p[0].LoginName != "alice@example.test" ||
		p[1].Type != "SMTP" || p[1].Port != 465 || p[2].Type != "POP3" || p[2].Port != 995 {
		t.Errorf("autodiscover protocols %+v", p)
	}

	// Apple.
	code, body, h := fetch("GET", "/apple/mobileconfig"+q("alice@example.test"), "")
	if code != http.StatusOK || h.Get("Content-Type") != "application/x-apple-aspen-config" || !strings.Contains(h.Get("Content-Disposition"), "example.test.mobileconfig") {
		t.Fatalf("mobileconfig: %d %v", code, h)
	}
	for _, want := range []string{"<string>com.apple.mail.managed</string>", "<string>mail.example.test</string>", "<integer>10993</integer>", "<string>alice@example.test</string>"} {
		if !strings.Contains(body, want) {
			t.Errorf("mobileconfig lacks %s", want)
		}
	}
	if err := xml.Unmarshal([]byte(body), new(struct{})); err != nil {
		t.Errorf("mobileconfig is not well-formed: %v", err)
	}

	// Refusals: a domain not served, bad input.
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/mail/config-v1.1.xml" + q("alice@other.test"), "", 404},
		{"GET", "/apple/mobileconfig" + q("alice@other.test"), "", 404},
		{"POST", "/Autodiscover/Autodiscover.xml", strings.Replace(req, "example.test", "other.test", 1), 404},
		{"GET", "/mail/config-v1.1.xml", "", 400},
		{"GET", "/mail/config-v1.1.xml" + q("not-an-address"), "", 400},
		{"POST", "/autodiscover/autodiscover.xml", "<Autodiscover><Request>", 400},
		{"POST", "/autodiscover/autodiscover.xml", "<Autodiscover><Request><!--" + strings.Repeat("x", 70000) + "-->", 413},
		{"POST", "/autodiscover/autodiscover.xml", strings.Repeat("<a>", 20000), 400},
	} {
		if code, body, _ := fetch(tt.method, tt.path, tt.body); code != tt.want {
			t.Errorf("%s %s: %d %q, want %d", tt.method, tt.path, code, body, tt.want)
		}
	}
	// The other endpoints are still there.
	if code, _ := httpGet(t, n, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
}

func TestCLIDomainDNS(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailnode.toml")
	if err := os.WriteFile(path, []byte(`
hostname = "node1.example.com"
[listen]
pop3 = ""
[autoconfig]
host = "mail.example.com"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, "", "domain", "dns", "--config", path, "Example.ORG")
	for _, want := range []string{
		"_imaps._tcp.example.org. 3600 IN SRV 0 1 993 mail.example.com.",
		"_imap._tcp.example.org. 3600 IN SRV 10 1 143 mail.example.com.",
		"_pop3s._tcp.example.org. 3600 IN SRV 20 1 995 mail.example.com.",
		"_pop3._tcp.example.org. 3600 IN SRV 0 0 0 .",
		"_submissions._tcp.example.org. 3600 IN SRV 0 1 465 mail.example.com.",
		"_submission._tcp.example.org. 3600 IN SRV 10 1 587 mail.example.com.",
		"autoconfig.example.org. 3600 IN CNAME mail.example.com.",
		"autodiscover.example.org. 3600 IN CNAME mail.example.com.",
		"_autodiscover._tcp.example.org. 3600 IN SRV 0 1 443 mail.example.com.",
	} {
		if !strings.Contains(out, want+" ;") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if out := mustCLI(t, "", "domain", "dns", "example.org", "--host", "imap.example.net"); !strings.Contains(out, "_imaps._tcp.example.org. 3600 IN SRV 0 1 993 imap.example.net.") {
		t.Errorf("--host: %s", out)
	}
	failCLI(t, ExitUsage, "takes 1 argument", "", "domain", "dns")
	failCLI(t, ExitError, "invalid", "", "domain", "dns", "not a domain")
	failCLI(t, ExitError, "autoconfig.host", "", "domain", "dns", "--host", "bad_host", "example.org")
}
