package smtp

import (
	"context"
	"net"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols/mailauth"
)

// txtZone answers TXT queries from a map and nothing else.
type txtZone map[string][]string

func (z txtZone) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := z[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (z txtZone) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (z txtZone) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (z txtZone) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

// TestSenderChecks: on the MX port a message whose From domain publishes
// p=reject and that fails SPF gets 550 5.7.1 and is not stored; one that
// passes SPF is stored with an Authentication-Results field of ours, and
// a forged one claiming to be ours is removed.
func TestSenderChecks(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	cfg.AuthCheck = &mailauth.Checker{AuthServID: "mx.example.test", Resolver: txtZone{
		"good.example":         {"v=spf1 ip4:127.0.0.1 -all"},
		"_dmarc.good.example":  {"v=DMARC1; p=reject"},
		"spoof.example":        {"v=spf1 -all"},
		"_dmarc.spoof.example": {"v=DMARC1; p=reject"},
	}}
	addr, _ := f.start(cfg, false)

	spoofed := testMessage("ceo@spoof.example", bob, "spoofed")
	wantCode(t, "p=reject", sendMX(t, addr, "ceo@spoof.example", bob, spoofed), 550, gosmtp.EnhancedCode{5, 7, 1})

	msg := "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=forged.example\r\n" + testMessage("ann@good.example", bob, "good")
	if err := sendMX(t, addr, "ann@good.example", bob, msg); err != nil {
		t.Fatalf("aligned SPF pass: %v", err)
	}
	inbox := f.inbox(bob, bobPW)
	if len(inbox) != 1 {
		t.Fatalf("INBOX has %d messages, want the good one only", len(inbox))
	}
	h := headerSection(inbox[0])
	if !strings.Contains(h, "Authentication-Results: mx.example.test;") || !strings.Contains(h, "spf=pass") ||
		!strings.Contains(h, "dmarc=pass") || strings.Contains(h, "forged.example") {
		t.Errorf("header section:\n%s", h)
	}
}
