package directory_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// The outbound delivery code signs through this interface.
var _ interface {
	Sign(ctx context.Context, domain string, message []byte) ([]byte, error)
} = (*directory.DKIMSigner)(nil)

const dkimTestMessage = "From: Alice <alice@example.org>\r\nTo: bob@remote.test\r\nSubject: hello there\r\n" +
	"Date: Tue, 02 Dec 2025 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\n\r\nthe body.\r\n"

// dkimLookup answers DKIM key queries from records, as DNS would.
func dkimLookup(recs []directory.DKIMRecord) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		for _, r := range recs {
			if strings.TrimSuffix(r.Name, ".") == strings.TrimSuffix(name, ".") {
				return []string{r.Value}, nil
			}
		}
		return nil, &dkimNotFound{name}
	}
}

type dkimNotFound struct{ name string }

func (e *dkimNotFound) Error() string { return "no TXT record at " + e.name }

func TestDKIMKeysSignRotateReplicate(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	ctx := testCtx(t)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	if err := n1.Directory().AddDomain(ctx, "example.org", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	// The keys were made with the domain and are read through another
	// node's replica.
	var recs []directory.DKIMRecord
	c.Eventually(30*time.Second, "DKIM records on n2", func() (err error) {
		recs, err = n2.Directory().DKIMRecords(ctx, "Example.ORG")
		return err
	})
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2: %+v", len(recs), recs)
	}
	day := time.Now().UTC().Format("20060102")
	want := map[string]string{directory.DKIMEd25519: "mc" + day + "e", directory.DKIMRSA: "mc" + day + "r"}
	for _, r := range recs {
		if r.Selector != want[r.Algorithm] || r.Name != r.Selector+"._domainkey.example.org." || !r.RetiringUntil.IsZero() {
			t.Errorf("record %+v", r)
		}
	}
	if !regexp.MustCompile(`^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$`).MatchString(recs[0].Value) {
		t.Errorf("ed25519 record %q", recs[0].Value)
	}
	if !strings.HasPrefix(recs[1].Value, "v=DKIM1; k=rsa; p=MIIBIjAN") { // a 2048-bit SubjectPublicKeyInfo
		t.Errorf("rsa record %q", recs[1].Value)
	}
	if again, err := n3.Directory().DKIMRecords(ctx, "example.org"); err != nil || again[0].Value != recs[0].Value || again[1].Value != recs[1].Value {
		t.Fatalf("n3 sees other keys (%v)", err)
	}

	// Signed through node 3, verified with go-msgauth's verifier.
	signed := sign(t, n3, "example.org", dkimTestMessage)
	checkSignatures(t, signed, recs, want[directory.DKIMEd25519], want[directory.DKIMRSA])
	tampered := bytes.Replace(signed, []byte("the body."), []byte("the b0dy."), 1)
	if err := verifyAll(tampered, recs); err == nil {
		t.Fatal("a tampered body verified")
	}
	added := append([]byte("From: mallory@evil.test\r\n"), signed...)
	if err := verifyAll(added, recs); err == nil {
		t.Fatal("a second From field verified (From is not over-signed)")
	}

	// Rotation through node 2: a new pair signs, the old one stays
	// published until the overlap ends, then it is dropped.
	rotated, err := n2.Directory().RotateDKIM(ctx, "example.org", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(rotated) != 4 {
		t.Fatalf("%d records after rotation, want 4: %+v", len(rotated), rotated)
	}
	newE, newR := rotated[0].Selector, rotated[1].Selector
	if newE != "mc"+day+"x2e" || newR != "mc"+day+"x2r" || !rotated[0].RetiringUntil.IsZero() {
		t.Fatalf("new selectors %+v", rotated[:2])
	}
	for _, r := range rotated[2:] {
		if r.RetiringUntil.IsZero() || (r.Selector != want[r.Algorithm]) {
			t.Fatalf("old record after rotation %+v", r)
		}
	}
	// Node 3's cached keys follow the rotation as soon as its replica has it.
	c.Eventually(30*time.Second, "n3 signs with the new selector", func() error {
		s := sign(t, n3, "example.org", dkimTestMessage)
		if !bytes.Contains(s, []byte("s="+newE+";")) || !bytes.Contains(s, []byte("s="+newR+";")) {
			return errors.New("still the old selectors")
		}
		return verifyAll(s, rotated)
	})
	// Mail signed before the rotation still verifies during the overlap.
	if err := verifyAll(signed, rotated); err != nil {
		t.Fatalf("old signature during the overlap: %v", err)
	}
	c.Eventually(30*time.Second, "retired selectors dropped", func() error {
		if err := n1.Directory().MaintainDKIM(ctx); err != nil {
			return err
		}
		var n int
		err := n1.Cluster().ViewMeta(func(r *raftstore.Reader) error { n = len(r.Settings("dkim/")); return nil })
		if err != nil {
			return err
		}
		recs, err := n1.Directory().DKIMRecords(ctx, "example.org")
		if err != nil {
			return err
		}
		if len(recs) != 2 || n != 1 {
			return fmt.Errorf("%d records in %d settings", len(recs), n)
		}
		return nil
	})

	// The keys survive a restart of every node.
	for _, n := range c.Nodes {
		n.Stop()
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitConverged(2 * time.Minute)
	c.Eventually(30*time.Second, "DKIM records after restart", func() error {
		after, err := n1.Directory().DKIMRecords(ctx, "example.org")
		if err != nil {
			return err
		}
		if len(after) != 2 || after[0].Selector != newE || after[0].Value != rotated[0].Value || after[1].Value != rotated[1].Value {
			return fmt.Errorf("records after restart %+v", after)
		}
		return nil
	})

	// Every node's host name, recorded through it, is read anywhere.
	for i, n := range c.Nodes {
		if err := n.Directory().SetMailHost(ctx, n.ID, fmt.Sprintf("MX%d.example.net.", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	c.Eventually(30*time.Second, "mail hosts on n3", func() error {
		hosts, err := n3.Directory().MailHosts()
		if err != nil {
			return err
		}
		if got := strings.Join(directory.SortedHosts(hosts), " "); got != "mx1.example.net mx2.example.net mx3.example.net" || hosts[n1.ID] != "mx1.example.net" {
			return fmt.Errorf("hosts %v", hosts)
		}
		return nil
	})

	// A domain the cluster does not serve is not signed.
	if out, err := n1.Directory().DKIMSigner().Sign(ctx, "elsewhere.test", []byte(dkimTestMessage)); err != nil || out != nil {
		t.Fatalf("foreign domain: %q, %v", out, err)
	}
}

// TestDKIMKeysForOlderDomains: a domain that has no keys (added before
// DKIM signing existed) gets them on first use, and in "shared" key mode
// they are sealed under the cluster key.
func TestDKIMKeysForOlderDomains(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	ctx := testCtx(t)
	d := c.Nodes[0].Directory()
	for _, dom := range []string{"shared.test", "old.test"} {
		mode := directory.KeyModeShared
		if dom == "old.test" {
			mode = directory.KeyModeDomain
		}
		if err := d.AddDomain(ctx, dom, mode, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Forget every domain's keys, as before DKIM existed.
	var keys []string
	c.Nodes[0].Cluster().ViewMeta(func(r *raftstore.Reader) error {
		for k := range r.Settings("dkim/") {
			keys = append(keys, k)
		}
		return nil
	})
	if len(keys) != 2 {
		t.Fatalf("%d DKIM settings, want 2", len(keys))
	}
	for _, k := range keys {
		if _, err := c.Nodes[0].Cluster().Apply(ctx, directory.MetaShard, &schema.PutSetting{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	// First use: a signature.
	msg := strings.ReplaceAll(dkimTestMessage, "example.org", "old.test")
	out, err := d.DKIMSigner().Sign(ctx, "old.test", []byte(msg))
	if err != nil || !bytes.Contains(out, []byte("d=old.test;")) {
		t.Fatalf("sign for a domain without keys: %q, %v", out, err)
	}
	recs, err := d.DKIMRecords(ctx, "old.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyAll(append(out, msg...), recs); err != nil {
		t.Fatal(err)
	}
	// Start-up maintenance: the shared-mode domain.
	if err := d.MaintainDKIM(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	c.Nodes[0].Cluster().ViewMeta(func(r *raftstore.Reader) error { n = len(r.Settings("dkim/")); return nil })
	if n != 2 {
		t.Fatalf("%d DKIM settings after maintenance, want 2", n)
	}
	recs, err = d.DKIMRecords(ctx, "shared.test")
	if err != nil {
		t.Fatal(err)
	}
	msg = strings.ReplaceAll(dkimTestMessage, "example.org", "shared.test")
	out = sign(t, c.Nodes[0], "shared.test", msg)
	if err := verifyAll(out, recs); err != nil {
		t.Fatal(err)
	}
	// Deleting the domain deletes its keys.
	if err := d.DeleteDomain(ctx, "shared.test"); err != nil {
		t.Fatal(err)
	}
	c.Nodes[0].Cluster().ViewMeta(func(r *raftstore.Reader) error { n = len(r.Settings("dkim/")); return nil })
	if n != 1 {
		t.Fatalf("%d DKIM settings after deleting a domain, want 1", n)
	}
	if _, err := d.RotateDKIM(ctx, "shared.test", 0); !errors.Is(err, schema.ErrNoSuchDomain) {
		t.Fatalf("rotate a deleted domain: %v", err)
	}
	if _, err := d.RotateDKIM(ctx, "old.test", -time.Hour); !errors.Is(err, schema.ErrInvalid) {
		t.Fatalf("negative overlap: %v", err)
	}
}

// sign signs msg through node n and returns the signed message.
func sign(t *testing.T, n *clustertest.Node, domain, msg string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := n.Directory().DKIMSigner().Sign(ctx, domain, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(h, []byte("\r\n")) || bytes.Count(h, []byte("DKIM-Signature:")) != 2 {
		t.Fatalf("signature fields %q", h)
	}
	return append(h, msg...)
}

// verifyAll verifies every signature of a message against recs: both
// must be there and pass.
func verifyAll(signed []byte, recs []directory.DKIMRecord) error {
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{LookupTXT: dkimLookup(recs)})
	if err != nil {
		return err
	}
	if len(vs) != 2 {
		return fmt.Errorf("%d signatures, want 2", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			return v.Err
		}
	}
	return nil
}

// checkSignatures verifies both signatures and checks their selectors,
// algorithms, canonicalization and signed fields.
func checkSignatures(t *testing.T, signed []byte, recs []directory.DKIMRecord, edSel, rsaSel string) {
	t.Helper()
	if err := verifyAll(signed, recs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a=ed25519-sha256;", "s=" + edSel + ";", "a=rsa-sha256;", "s=" + rsaSel + ";", "c=relaxed/relaxed;", "d=example.org;"} {
		if !bytes.Contains(signed, []byte(want)) {
			t.Errorf("signatures lack %q:\n%s", want, signed)
		}
	}
	vs, _ := dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{LookupTXT: dkimLookup(recs)})
	for _, v := range vs {
		got := strings.ToLower(strings.Join(v.HeaderKeys, ":"))
		if got != "from:from:to:subject:date:message-id:mime-version:content-type" {
			t.Errorf("signed fields %s", got)
		}
	}
}
