package smtp

import (
	"strings"
	"sync"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols"
)

// deliveryRecorder keeps what the server hands its delivery log.
type deliveryRecorder struct {
	mu   sync.Mutex
	got  []protocols.DeliveryMeta
	done chan struct{}
}

func (d *deliveryRecorder) RecordDelivery(m protocols.DeliveryMeta) {
	d.mu.Lock()
	d.got = append(d.got, m)
	d.mu.Unlock()
	d.done <- struct{}{}
}

// TestDeliveryLog: an accepted and a refused message transaction are
// handed to the delivery log with their envelope, Message-ID, TLS and
// outcome; nothing of the content.
func TestDeliveryLog(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(ModeMX)
	rec := &deliveryRecorder{done: make(chan struct{}, 4)}
	cfg.DeliveryLog = rec
	addr, _ := f.start(cfg, false)
	c, err := gosmtp.DialStartTLS(addr, f.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(remote, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatal(err)
	}
	msg := "Message-ID: <log-1@remote.example>\r\n" + testMessage(remote, alice, "secret-body-marker")
	if err := sendData(c, msg); err != nil {
		t.Fatal(err)
	}
	<-rec.done
	// A header line over 998 octets is refused at DATA.
	if err := c.Mail(remote, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(alice, nil); err != nil {
		t.Fatal(err)
	}
	bad := "Message-ID: <log-2@remote.example>\r\nSubject: " + strings.Repeat("x", 2000) + "\r\n\r\nbody\r\n"
	_ = sendData(c, bad)
	<-rec.done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	a := rec.got[0]
	if a.Port != "mx" || a.From != remote || len(a.Recipients) != 1 || a.Recipients[0] != alice || a.MessageID != "<log-1@remote.example>" ||
		!strings.Contains(a.TLS, "TLS") || a.Result != protocols.DeliveryAccepted || a.Reply != "250 2.0.0" || !a.Remote.IsLoopback() || a.Time.IsZero() {
		t.Fatalf("accepted delivery %+v", a)
	}
	if b := rec.got[1]; b.Result == protocols.DeliveryAccepted || b.Reply == "" || b.MessageID != "" && b.MessageID != "<log-2@remote.example>" {
		t.Fatalf("refused delivery %+v", b)
	}
}
