package mailauth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
)

// zone is a resolver over fixed TXT records; a name in fail answers with
// a temporary DNS error.
type zone struct {
	txt  map[string][]string
	fail bool
}

func (z zone) LookupTXT(_ context.Context, name string) ([]string, error) {
	if z.fail {
		return nil, &net.DNSError{Err: "timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if v, ok := z.txt[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (z zone) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (z zone) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (z zone) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

// signed returns a message from ann@<from> signed by domain d with key.
func signed(t *testing.T, from, d string, key ed25519.PrivateKey, body string) []byte {
	t.Helper()
	msg := "From: Ann <ann@" + from + ">\r\nTo: bob@example.org\r\nSubject: hi\r\nMessage-ID: <1@" + from + ">\r\n\r\n" + body + "\r\n"
	var out bytes.Buffer
	if err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: d, Selector: "sel", Signer: key}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestCheck(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dkimRecord := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	z := zone{txt: map[string][]string{
		"example.net":                         {"v=spf1 ip4:192.0.2.0/24 -all"},
		"sel._domainkey.example.net":          {dkimRecord},
		"_dmarc.example.net":                  {"v=DMARC1; p=reject"},
		"quarantine.example":                  {"v=spf1 -all"},
		"_dmarc.quarantine.example":           {"v=DMARC1; p=quarantine"},
		"relaxed.example":                     {"v=spf1 ip4:192.0.2.1 -all"},
		"_dmarc.relaxed.example":              {"v=DMARC1; p=reject; sp=quarantine"},
		"sel._domainkey.mail.relaxed.example": {dkimRecord},
	}}
	c := &Checker{Resolver: z, AuthServID: "mx.example.test"}
	ctx := context.Background()
	good := netip.MustParseAddr("192.0.2.7")
	bad := netip.MustParseAddr("198.51.100.1")

	// SPF and DKIM pass, aligned: DMARC passes.
	r := c.Check(ctx, good, "mail.example.net", "ann@example.net", signed(t, "example.net", "example.net", key, "hello"))
	if r.SPF != authres.ResultPass || len(r.DKIM) != 1 || r.DKIM[0].Value != authres.ResultPass || r.DMARC != authres.ResultPass || r.Action != Deliver {
		t.Fatalf("all pass: %+v", r)
	}
	h := string(r.Header)
	for _, want := range []string{"Authentication-Results: mx.example.test;", "spf=pass", "smtp.mailfrom=example.net", "dkim=pass", "header.d=example.net", "dmarc=pass", "header.from=example.net"} {
		if !strings.Contains(h, want) {
			t.Errorf("header %q lacks %q", h, want)
		}
	}
	// From a foreign address, SPF fails but the aligned signature passes DMARC.
	if r := c.Check(ctx, bad, "x", "ann@example.net", signed(t, "example.net", "example.net", key, "hello")); r.SPF != authres.ResultFail || r.DMARC != authres.ResultPass || r.Action != Deliver {
		t.Errorf("spf fail, dkim pass: %+v", r)
	}
	// A tampered body fails DKIM; with SPF failing too, p=reject refuses it.
	msg := signed(t, "example.net", "example.net", key, "hello")
	msg = bytes.Replace(msg, []byte("hello"), []byte("HELLO"), 1)
	if r := c.Check(ctx, bad, "x", "ann@example.net", msg); r.DKIM[0].Value != authres.ResultFail || r.DMARC != authres.ResultFail || r.Action != Reject {
		t.Errorf("tampered: %+v", r)
	}
	// p=quarantine sends a failing message to Junk.
	if r := c.Check(ctx, good, "x", "ann@quarantine.example", []byte("From: ann@quarantine.example\r\n\r\nx\r\n")); r.Action != Quarantine || r.Policy != "quarantine" {
		t.Errorf("quarantine: %+v", r)
	}
	// Relaxed alignment: a signature of a subdomain aligns with the
	// organizational domain; a failing subdomain sender gets sp=.
	if r := c.Check(ctx, bad, "x", "ann@relaxed.example", signed(t, "relaxed.example", "mail.relaxed.example", key, "x")); r.DMARC != authres.ResultPass {
		t.Errorf("relaxed DKIM alignment: %+v", r)
	}
	if r := c.Check(ctx, bad, "x", "ann@sub.relaxed.example", []byte("From: ann@sub.relaxed.example\r\n\r\nx\r\n")); r.Action != Quarantine || r.Policy != "quarantine" {
		t.Errorf("subdomain policy: %+v", r)
	}
	// No DMARC record: nothing is refused.
	if r := c.Check(ctx, bad, "x", "a@nowhere.example", []byte("From: a@nowhere.example\r\n\r\nx\r\n")); r.DMARC != authres.ResultNone || r.Action != Deliver {
		t.Errorf("no policy: %+v", r)
	}
	// DNS down: temporary errors, the message is delivered.
	down := &Checker{Resolver: zone{fail: true}, AuthServID: "mx.example.test"}
	if r := down.Check(ctx, good, "x", "ann@example.net", signed(t, "example.net", "example.net", key, "x")); r.SPF != authres.ResultTempError ||
		r.DMARC != authres.ResultTempError || r.Action != Deliver {
		t.Errorf("DNS down: %+v", r)
	}
}

func TestStripOurs(t *testing.T) {
	msg := []byte("Authentication-Results: mx.example.test;\r\n spf=pass smtp.mailfrom=forged.example\r\n" +
		"Authentication-Results: other.example; dkim=pass header.d=x.example\r\nSubject: s\r\n\r\nbody\r\n")
	got := string(StripOurs(msg, "MX.example.test"))
	if strings.Contains(got, "forged.example") || !strings.Contains(got, "other.example") || !strings.HasSuffix(got, "Subject: s\r\n\r\nbody\r\n") {
		t.Errorf("stripped: %q", got)
	}
	plain := []byte("Subject: s\r\n\r\nbody\r\n")
	if got := StripOurs(plain, "mx.example.test"); !bytes.Equal(got, plain) {
		t.Errorf("a message without the field changed: %q", got)
	}
}

func FuzzStripOurs(f *testing.F) {
	f.Add([]byte("Authentication-Results: mx.example.test; spf=pass\r\nSubject: s\r\n\r\nbody\r\n"))
	f.Add([]byte("Authentication-Results: \r\n\t\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out := StripOurs(msg, "mx.example.test")
		if len(out) > len(msg) {
			t.Fatalf("stripping grew the message: %d > %d", len(out), len(msg))
		}
	})
}
