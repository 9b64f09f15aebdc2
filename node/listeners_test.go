package node

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
)

// Shortened client timeouts for the listener tests: long enough for a
// TLS handshake on a loaded test machine, short enough to keep them fast.
const (
	testHandshakeTimeout = 500 * time.Millisecond
	testPreLoginIdle     = time.Second
	// closeWithin is how soon a connection must be closed once a
	// timeout applies: well above the bounds above, well below the
	// libraries' own timeouts (30 s and more).
	closeWithin = 8 * time.Second
)

// timeoutsPassword is the password of every test user; each listener's
// client logs in as its own user (POP3 locks the maildrop).
const timeoutsPassword = "dora-secret-password"

func timeoutsUser(listener string) string { return "dora-" + listener + "@example.test" }

// dialListener connects to a node listener (over TLS when tlsCfg is set).
func dialListener(t *testing.T, n *Node, name string, tlsCfg *tls.Config) *protocoltest.LineClient {
	t.Helper()
	return protocoltest.DialLine(t, n.Addr(name).String(), tlsCfg)
}

// listenerScript is how a test client speaks one listener's protocol.
type listenerScript struct {
	name        string
	implicitTLS bool
	greeting    func(c *protocoltest.LineClient)
	// startTLS sends the STARTTLS command and reads the go-ahead (plain
	// listeners only).
	startTLS func(c *protocoltest.LineClient)
	// login authenticates as user (on the MX port: says EHLO) and noop
	// sends a command that must be answered.
	login func(c *protocoltest.LineClient, user string)
	noop  func(c *protocoltest.LineClient)
}

func smtpScripts() []listenerScript {
	greeting := func(c *protocoltest.LineClient) { c.SMTPReply(220) }
	ehlo := func(c *protocoltest.LineClient) { c.Send("EHLO client.example"); c.SMTPReply(250) }
	startTLS := func(c *protocoltest.LineClient) { ehlo(c); c.Send("STARTTLS"); c.SMTPReply(220) }
	mx := func(c *protocoltest.LineClient, _ string) { ehlo(c) }
	auth := func(c *protocoltest.LineClient, user string) {
		ehlo(c)
		c.Send("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+timeoutsPassword)))
		c.SMTPReply(235)
	}
	noop := func(c *protocoltest.LineClient) { c.Send("NOOP"); c.SMTPReply(250) }
	return []listenerScript{
		{ListenSMTP, false, greeting, startTLS, mx, noop},
		{ListenSubmission, false, greeting, startTLS, auth, noop},
		{ListenSubmissions, true, greeting, nil, auth, noop},
	}
}

func imapScripts() []listenerScript {
	greeting := func(c *protocoltest.LineClient) { c.Expect("* OK") }
	tagged := func(c *protocoltest.LineClient, tag, cmd string) {
		c.Send("%s %s", tag, cmd)
		c.Until(tag + " OK")
	}
	startTLS := func(c *protocoltest.LineClient) { tagged(c, "s1", "STARTTLS") }
	login := func(c *protocoltest.LineClient, user string) {
		tagged(c, "l1", fmt.Sprintf("LOGIN %s %s", user, timeoutsPassword))
	}
	noop := func(c *protocoltest.LineClient) { tagged(c, "n1", "NOOP") }
	return []listenerScript{
		{ListenIMAP, false, greeting, startTLS, login, noop},
		{ListenIMAPS, true, greeting, nil, login, noop},
	}
}

func pop3Scripts() []listenerScript {
	ok := func(c *protocoltest.LineClient) { c.Expect("+OK") }
	startTLS := func(c *protocoltest.LineClient) { c.Send("STLS"); ok(c) }
	login := func(c *protocoltest.LineClient, user string) {
		c.Send("USER %s", user)
		ok(c)
		c.Send("PASS %s", timeoutsPassword)
		ok(c)
	}
	noop := func(c *protocoltest.LineClient) { c.Send("NOOP"); ok(c) }
	return []listenerScript{
		{ListenPOP3, false, ok, startTLS, login, noop},
		{ListenPOP3S, true, ok, nil, login, noop},
	}
}

// metricValue returns the value of one series in a /metrics body, or -1.
func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// waitMetric waits until series has the value want.
func waitMetric(t *testing.T, n *Node, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(closeWithin)
	for {
		_, body := httpGet(t, n, "/metrics")
		got := metricValue(body, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNodeClientTimeouts checks, on every frontend listener, that a
// client which sends nothing, stalls its TLS handshake or stays silent
// before login is cut off by the configured (here shortened) timeouts and
// counted, and that a client which logs in keeps its connection beyond
// them.
func TestNodeClientTimeouts(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.HandshakeTimeout = testHandshakeTimeout
	cfg.Limits.PreLoginIdleTimeout = testPreLoginIdle
	cfg.Limits.LoginTimeout = time.Minute
	n := startNode(t, cfg)
	ctx := context.Background()
	if err := n.Directory().AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	for _, name := range ListenerNames() {
		if err := n.Directory().AddUser(ctx, timeoutsUser(name), timeoutsPassword); err != nil {
			t.Fatal(err)
		}
	}
	tlsCfg := clientTLS(t, cfg)

	var scripts []listenerScript
	scripts = append(scripts, smtpScripts()...)
	scripts = append(scripts, imapScripts()...)
	scripts = append(scripts, pop3Scripts()...)
	for _, s := range scripts {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			handshakes := fmt.Sprintf(`mail_node_handshake_timeouts_total{listener=%q}`, s.name)
			idles := fmt.Sprintf(`mail_node_prelogin_timeouts_total{listener=%q,reason="idle"}`, s.name)
			logins := fmt.Sprintf(`mail_node_prelogin_timeouts_total{listener=%q,reason="login"}`, s.name)
			var wantHandshakes, wantIdles float64
			var clientCfg *tls.Config
			if s.implicitTLS {
				clientCfg = tlsCfg
			}

			// A TCP connection that never says anything.
			c := dialListener(t, n, s.name, nil)
			if s.implicitTLS {
				c.ExpectClosed(closeWithin)
				wantHandshakes++
				waitMetric(t, n, handshakes, wantHandshakes)
			} else {
				s.greeting(c)
				c.ExpectClosed(closeWithin)
				wantIdles++
				waitMetric(t, n, idles, wantIdles)
			}

			if s.startTLS != nil {
				// STARTTLS, then no ClientHello.
				c = dialListener(t, n, s.name, nil)
				s.greeting(c)
				s.startTLS(c)
				c.ExpectClosed(closeWithin)
				wantHandshakes++
				waitMetric(t, n, handshakes, wantHandshakes)
			}

			// TLS up, then silence before login. (On the MX port the
			// first command ends the pre-login timeouts.)
			if s.name != ListenSMTP {
				c = dialListener(t, n, s.name, clientCfg)
				if !s.implicitTLS {
					s.greeting(c)
					s.startTLS(c)
					c.StartTLS(tlsCfg)
				} else {
					s.greeting(c)
				}
				c.ExpectOpen(testHandshakeTimeout + testHandshakeTimeout/2)
				c.ExpectClosed(closeWithin)
				wantIdles++
				waitMetric(t, n, idles, wantIdles)
			}

			// A client that logs in keeps its connection past the
			// pre-login timeouts.
			c = dialListener(t, n, s.name, clientCfg)
			s.greeting(c)
			if s.startTLS != nil && s.name != ListenSMTP {
				s.startTLS(c)
				c.StartTLS(tlsCfg)
			}
			s.login(c, timeoutsUser(s.name))
			c.ExpectOpen(testPreLoginIdle + testPreLoginIdle/2)
			s.noop(c)

			_, body := httpGet(t, n, "/metrics")
			for series, want := range map[string]float64{handshakes: wantHandshakes, idles: wantIdles, logins: 0} {
				if got := metricValue(body, series); got != want {
					t.Errorf("%s = %v, want %v", series, got, want)
				}
			}
		})
	}
}

func TestConfigClientTimeouts(t *testing.T) {
	d := Default().Limits
	if d.HandshakeTimeout != 10*time.Second || d.PreLoginIdleTimeout != time.Minute || d.LoginTimeout != 3*time.Minute {
		t.Errorf("defaults: handshake %s, pre-login idle %s, login %s; want 10s, 1m, 3m", d.HandshakeTimeout, d.PreLoginIdleTimeout, d.LoginTimeout)
	}
	cfg, err := Parse("test.toml", []byte(`
[limits]
handshake_timeout     = "5s"
prelogin_idle_timeout = "30s"
login_timeout         = "2m"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{HandshakeTimeout: 5 * time.Second, PreLoginIdleTimeout: 30 * time.Second, LoginTimeout: 2 * time.Minute}
	if got := cfg.Limits; got.HandshakeTimeout != want.HandshakeTimeout || got.PreLoginIdleTimeout != want.PreLoginIdleTimeout || got.LoginTimeout != want.LoginTimeout {
		t.Errorf("parsed limits %+v", got)
	}
	for _, tt := range []struct {
		key    string
		mutate func(*Limits, time.Duration)
	}{
		{"handshake_timeout", func(l *Limits, d time.Duration) { l.HandshakeTimeout = d }},
		{"prelogin_idle_timeout", func(l *Limits, d time.Duration) { l.PreLoginIdleTimeout = d }},
		{"login_timeout", func(l *Limits, d time.Duration) { l.LoginTimeout = d }},
	} {
		for _, d := range []time.Duration{0, -time.Second, 2 * time.Hour} {
			cfg := Default()
			cfg.DataDir = "/tmp/x"
			tt.mutate(&cfg.Limits, d)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "limits."+tt.key) {
				t.Errorf("%s = %s: Validate() = %v", tt.key, d, err)
			}
		}
	}
}
