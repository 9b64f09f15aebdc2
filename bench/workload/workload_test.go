package workload

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/protocols/pop3"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	"github.com/mailcluster/mailcluster/protocols/smtp"
)

// server is what serve runs.
type server interface {
	Serve(net.Listener) error
	Close() error
}

// serve runs a server on a loopback port until the test ends.
func serve(t *testing.T, srv server) string {
	t.Helper()
	return listen(t, srv).Addr().String()
}

// listen runs a server on a loopback port until the test ends and
// returns its listener: closing it refuses new connections while those
// already open go on.
func listen(t *testing.T, srv server) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln
}

// TestWorkloadsAgainstServers drives the project's own SMTP, IMAP and
// POP3 servers, in process over loopback, with every workload: the same
// client code the harness points at real targets.
func TestWorkloadsAgainstServers(t *testing.T) {
	store := protocoltest.NewStore(t)
	serverTLS, clientTLS := protocoltest.TLS(t)
	users := make([]targets.User, 4)
	for i := range users {
		users[i] = targets.User{Address: "user" + string(rune('0'+i)) + "@bench.test", Password: "bench-password"}
		store.AddUser(t, users[i].Address, users[i].Password)
	}
	mx, err := smtp.NewServer(smtp.Config{Mode: smtp.ModeMX, Hostname: "localhost", TLS: serverTLS}, store.Store)
	if err != nil {
		t.Fatal(err)
	}
	guard := protocols.NewAuthGuard(protocols.DefaultAuthGuardConfig(), nil)
	im, err := imap.NewServer(imap.Config{Hostname: "localhost", TLS: serverTLS, Guard: guard}, store.Store)
	if err != nil {
		t.Fatal(err)
	}
	po, err := pop3.NewServer(pop3.Config{Hostname: "localhost", TLS: serverTLS, Guard: guard}, store.Store)
	if err != nil {
		t.Fatal(err)
	}
	c, err := corpus.Generate(corpus.Config{Seed: 2, Messages: 40, Users: len(users), MaxSize: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	env := Env{
		Target:    "in-process",
		Endpoints: targets.Endpoints{SMTP: serve(t, mx), IMAP: serve(t, im), POP3: serve(t, po)},
		TLS:       clientTLS, Users: users, Corpus: c,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if err := WarmUp(ctx, env); err != nil {
		t.Fatal(err)
	}
	in, err := Ingest(ctx, env, IngestConfig{Clients: 3, Duration: time.Minute, PerConnection: 4})
	if err != nil {
		t.Fatal(err)
	}
	if in.Acked != len(c.Messages) || in.Failed != 0 || in.Ops["transaction"].Count != int64(in.Acked) {
		t.Fatalf("ingest acked %d of %d, failed %d (%v)", in.Acked, len(c.Messages), in.Failed, in.Errors)
	}
	if in.Ops["connect"].Count < int64(len(c.Messages)/4) {
		t.Fatalf("%d connections for %d messages at 4 per connection", in.Ops["connect"].Count, len(c.Messages))
	}
	check, err := Verify(ctx, env, in.AckedMessages(), VerifyConfig{SentAt: time.Now(), Wait: 30 * time.Second, Via: in.AckedVia()})
	if err != nil {
		t.Fatal(err)
	}
	if !check.OK() || check.Matched != len(c.Messages) {
		t.Fatalf("check %+v", check)
	}

	im2, err := IMAP(ctx, Env{Target: env.Target, Endpoints: env.Endpoints, TLS: clientTLS, Users: users[:2], Corpus: c},
		IMAPConfig{Sessions: 2, Duration: 1500 * time.Millisecond, Rounds: 3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if im2.Failed != 0 || im2.Logins == 0 {
		t.Fatalf("imap-mixed: %d failed, %d logins: %v", im2.Failed, im2.Logins, im2.Errors)
	}
	for _, op := range []string{"connect", "login", "select", "fetch-headers", "fetch-body", "store", "search", "append", "move", "expunge", "logout"} {
		if im2.PerOp[op].Count == 0 {
			t.Errorf("imap-mixed never ran %s", op)
		}
	}

	// Paced: the sessions keep to the rate however fast the server is
	// (a closed loop runs hundreds of commands in this time).
	const rate, paceFor = 20.0, 2 * time.Second
	paced, err := IMAP(ctx, Env{Target: env.Target, Endpoints: env.Endpoints, TLS: clientTLS, Users: users[:2], Corpus: c},
		IMAPConfig{Sessions: 2, Duration: paceFor, Rounds: 3, Seed: 2, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	if paced.Failed != 0 || paced.Ops == 0 || paced.Rate != rate {
		t.Fatalf("paced imap-mixed: %d ops, %d failed, rate %g: %v", paced.Ops, paced.Failed, paced.Rate, paced.Errors)
	}
	if most := int64(rate*paceFor.Seconds()) + 2; paced.Ops > most {
		t.Fatalf("paced imap-mixed ran %d commands in %s at %g/s (at most %d)", paced.Ops, paceFor, rate, most)
	}

	p, err := POP3(ctx, Env{Target: env.Target, Endpoints: env.Endpoints, TLS: clientTLS, Users: users[2:], Corpus: c},
		POP3Config{Clients: 2, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, m := range c.Messages {
		if m.Rcpt >= 2 {
			want++
		}
	}
	if p.Mailboxes != 2 || p.Messages != int64(want) || p.Mismatched != 0 || p.Left != 0 {
		t.Fatalf("pop3-drain: %d mailboxes, %d messages (want %d), %d mismatched, %d left: %v",
			p.Mailboxes, p.Messages, want, p.Mismatched, p.Left, p.Errors)
	}
	// Drained: a second pass finds nothing.
	again, err := POP3(ctx, Env{Target: env.Target, Endpoints: env.Endpoints, TLS: clientTLS, Users: users[2:], Corpus: c},
		POP3Config{Clients: 1, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if again.Messages != 0 || again.Mailboxes != 2 {
		t.Fatalf("second drain found %d messages in %d mailboxes", again.Messages, again.Mailboxes)
	}

	if _, err := IMAP(ctx, env, IMAPConfig{Sessions: 5, Duration: time.Second}); err == nil {
		t.Fatal("more sessions than users accepted")
	}
}
