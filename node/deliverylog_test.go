package node

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/node/mailexport"
)

// TestDeliveryRecordsExported: a message delivered over the MX port is
// recorded in the recipient's delivery records (sender IP, envelope,
// Message-ID, TLS, result), written off the delivery path, and comes out
// in account.json of `user export`.
func TestDeliveryRecordsExported(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, "ivy-password-1\n", "user", "add", "--data", dir, "ivy@example.test")
	c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "From: <sender@remote.test>\r\nTo: <ivy@example.test>\r\nSubject: hi\r\nMessage-ID: <rec-1@remote.test>\r\n\r\nbody text\r\n"
	if err := c.SendMail("sender@remote.test", []string{"ivy@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := n.directory.Deliveries(context.Background(), "ivy@example.test", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery records: %+v", got)
		}
		time.Sleep(20 * time.Millisecond) // polling interval while the record is written off the delivery path
	}
	if v, _ := tlsMetric(t, n, `mail_node_delivery_records_total{result="written"}`); v != 1 {
		t.Errorf("mail_node_delivery_records_total{result=written} = %v, want 1", v)
	}
	out := filepath.Join(t.TempDir(), "ivy.tar")
	mustCLI(t, "", "user", "export", "--data", dir, "ivy@example.test", "--to", out)
	var af mailexport.AccountFile
	for _, e := range readArchive(t, out) {
		if strings.HasSuffix(e.h.Name, "/account.json") {
			if err := json.Unmarshal(e.data, &af); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(af.Deliveries) != 1 {
		t.Fatalf("account.json deliveries: %+v", af.Deliveries)
	}
	d := af.Deliveries[0]
	if d.Port != "mx" || d.Direction != "in" || d.Remote != "127.0.0.1" || d.From != "sender@remote.test" ||
		len(d.Recipients) != 1 || d.MessageID != "<rec-1@remote.test>" || !strings.Contains(d.TLS, "TLS") ||
		d.Result != "accepted" || d.Reply != "250 2.0.0" || d.Node != cfg.NodeID || d.Time.IsZero() {
		t.Fatalf("delivery record %+v", d)
	}
}
