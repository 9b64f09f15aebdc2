package node

import (
	"context"
	"encoding/json"
	"fmt"
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
	for { // counted once the writer's batch returns, just after the record became readable
		v, _ := tlsMetric(t, n, `mail_node_delivery_records_total{result="written"}`)
		if v == 1 {
			break
		}
		if v > 1 || time.Now().After(deadline) {
			t.Fatalf("mail_node_delivery_records_total{result=written} = %v, want 1", v)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
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

// TestDeliveryRecordsInBatches: messages delivered at once by several
// clients all reach the recipient's records (the writers take what is
// pending as one batch) and each counts once as written.
func TestDeliveryRecordsInBatches(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	mustCLI(t, "joe-password-1\n", "user", "add", "--data", dir, "joe@example.test")
	const clients, each = 4, 5
	errs := make(chan error, clients)
	for c := range clients {
		go func() {
			cl, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			for i := range each {
				msg := fmt.Sprintf("From: <s@remote.test>\r\nTo: <joe@example.test>\r\nMessage-ID: <b%d-%d@remote.test>\r\n\r\nbody\r\n", c, i)
				if err := cl.SendMail("s@remote.test", []string{"joe@example.test"}, strings.NewReader(msg)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := n.directory.Deliveries(context.Background(), "joe@example.test", time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == clients*each {
			seen := map[string]bool{}
			for _, d := range got {
				seen[d.MessageID] = true
			}
			if len(seen) != clients*each {
				t.Fatalf("records of %d distinct messages, want %d", len(seen), clients*each)
			}
			break
		}
		if len(got) > clients*each || time.Now().After(deadline) {
			t.Fatalf("%d delivery records, want %d", len(got), clients*each)
		}
		time.Sleep(20 * time.Millisecond) // polling interval while the records are written off the delivery path
	}
	// The writer counts a batch once the directory returns, just after
	// the records became readable.
	for {
		v, _ := tlsMetric(t, n, `mail_node_delivery_records_total{result="written"}`)
		if v == clients*each {
			break
		}
		if v > clients*each || time.Now().After(deadline) {
			t.Fatalf("mail_node_delivery_records_total{result=written} = %v, want %d", v, clients*each)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}
