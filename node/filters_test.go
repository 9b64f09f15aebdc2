package node

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/filter/filtertest"
)

func TestFiltersConfig(t *testing.T) {
	good := []FiltersConfig{{}, {Rspamd: "http://127.0.0.1:11333", Clamd: "tcp://127.0.0.1:3310"},
		{Clamd: "unix:///run/clamav/clamd.ctl", OnFailure: "defer", JunkScore: 6, RejectScore: 15}}
	for _, f := range good {
		if errs := f.validate(); len(errs) > 0 {
			t.Errorf("%+v: %v", f, errs)
		}
	}
	bad := []FiltersConfig{{Rspamd: "127.0.0.1:11333"}, {Clamd: "127.0.0.1:3310"}, {Clamd: "unix://"},
		{OnFailure: "drop"}, {JunkScore: 10, RejectScore: 5}, {JunkScore: -1}}
	for _, f := range bad {
		if errs := f.validate(); len(errs) == 0 {
			t.Errorf("%+v accepted", f)
		}
	}
}

// TestNodeContentFilters: a node configured with the real clamd refuses a
// message carrying EICAR on its MX port with 554 and stores nothing;
// /readyz and /metrics show the scanner; when clamd stops answering, mail
// is accepted unscanned and /readyz says the scanner is down.
func TestNodeContentFilters(t *testing.T) {
	cfg := testConfig(t)
	cfg.Filters.Clamd = filtertest.Clamd(t)
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "bob@example.test", "bob-password"); err != nil {
		t.Fatal(err)
	}
	send := func(body string) error {
		c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), clientTLS(t, cfg))
		if err != nil {
			t.Fatalf("smtp dial: %v", err)
		}
		defer c.Close()
		msg := "From: carol@sender.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\n" + body + "\r\n"
		return c.SendMail("carol@sender.test", []string{"bob@example.test"}, strings.NewReader(msg))
	}
	var se *gosmtp.SMTPError
	if err := send("see attached " + filtertest.EICAR); !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("EICAR: %v, want 554", err)
	}
	if err := send("clean"); err != nil {
		t.Fatalf("clean message: %v", err)
	}
	if code, body := httpGet(t, n, "/readyz"); code != 200 || !strings.Contains(body, "filter clamd: ok") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if _, body := httpGet(t, n, "/metrics"); !strings.Contains(body, `mail_filter_scans_total{result="reject",scanner="clamd"} 1`) ||
		!strings.Contains(body, `mail_filter_up{scanner="clamd"} 1`) {
		t.Errorf("metrics lack the scans:\n%s", grepLines(body, "mail_filter"))
	}

	// clamd gone: accepted unscanned, reported.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	cfg2 := testConfig(t)
	cfg2.Filters.Clamd = "tcp://" + ln.Addr().String()
	n2 := startNode(t, cfg2)
	if err := n2.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n2.Directory().AddUser(ctx, "bob@example.test", "bob-password"); err != nil {
		t.Fatal(err)
	}
	n, cfg = n2, cfg2
	if err := send("unscanned"); err != nil {
		t.Fatalf("clamd down: %v, want the message accepted", err)
	}
	if code, body := httpGet(t, n2, "/readyz"); code != 200 || !strings.Contains(body, "filter clamd: DOWN") {
		t.Errorf("/readyz with clamd down: %d %q", code, body)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
