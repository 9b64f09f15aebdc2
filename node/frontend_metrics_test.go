package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols"
)

// labelPair matches one label of a series in the text format.
var labelPair = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// metricSum adds up the samples of name in a /metrics body whose labels
// include every label of want; found is false when none matches.
func metricSum(body, name string, want map[string]string) (sum float64, found bool) {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		// Label values may hold spaces ("TLS 1.3", "UID FETCH"); the
		// value is after the last one.
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		base, labels, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		got := map[string]string{}
		for _, m := range labelPair.FindAllStringSubmatch(labels, -1) {
			got[m[1]] = m[2]
		}
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		sum, found = sum+v, true
	}
	return sum, found
}

// TestFrontendMetricsSeries checks the observers the node hands to the
// frontends: series exist at 0 from the start, names outside a
// frontend's list count as other, TLS labels are crypto/tls names or
// other, and a closed connection leaves the open gauge.
func TestFrontendMetricsSeries(t *testing.T) {
	m := newMetrics("n1", "test")
	f := m.frontend
	cmds := f.commands("pop3", []string{"USER", "PASS"})
	cmds.Command("USER", true, 2*time.Millisecond)
	cmds.Command("PASS", false, time.Second)
	cmds.Command("X-ATTACK-1", false, 0)
	cmds.Command("X-ATTACK-2", false, 0)
	d := f.deliveries("mx")
	d.Delivery(protocols.ClassifyReply(250, [3]int{2, 0, 0}))
	d.Delivery(protocols.ClassifyReply(451, [3]int{4, 3, 0}))
	d.Delivery("odd", "odd")
	l := f.listener("pop3", "pop3s")
	l.ConnOpened()
	l.ConnOpened()
	l.ConnClosed()
	l.BytesRead(10)
	l.BytesWritten(200)
	l.TLSEstablished(tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256)
	l.TLSEstablished(tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256)
	l.TLSEstablished(0x0999, 0xfefe)

	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, fam := range families {
		for _, s := range fam.GetMetric() {
			name := fam.GetName()
			for _, lp := range s.GetLabel() {
				name += " " + lp.GetName() + "=" + lp.GetValue()
			}
			switch {
			case s.Counter != nil:
				got[name] = s.GetCounter().GetValue()
			case s.Gauge != nil:
				got[name] = s.GetGauge().GetValue()
			case s.Histogram != nil:
				got[name+" count"] = float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"mail_frontend_commands_total command=USER protocol=pop3 result=ok":                                              1,
		"mail_frontend_commands_total command=USER protocol=pop3 result=error":                                           0,
		"mail_frontend_commands_total command=PASS protocol=pop3 result=error":                                           1,
		"mail_frontend_commands_total command=other protocol=pop3 result=error":                                          2,
		"mail_frontend_command_duration_seconds command=PASS protocol=pop3 count":                                        1,
		"mail_frontend_command_duration_seconds command=other protocol=pop3 count":                                       2,
		"mail_smtp_deliveries_total mode=mx reason=none result=accepted":                                                 1,
		"mail_smtp_deliveries_total mode=mx reason=system result=temporary":                                              1,
		"mail_smtp_deliveries_total mode=mx reason=other result=permanent":                                               1,
		"mail_smtp_deliveries_total mode=mx reason=policy result=permanent":                                              0,
		"mail_frontend_connections_total listener=pop3s protocol=pop3":                                                   2,
		"mail_frontend_connections_open listener=pop3s protocol=pop3":                                                    1,
		"mail_frontend_received_bytes_total listener=pop3s protocol=pop3":                                                10,
		"mail_frontend_sent_bytes_total listener=pop3s protocol=pop3":                                                    200,
		"mail_frontend_tls_connections_total cipher=TLS_AES_128_GCM_SHA256 listener=pop3s protocol=pop3 version=TLS 1.3": 2,
		"mail_frontend_tls_connections_total cipher=other listener=pop3s protocol=pop3 version=other":                    1,
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (exported %v), want %v", name, g, ok, v)
		}
	}
	// Bounded: 3 command names, 17 delivery series.
	count := func(prefix string) int {
		n := 0
		for name := range got {
			if strings.HasPrefix(name, prefix) {
				n++
			}
		}
		return n
	}
	if n := count("mail_frontend_commands_total "); n != 6 {
		t.Errorf("%d command series, want 6", n)
	}
	if n := count("mail_smtp_deliveries_total "); n != 17 {
		t.Errorf("%d delivery series, want 17", n)
	}
}

// TestFrontendMetricsEndToEnd delivers a message over SMTP with
// STARTTLS, reads it over IMAP and POP3, and checks that /metrics shows
// the new series with the counts and labels of what happened.
func TestFrontendMetricsEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Directory().AddUser(ctx, "bob@example.test", "bob-password"); err != nil {
		t.Fatal(err)
	}
	tlsCfg := clientTLS(t, cfg)

	c, err := gosmtp.DialStartTLS(n.Addr(ListenSMTP).String(), tlsCfg)
	if err != nil {
		t.Fatalf("smtp dial: %v", err)
	}
	msg := "From: carol@sender.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\nHello Bob.\r\n"
	if err := c.SendMail("carol@sender.test", []string{"bob@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("quit: %v", err)
	}

	ic, err := imapclient.DialTLS(n.Addr(ListenIMAPS).String(), &imapclient.Options{TLSConfig: tlsCfg})
	if err != nil {
		t.Fatalf("imap dial: %v", err)
	}
	if err := ic.Login("bob@example.test", "wrong-password").Wait(); err == nil {
		t.Fatal("IMAP login with a wrong password succeeded")
	}
	if err := ic.Login("bob@example.test", "bob-password").Wait(); err != nil {
		t.Fatalf("imap login: %v", err)
	}
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("select: %v", err)
	}
	if err := ic.Logout().Wait(); err != nil {
		t.Fatalf("logout: %v", err)
	}
	ic.Close()

	conn, err := tls.Dial("tcp", n.Addr(ListenPOP3S).String(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	for _, line := range []string{"", "USER bob@example.test", "PASS bob-password", "XYZZY", "QUIT"} {
		if line != "" {
			tp.PrintfLine("%s", line)
		}
		if _, err := tp.ReadLine(); err != nil {
			t.Fatalf("pop3 %q: %v", line, err)
		}
	}
	conn.Close()

	type series struct {
		name   string
		labels map[string]string
		want   float64
	}
	want := []series{
		{"mail_smtp_deliveries_total", map[string]string{"mode": "mx", "result": "accepted", "reason": "none"}, 1},
		{"mail_smtp_deliveries_total", map[string]string{"mode": "mx", "result": "permanent"}, 0},
		{"mail_smtp_deliveries_total", map[string]string{"mode": "submission"}, 0},
		{"mail_frontend_commands_total", map[string]string{"protocol": "smtp", "command": "STARTTLS", "result": "ok"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "smtp", "command": "MAIL", "result": "ok"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "smtp", "command": "RCPT", "result": "ok"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "smtp", "command": "DATA", "result": "ok"}, 1},
		{"mail_frontend_command_duration_seconds_count", map[string]string{"protocol": "smtp", "command": "DATA"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "imap", "command": "LOGIN", "result": "error"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "imap", "command": "LOGIN", "result": "ok"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "imap", "command": "SELECT", "result": "ok"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "pop3", "command": "PASS", "result": "ok"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "pop3", "command": "other", "result": "error"}, 1},
		{"mail_frontend_commands_total", map[string]string{"protocol": "pop3", "command": "QUIT", "result": "ok"}, 1},
		{"mail_auth_successes_total", map[string]string{"protocol": "imap"}, 1},
		{"mail_auth_successes_total", map[string]string{"protocol": "pop3"}, 1},
		{"mail_auth_successes_total", map[string]string{"protocol": "smtp"}, 0},
		{"mail_auth_failures_total", map[string]string{"protocol": "imap", "reason": "credentials"}, 1},
		{"mail_frontend_connections_total", map[string]string{"protocol": "smtp", "listener": ListenSMTP}, 1},
		{"mail_frontend_connections_total", map[string]string{"protocol": "imap", "listener": ListenIMAPS}, 1},
		{"mail_frontend_connections_total", map[string]string{"protocol": "pop3", "listener": ListenPOP3S}, 1},
		{"mail_frontend_connections_total", map[string]string{"protocol": "smtp", "listener": ListenSubmission}, 0},
		{"mail_frontend_connections_open", map[string]string{}, 0},
		{"mail_frontend_tls_connections_total", map[string]string{"protocol": "smtp", "listener": ListenSMTP, "version": "TLS 1.3"}, 1},
		{"mail_frontend_tls_connections_total", map[string]string{"protocol": "imap", "listener": ListenIMAPS, "version": "TLS 1.3"}, 1},
		{"mail_frontend_tls_connections_total", map[string]string{"protocol": "pop3", "listener": ListenPOP3S}, 1},
	}
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = httpGet(t, n, "/metrics")
		var missing []string
		for _, s := range want {
			if got, found := metricSum(body, s.name, s.labels); !found || got != s.want {
				missing = append(missing, fmt.Sprintf("%s%v = %v (found %v), want %v", s.name, s.labels, got, found, s.want))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics:\n%s\n%s", strings.Join(missing, "\n"), grepLines(body, "mail_frontend_commands_total"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The message was received as ciphertext over STARTTLS: more bytes
	// than the message itself.
	if got, _ := metricSum(body, "mail_frontend_received_bytes_total", map[string]string{"listener": ListenSMTP}); got <= float64(len(msg)) {
		t.Errorf("SMTP listener received %v bytes, less than the message", got)
	}
	if got, _ := metricSum(body, "mail_frontend_sent_bytes_total", map[string]string{"listener": ListenPOP3S}); got == 0 {
		t.Errorf("POP3S listener sent nothing")
	}
	// Neither the password nor the message's content appear.
	for _, secret := range []string{"bob-password", "Hello Bob", "bob@example.test", "wrong-password"} {
		if strings.Contains(body, secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
}

// TestFrontendMetricsHotPathAllocs checks that counting a command, the
// bytes of a read or write, and a TLS handshake of a kind already seen
// allocate nothing: the label children are resolved in advance.
func TestFrontendMetricsHotPathAllocs(t *testing.T) {
	f := newMetrics("n1", "test").frontend
	cmds := f.commands("imap", []string{"FETCH", "UID FETCH"})
	l := f.listener("imap", "imaps")
	d := f.deliveries("mx")
	l.TLSEstablished(tls.VersionTLS13, tls.TLS_AES_256_GCM_SHA384)
	for name, fn := range map[string]func(){
		"command":   func() { cmds.Command("UID FETCH", true, time.Millisecond) },
		"unknown":   func() { cmds.Command("NOT-A-COMMAND", false, time.Millisecond) },
		"bytes":     func() { l.BytesRead(512); l.BytesWritten(4096) },
		"tls":       func() { l.TLSEstablished(tls.VersionTLS13, tls.TLS_AES_256_GCM_SHA384) },
		"delivery":  func() { d.Delivery(protocols.DeliveryPermanent, protocols.ClassPolicy) },
		"open/shut": func() { l.ConnOpened(); l.ConnClosed() },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}
