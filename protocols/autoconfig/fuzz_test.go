package autoconfig

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// FuzzAutodiscoverRequest feeds arbitrary bodies to the request parser
// and, for those it accepts, checks that the generated response is one
// well-formed document whose LoginName is the canonical address.
func FuzzAutodiscoverRequest(f *testing.F) {
	f.Add(outlookRequest("alice@example.com"))
	f.Add(outlookRequest("o&apos;brien&amp;co@example.com"))
	f.Add("<Autodiscover><Request><EMailAddress>a@b.c</EMailAddress></Request></Autodiscover><!-- x -->")
	f.Add("<Autodiscover><Request><EMailAddress><![CDATA[a<b>@example.com]]></EMailAddress></Request></Autodiscover>")
	f.Add("<Autodiscover>")
	cfg := StandardPorts("mail.example.com")
	f.Fuzz(func(t *testing.T, body string) {
		raw, err := parseAutodiscoverRequest(strings.NewReader(body))
		if err != nil {
			return
		}
		addr, _, err := schema.CanonicalAddress(raw)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := encodeXML(&buf, cfg.autodiscover(addr)); err != nil {
			t.Fatalf("encode for %q: %v", addr, err)
		}
		var resp adResponse
		if err := xml.Unmarshal(buf.Bytes(), &resp); err != nil {
			t.Fatalf("response for %q does not parse: %v\n%s", addr, err, buf.String())
		}
		for _, p := range resp.Response.Account.Protocol {
			if p.LoginName != addr {
				t.Fatalf("LoginName %q, want %q", p.LoginName, addr)
			}
		}
		var plist bytes.Buffer
		profile, _ := cfg.mobileconfig(addr, "example.com")
		if err := encodePlist(&plist, profile); err != nil {
			t.Fatalf("plist for %q: %v", addr, err)
		}
		d := parsePlist(t, plist.String())
		if got := d["PayloadContent"].([]any)[0].(map[string]any)["EmailAddress"]; got != addr {
			t.Fatalf("plist EmailAddress %q, want %q", got, addr)
		}
	})
}
