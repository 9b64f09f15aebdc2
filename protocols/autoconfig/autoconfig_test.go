package autoconfig

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The structs below are what the clients read, written from the formats'
// documentation rather than shared with the package, so a test fails when
// the generated document drifts from the format.

// tbConfig is Thunderbird's view of a clientConfig document.
type tbConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID          string     `xml:"id,attr"`
		Domains     []string   `xml:"domain"`
		DisplayName string     `xml:"displayName"`
		Incoming    []tbServer `xml:"incomingServer"`
		Outgoing    []tbServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type tbServer struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Username       string `xml:"username"`
	Authentication string `xml:"authentication"`
}

// adResponse is Outlook's view of a POX autodiscover response.
type adResponse struct {
	XMLName  xml.Name
	Response struct {
		XMLName xml.Name
		Account struct {
			AccountType string       `xml:"AccountType"`
			Action      string       `xml:"Action"`
			Protocol    []adProtocol `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

type adProtocol struct {
	Type, Server, LoginName, SSL, Encryption, SPA, AuthRequired string
	Port                                                        int
}

// outlookRequest is the body Outlook POSTs.
func outlookRequest(addr string) string {
	return `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>` + addr + `</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`
}

// fakeDomains serves a fixed set of domains; err, when set, is every
// lookup's answer.
type fakeDomains struct {
	hosted map[string]bool
	err    error
	// lookups records every name looked up.
	lookups []string
}

func (f *fakeDomains) HostsDomain(_ context.Context, domain string) (bool, error) {
	f.lookups = append(f.lookups, domain)
	if f.err != nil {
		return false, f.err
	}
	return f.hosted[domain], nil
}

// startServer serves h's routes on a loopback HTTP server.
func startServer(t *testing.T, cfg Config, domains Domains) string {
	t.Helper()
	h, err := New(cfg, domains)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

type response struct {
	code   int
	header http.Header
	body   string
}

func do(t *testing.T, method, url, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/xml")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func query(addr string) string { return "?" + QueryAddress + "=" + url.QueryEscape(addr) }

func TestAutoconfigThunderbird(t *testing.T) {
	base := startServer(t, StandardPorts("mail.example.com"), &fakeDomains{hosted: map[string]bool{"example.com": true}})
	for _, path := range []string{PathAutoconfig, PathWellKnownAutoconfig} {
		t.Run(path, func(t *testing.T) {
			r := do(t, http.MethodGet, base+path+query("Alice@Example.COM"), "")
			if r.code != http.StatusOK {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/xml") {
				t.Errorf("Content-Type %q", ct)
			}
			var cfg tbConfig
			if err := xml.Unmarshal([]byte(r.body), &cfg); err != nil {
				t.Fatalf("parse: %v\n%s", err, r.body)
			}
			if cfg.Version != "1.1" || cfg.Provider.ID != "example.com" || len(cfg.Provider.Domains) != 1 || cfg.Provider.Domains[0] != "example.com" || cfg.Provider.DisplayName == "" {
				t.Errorf("provider: version %q id %q domains %q name %q", cfg.Version, cfg.Provider.ID, cfg.Provider.Domains, cfg.Provider.DisplayName)
			}
			wantIn := []tbServer{
				{"imap", "mail.example.com", 993, "SSL", "%EMAILADDRESS%", "password-cleartext"},
				{"imap", "mail.example.com", 143, "STARTTLS", "%EMAILADDRESS%", "password-cleartext"},
				{"pop3", "mail.example.com", 995, "SSL", "%EMAILADDRESS%", "password-cleartext"},
				{"pop3", "mail.example.com", 110, "STARTTLS", "%EMAILADDRESS%", "password-cleartext"},
			}
			wantOut := []tbServer{
				{"smtp", "mail.example.com", 465, "SSL", "%EMAILADDRESS%", "password-cleartext"},
				{"smtp", "mail.example.com", 587, "STARTTLS", "%EMAILADDRESS%", "password-cleartext"},
			}
			if fmt.Sprint(cfg.Provider.Incoming) != fmt.Sprint(wantIn) {
				t.Errorf("incoming servers\n got %+v\nwant %+v", cfg.Provider.Incoming, wantIn)
			}
			if fmt.Sprint(cfg.Provider.Outgoing) != fmt.Sprint(wantOut) {
				t.Errorf("outgoing servers\n got %+v\nwant %+v", cfg.Provider.Outgoing, wantOut)
			}
		})
	}
}

func TestAutoconfigAutodiscover(t *testing.T) {
	base := startServer(t, StandardPorts("mail.example.com"), &fakeDomains{hosted: map[string]bool{"example.com": true}})
	for _, path := range []string{PathAutodiscover, PathAutodiscoverUpper} {
		t.Run(path, func(t *testing.T) {
			r := do(t, http.MethodPost, base+path, outlookRequest("alice@example.com"))
			if r.code != http.StatusOK {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
				t.Errorf("Content-Type %q", ct)
			}
			var resp adResponse
			if err := xml.Unmarshal([]byte(r.body), &resp); err != nil {
				t.Fatalf("parse: %v\n%s", err, r.body)
			}
			if resp.XMLName.Space != NamespaceResponse || resp.XMLName.Local != "Autodiscover" {
				t.Errorf("root %v", resp.XMLName)
			}
			if resp.Response.XMLName.Space != NamespaceOutlookResponse {
				t.Errorf("Response namespace %q", resp.Response.XMLName.Space)
			}
			acct := resp.Response.Account
			if acct.AccountType != "email" || acct.Action != "settings" {
				t.Errorf("account type %q action %q", acct.AccountType, acct.Action)
			}
			want := []adProtocol{
				{Type: "IMAP", Server: "mail.example.com", LoginName: "alice@example.com", SSL: "on", Encryption: "SSL", SPA: "off", AuthRequired: "on", Port: 993},
				{Type: "SMTP", Server: "mail.example.com", LoginName: "alice@example.com", SSL: "on", Encryption: "SSL", SPA: "off", AuthRequired: "on", Port: 465},
				{Type: "POP3", Server: "mail.example.com", LoginName: "alice@example.com", SSL: "on", Encryption: "SSL", SPA: "off", AuthRequired: "on", Port: 995},
			}
			if fmt.Sprint(acct.Protocol) != fmt.Sprint(want) {
				t.Errorf("protocols\n got %+v\nwant %+v", acct.Protocol, want)
			}
		})
	}
}

// parsePlist reads an XML property list into Go values: map[string]any,
// []any, string, int, bool.
func parsePlist(t *testing.T, doc string) map[string]any {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(doc))
	var sawDoctype bool
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("no <plist>: %v", err)
		}
		switch tok := tok.(type) {
		case xml.Directive:
			sawDoctype = strings.HasPrefix(string(tok), "DOCTYPE plist")
		case xml.StartElement:
			if tok.Name.Local != "plist" {
				t.Fatalf("root <%s>", tok.Name.Local)
			}
			if !sawDoctype {
				t.Error("no plist DOCTYPE")
			}
			v, err := plistValue(dec)
			if err != nil {
				t.Fatalf("plist: %v", err)
			}
			d, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("top level is %T, want a dict", v)
			}
			return d
		}
	}
}

// plistValue reads the next value element and its end.
func plistValue(dec *xml.Decoder) (any, error) {
	var start xml.StartElement
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if s, ok := tok.(xml.StartElement); ok {
			start = s
			break
		}
		if _, ok := tok.(xml.EndElement); ok {
			return nil, io.EOF // end of the enclosing dict or array
		}
	}
	switch start.Name.Local {
	case "string", "integer", "key":
		var s string
		if err := dec.DecodeElement(&s, &start); err != nil {
			return nil, err
		}
		if start.Name.Local == "integer" {
			return strconv.Atoi(s)
		}
		if start.Name.Local == "key" {
			return plistKey(s), nil
		}
		return s, nil
	case "true", "false":
		return start.Name.Local == "true", dec.Skip()
	case "dict":
		d := map[string]any{}
		for {
			k, err := plistValue(dec)
			if err == io.EOF {
				return d, nil
			}
			if err != nil {
				return nil, err
			}
			key, ok := k.(plistKey)
			if !ok {
				return nil, fmt.Errorf("dict entry %v without <key>", k)
			}
			v, err := plistValue(dec)
			if err != nil {
				return nil, fmt.Errorf("value of %q: %v", key, err)
			}
			if _, dup := d[string(key)]; dup {
				return nil, fmt.Errorf("key %q twice", key)
			}
			d[string(key)] = v
		}
	case "array":
		var a []any
		for {
			v, err := plistValue(dec)
			if err == io.EOF {
				return a, nil
			}
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	}
	return nil, fmt.Errorf("unexpected <%s>", start.Name.Local)
}

type plistKey string

func TestAutoconfigMobileconfig(t *testing.T) {
	base := startServer(t, StandardPorts("mail.example.com"), &fakeDomains{hosted: map[string]bool{"example.com": true}})
	r := do(t, http.MethodGet, base+PathMobileconfig+query("alice@example.com"), "")
	if r.code != http.StatusOK {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/x-apple-aspen-config" {
		t.Errorf("Content-Type %q", ct)
	}
	disp, params, err := mime.ParseMediaType(r.header.Get("Content-Disposition"))
	if err != nil || disp != "attachment" || params["filename"] != "example.com.mobileconfig" {
		t.Errorf("Content-Disposition %q (%v)", r.header.Get("Content-Disposition"), err)
	}
	top := parsePlist(t, r.body)
	for k, want := range map[string]any{"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadRemovalDisallowed": false} {
		if top[k] != want {
			t.Errorf("profile %s = %v, want %v", k, top[k], want)
		}
	}
	for _, k := range []string{"PayloadIdentifier", "PayloadUUID", "PayloadDisplayName"} {
		if s, _ := top[k].(string); s == "" {
			t.Errorf("profile has no %s", k)
		}
	}
	content, _ := top["PayloadContent"].([]any)
	if len(content) != 1 {
		t.Fatalf("PayloadContent %v, want one payload", top["PayloadContent"])
	}
	acct, _ := content[0].(map[string]any)
	want := map[string]any{
		"PayloadType":                            "com.apple.mail.managed",
		"PayloadVersion":                         1,
		"EmailAccountType":                       "EmailTypeIMAP",
		"EmailAddress":                           "alice@example.com",
		"IncomingMailServerHostName":             "mail.example.com",
		"IncomingMailServerPortNumber":           993,
		"IncomingMailServerUseSSL":               true,
		"IncomingMailServerUsername":             "alice@example.com",
		"IncomingMailServerAuthentication":       "EmailAuthPassword",
		"OutgoingMailServerHostName":             "mail.example.com",
		"OutgoingMailServerPortNumber":           465,
		"OutgoingMailServerUseSSL":               true,
		"OutgoingMailServerUsername":             "alice@example.com",
		"OutgoingMailServerAuthentication":       "EmailAuthPassword",
		"OutgoingPasswordSameAsIncomingPassword": true,
	}
	for k, v := range want {
		if acct[k] != v {
			t.Errorf("payload %s = %v, want %v", k, acct[k], v)
		}
	}
	if acct["PayloadUUID"] == top["PayloadUUID"] || acct["PayloadIdentifier"] == top["PayloadIdentifier"] {
		t.Error("payload and profile share an identifier")
	}
	// Stable: the same address gets the same identifiers (a second
	// install replaces the account), another address others.
	again := parsePlist(t, do(t, http.MethodGet, base+PathMobileconfig+query("alice@example.com"), "").body)
	other := parsePlist(t, do(t, http.MethodGet, base+PathMobileconfig+query("bob@example.com"), "").body)
	if again["PayloadUUID"] != top["PayloadUUID"] || other["PayloadUUID"] == top["PayloadUUID"] {
		t.Errorf("UUIDs: %v, again %v, other address %v", top["PayloadUUID"], again["PayloadUUID"], other["PayloadUUID"])
	}
}

// TestAutoconfigAdvertisedPorts: the configured ports are advertised
// whatever the node listens on, and a port of 0 leaves a service out of
// every document.
func TestAutoconfigAdvertisedPorts(t *testing.T) {
	cfg := Config{Host: "imap.example.net", IMAP: 1143, Submission: 2587}
	base := startServer(t, cfg, nil)

	var tb tbConfig
	r := do(t, http.MethodGet, base+PathAutoconfig+query("carol@example.org"), "")
	if err := xml.Unmarshal([]byte(r.body), &tb); err != nil || r.code != http.StatusOK {
		t.Fatalf("autoconfig %d: %v\n%s", r.code, err, r.body)
	}
	if len(tb.Provider.Incoming) != 1 || tb.Provider.Incoming[0].Port != 1143 || tb.Provider.Incoming[0].SocketType != "STARTTLS" || tb.Provider.Incoming[0].Hostname != "imap.example.net" {
		t.Errorf("incoming %+v", tb.Provider.Incoming)
	}
	if len(tb.Provider.Outgoing) != 1 || tb.Provider.Outgoing[0].Port != 2587 || tb.Provider.Outgoing[0].SocketType != "STARTTLS" {
		t.Errorf("outgoing %+v", tb.Provider.Outgoing)
	}

	var ad adResponse
	r = do(t, http.MethodPost, base+PathAutodiscover, outlookRequest("carol@example.org"))
	if err := xml.Unmarshal([]byte(r.body), &ad); err != nil || r.code != http.StatusOK {
		t.Fatalf("autodiscover %d: %v\n%s", r.code, err, r.body)
	}
	want := []adProtocol{
		{Type: "IMAP", Server: "imap.example.net", LoginName: "carol@example.org", SSL: "on", Encryption: "TLS", SPA: "off", AuthRequired: "on", Port: 1143},
		{Type: "SMTP", Server: "imap.example.net", LoginName: "carol@example.org", SSL: "on", Encryption: "TLS", SPA: "off", AuthRequired: "on", Port: 2587},
	}
	if fmt.Sprint(ad.Response.Account.Protocol) != fmt.Sprint(want) {
		t.Errorf("protocols\n got %+v\nwant %+v", ad.Response.Account.Protocol, want)
	}

	r = do(t, http.MethodGet, base+PathMobileconfig+query("carol@example.org"), "")
	if r.code != http.StatusOK {
		t.Fatalf("mobileconfig %d: %s", r.code, r.body)
	}
	acct := parsePlist(t, r.body)["PayloadContent"].([]any)[0].(map[string]any)
	if acct["IncomingMailServerPortNumber"] != 1143 || acct["OutgoingMailServerPortNumber"] != 2587 {
		t.Errorf("mobileconfig ports %v, %v", acct["IncomingMailServerPortNumber"], acct["OutgoingMailServerPortNumber"])
	}

	// POP3 only: the profile is a POP account.
	base = startServer(t, Config{Host: "mail.example.net", POP3S: 995, Submissions: 465}, nil)
	acct = parsePlist(t, do(t, http.MethodGet, base+PathMobileconfig+query("carol@example.org"), "").body)["PayloadContent"].([]any)[0].(map[string]any)
	if acct["EmailAccountType"] != "EmailTypePOP" || acct["IncomingMailServerPortNumber"] != 995 {
		t.Errorf("POP3-only profile: type %v port %v", acct["EmailAccountType"], acct["IncomingMailServerPortNumber"])
	}
	// Nothing to send with: no profile.
	base = startServer(t, Config{Host: "mail.example.net", IMAPS: 993}, nil)
	if r := do(t, http.MethodGet, base+PathMobileconfig+query("carol@example.org"), ""); r.code != http.StatusNotFound {
		t.Errorf("profile without SMTP: status %d", r.code)
	}
}

// TestAutoconfigEscaping: characters XML gives a meaning to travel as
// text, and come back out of each document as they went in.
func TestAutoconfigEscaping(t *testing.T) {
	base := startServer(t, StandardPorts("mail.example.com"), nil)
	addr := "o'brien&co@example.com"

	var ad adResponse
	body := outlookRequest("o&apos;brien&amp;co@example.com")
	r := do(t, http.MethodPost, base+PathAutodiscover, body)
	if err := xml.Unmarshal([]byte(r.body), &ad); err != nil || r.code != http.StatusOK {
		t.Fatalf("autodiscover %d: %v\n%s", r.code, err, r.body)
	}
	if got := ad.Response.Account.Protocol[0].LoginName; got != addr {
		t.Errorf("LoginName %q, want %q", got, addr)
	}

	r = do(t, http.MethodGet, base+PathMobileconfig+query(addr), "")
	if r.code != http.StatusOK {
		t.Fatalf("mobileconfig %d: %s", r.code, r.body)
	}
	acct := parsePlist(t, r.body)["PayloadContent"].([]any)[0].(map[string]any)
	if acct["EmailAddress"] != addr || acct["IncomingMailServerUsername"] != addr {
		t.Errorf("EmailAddress %q, username %q, want %q", acct["EmailAddress"], acct["IncomingMailServerUsername"], addr)
	}
}

func TestAutoconfigBadInput(t *testing.T) {
	domains := &fakeDomains{hosted: map[string]bool{"example.com": true}}
	base := startServer(t, StandardPorts("mail.example.com"), domains)
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"autoconfig without address", "GET", PathAutoconfig, "", 400},
		{"autoconfig empty address", "GET", PathAutoconfig + "?emailaddress=", "", 400},
		{"autoconfig two addresses", "GET", PathAutoconfig + "?emailaddress=a@example.com&emailaddress=b@example.com", "", 400},
		{"autoconfig no at", "GET", PathWellKnownAutoconfig + query("alice"), "", 400},
		{"autoconfig no domain", "GET", PathAutoconfig + query("alice@"), "", 400},
		{"autoconfig markup", "GET", PathAutoconfig + query("<a>@example.com"), "", 400},
		{"autoconfig newline", "GET", PathAutoconfig + query("a\r\nb@example.com"), "", 400},
		{"autoconfig too long", "GET", PathAutoconfig + query(strings.Repeat("a", 300)+"@example.com"), "", 400},
		{"autoconfig unicode domain", "GET", PathAutoconfig + query("a@exämple.com"), "", 400},
		{"autoconfig POST", "POST", PathAutoconfig + query("alice@example.com"), "", 405},
		{"mobileconfig without address", "GET", PathMobileconfig, "", 400},
		{"mobileconfig invalid", "GET", PathMobileconfig + query("alice@@example.com"), "", 400},
		{"autodiscover empty body", "POST", PathAutodiscover, "", 400},
		{"autodiscover not XML", "POST", PathAutodiscover, "EMailAddress=alice@example.com", 400},
		{"autodiscover unclosed", "POST", PathAutodiscover, "<Autodiscover><Request><EMailAddress>alice@example.com</EMailAddress></Request>", 400},
		{"autodiscover mismatched", "POST", PathAutodiscover, "<Autodiscover><Request></Autodiscover></Request>", 400},
		{"autodiscover wrong root", "POST", PathAutodiscover, "<Request><EMailAddress>alice@example.com</EMailAddress></Request>", 400},
		{"autodiscover no address", "POST", PathAutodiscover, outlookRequest(""), 400},
		{"autodiscover invalid address", "POST", PathAutodiscover, outlookRequest("alice at example.com"), 400},
		{"autodiscover two roots", "POST", PathAutodiscover, outlookRequest("alice@example.com") + "<Autodiscover/>", 400},
		{"autodiscover trailing text", "POST", PathAutodiscover, outlookRequest("alice@example.com") + "junk", 400},
		{"autodiscover entity", "POST", PathAutodiscover, `<!DOCTYPE a [<!ENTITY x "alice@example.com">]><Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>`, 400},
		{"autodiscover oversized", "POST", PathAutodiscover, "<Autodiscover><!--" + strings.Repeat("x", MaxRequestBytes) + "--></Autodiscover>", 413},
		{"autodiscover GET", "GET", PathAutodiscover, "", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			domains.lookups = nil
			r := do(t, tt.method, base+tt.path, tt.body)
			if r.code != tt.want {
				t.Errorf("status %d, want %d: %s", r.code, tt.want, r.body)
			}
			if len(domains.lookups) != 0 {
				t.Errorf("bad input looked up %q", domains.lookups)
			}
		})
	}
}

// TestAutoconfigDomainCheck: an address of a domain the cluster does not
// serve gets 404; a served domain answers the same whether or not the
// user exists, because only the domain is ever looked up.
func TestAutoconfigDomainCheck(t *testing.T) {
	domains := &fakeDomains{hosted: map[string]bool{"example.com": true}}
	base := startServer(t, StandardPorts("mail.example.com"), domains)

	for _, path := range []string{PathAutoconfig, PathWellKnownAutoconfig, PathMobileconfig} {
		if r := do(t, http.MethodGet, base+path+query("alice@example.org"), ""); r.code != http.StatusNotFound {
			t.Errorf("GET %s for another domain: status %d", path, r.code)
		}
	}
	if r := do(t, http.MethodPost, base+PathAutodiscover, outlookRequest("alice@example.org")); r.code != http.StatusNotFound {
		t.Errorf("autodiscover for another domain: status %d", r.code)
	}

	domains.lookups = nil
	a := do(t, http.MethodGet, base+PathAutoconfig+query("alice@example.com"), "")
	b := do(t, http.MethodGet, base+PathAutoconfig+query("no-such-user@EXAMPLE.com"), "")
	if a.code != http.StatusOK || a.body != b.body {
		t.Errorf("answers differ between users of one domain:\n%d %s\n%d %s", a.code, a.body, b.code, b.body)
	}
	if fmt.Sprint(domains.lookups) != "[example.com example.com]" {
		t.Errorf("lookups %q, want the canonical domain only", domains.lookups)
	}

	domains.err = fmt.Errorf("meta leader gone: %w", schema.ErrUnavailable)
	if r := do(t, http.MethodGet, base+PathAutoconfig+query("alice@example.com"), ""); r.code != http.StatusServiceUnavailable {
		t.Errorf("directory unavailable: status %d", r.code)
	}
	domains.err = errors.New("disk on fire")
	if r := do(t, http.MethodGet, base+PathAutoconfig+query("alice@example.com"), ""); r.code != http.StatusInternalServerError || strings.Contains(r.body, "fire") {
		t.Errorf("lookup error: status %d body %q", r.code, r.body)
	}
}

func TestAutoconfigCheck(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Host: "mail example.com"},
		{Host: "mail.example.com", IMAPS: 70000},
		{Host: "mail.example.com", POP3: -1},
	} {
		if _, err := New(cfg, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v): %v, want ErrConfig", cfg, err)
		}
	}
}

func TestDNSRecords(t *testing.T) {
	cfg := StandardPorts("mail.example.com")
	cfg.POP3 = 0
	recs, err := cfg.DNSRecords("Example.COM")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.Name+" "+r.Type+" "+r.Data)
	}
	want := []string{
		"_imaps._tcp.example.com. SRV 0 1 993 mail.example.com.",
		"_imap._tcp.example.com. SRV 10 1 143 mail.example.com.",
		"_pop3s._tcp.example.com. SRV 20 1 995 mail.example.com.",
		"_pop3._tcp.example.com. SRV 0 0 0 .",
		"_submissions._tcp.example.com. SRV 0 1 465 mail.example.com.",
		"_submission._tcp.example.com. SRV 10 1 587 mail.example.com.",
		"autoconfig.example.com. CNAME mail.example.com.",
		"autodiscover.example.com. CNAME mail.example.com.",
		"_autodiscover._tcp.example.com. SRV 0 1 443 mail.example.com.",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("records\n got %s\nwant %s", strings.Join(lines, "\n     "), strings.Join(want, "\n     "))
	}
	if s := recs[0].String(); s != "_imaps._tcp.example.com. 3600 IN SRV 0 1 993 mail.example.com. ; IMAP implicit TLS" {
		t.Errorf("zone line %q", s)
	}
	for _, bad := range []string{"", "localhost", "exa mple.com", "-x.com"} {
		if _, err := cfg.DNSRecords(bad); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("DNSRecords(%q): %v, want ErrInvalid", bad, err)
		}
	}
}
