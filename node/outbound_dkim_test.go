package node

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailcluster/mailcluster/protocols/mailauth/dnstest"
	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
)

// TestOutboundDKIMSignedAtPostfix: a message alice sends through
// submission arrives at a real Postfix with DKIM signatures (ed25519
// and rsa) of example.test that go-msgauth and OpenDKIM verify,
// resolving the keys "dkim show" prints through a real NSD.
func TestOutboundDKIMSignedAtPostfix(t *testing.T) {
	port := mtatest.FreePort(t)
	pf := mtatest.StartPostfix(t, port)
	n, cfg := outboundNode(t, port)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs, err := n.Directory().DKIMRecords(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.Name+" IN TXT "+r.ZoneData())
	}
	keysDNS := dnstest.StartNSD(t, map[string]string{"example.test": dnstest.ZoneFile("example.test", lines...)})

	if err := submit(t, n, cfg, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, "dkim1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message in Postfix's Maildir", func() bool { return len(pf.Messages(t)) >= 1 })
	got := pf.Messages(t)[0]
	msg := []byte(strings.ReplaceAll(strings.ReplaceAll(got, "\r\n", "\n"), "\n", "\r\n"))
	if c := strings.Count(got, "DKIM-Signature:"); c != 2 {
		t.Fatalf("Postfix's copy has %d DKIM-Signature fields, want 2:\n%s", c, got)
	}

	r := resolverFor(keysDNS)
	lookup := func(name string) ([]string, error) { return r.LookupTXT(ctx, name) }
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil || len(vs) != 2 {
		t.Fatalf("go-msgauth: %d verifications, %v", len(vs), err)
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "example.test" {
			t.Errorf("go-msgauth: %s: %v", v.Domain, v.Err)
		}
	}
	tampered := bytes.Replace(msg, []byte("hello from the cluster"), []byte("hello from the c1uster"), 1)
	vs, _ = dkim.VerifyWithOptions(bytes.NewReader(tampered), &dkim.VerifyOptions{LookupTXT: lookup})
	for _, v := range vs {
		if v.Err == nil {
			t.Error("go-msgauth verified a tampered body")
		}
	}

	opendkim := requireOpenDKIM(t)
	pass := regexp.MustCompile(`dkim=pass (\([^)]*\) )?header\.d=example\.test`)
	if out := openDKIMVerify(t, opendkim, keysDNS, msg); !pass.MatchString(out) {
		t.Errorf("opendkim does not verify Postfix's copy (want %q):\n%s", pass, out)
	}
	if out := openDKIMVerify(t, opendkim, keysDNS, tampered); pass.MatchString(out) && !strings.Contains(out, "dkim=fail") {
		t.Errorf("opendkim passes a tampered copy:\n%s", out)
	}
}
