package directory_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// syncBuffer collects the logs of every node.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// debugLogs returns a logger at debug level into a buffer.
func debugLogs() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// loginVia checks credentials through a node's mail store, as a frontend
// would.
func loginVia(ctx context.Context, n *clustertest.Node, user, password, protocol string) error {
	acct, err := n.Store().Authenticate(ctx, schema.Credentials{
		Username: user, Password: password, Protocol: protocol, Remote: netip.MustParseAddr("192.0.2.7"),
	})
	if err == nil {
		acct.Close()
	}
	return err
}

var appPasswordForm = regexp.MustCompile(`^[a-km-np-z2-9]{4}(-[a-km-np-z2-9]{4}){3}$`)

// TestAppPasswordsAcrossNodes: an app password added through one node of
// a three-node cluster logs in through another, only over the protocols
// of its scope; the account password keeps working beside it; and a
// revocation through the first node is refused by the other as soon as
// that node's replica has the change, although it had just verified
// (and cached) the app password.
func TestAppPasswordsAcrossNodes(t *testing.T) {
	log, logs := debugLogs()
	c := clustertest.Start(t, clustertest.Options{Logger: log})
	const addr, account = "ada@example.test", "account-password"
	c.AddUser(addr, account)
	ctx := testCtx(t)
	n0, n1 := c.Nodes[0], c.Nodes[1]

	pw, err := n0.Directory().AddAppPassword(ctx, addr, "Phone mail", []string{"imap", "IMAP"})
	if err != nil {
		t.Fatal(err)
	}
	if !appPasswordForm.MatchString(pw) {
		t.Errorf("app password %q is not four groups of four letters and digits", pw)
	}
	other, err := n0.Directory().AddAppPassword(ctx, addr, "laptop", nil)
	if err != nil {
		t.Fatal(err)
	}
	if other == pw {
		t.Fatal("two app passwords are the same")
	}
	for _, tc := range []struct {
		name  string
		scope []string
	}{{"phone MAIL", nil}, {"", nil}, {"bad/name", nil}, {strings.Repeat("x", 65), nil}, {"ok", []string{"web"}}} {
		if _, err := n0.Directory().AddAppPassword(ctx, addr, tc.name, tc.scope); !errors.Is(err, schema.ErrInvalid) {
			t.Errorf("app password %q scope %v: %v, want ErrInvalid", tc.name, tc.scope, err)
		}
	}
	if _, err := n0.Directory().AddAppPassword(ctx, "nobody@example.test", "x", nil); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("app password of an unknown user: %v", err)
	}

	// Node 1 may lag the write by a moment.
	c.Eventually(30*time.Second, "app password on node 1", func() error { return loginVia(ctx, n1, addr, pw, schema.ProtocolIMAP) })
	// Typed another way: capitals, spaces for dashes.
	if err := loginVia(ctx, n1, addr, strings.ToUpper(strings.ReplaceAll(pw, "-", " ")), schema.ProtocolIMAP); err != nil {
		t.Errorf("app password typed in capitals with spaces: %v", err)
	}
	for _, proto := range []string{schema.ProtocolPOP3, schema.ProtocolSMTP, ""} {
		if err := loginVia(ctx, n1, addr, pw, proto); !errors.Is(err, schema.ErrAuthFailed) {
			t.Errorf("IMAP-only app password over %q: %v, want ErrAuthFailed", proto, err)
		}
	}
	for _, proto := range schema.LoginProtocols() {
		if err := loginVia(ctx, n1, addr, other, proto); err != nil {
			t.Errorf("app password of every protocol over %s: %v", proto, err)
		}
	}
	if err := loginVia(ctx, n1, addr, account, schema.ProtocolPOP3); err != nil {
		t.Errorf("account password beside app passwords: %v", err)
	}
	// During a user lockout (OnlyAppPassword) the account password is
	// refused even though it is right, and an app password works.
	locked := schema.Credentials{Username: addr, Password: account, Protocol: schema.ProtocolIMAP, OnlyAppPassword: true}
	if _, err := n1.Store().Authenticate(ctx, locked); !errors.Is(err, schema.ErrAuthFailed) {
		t.Errorf("account password restricted to app passwords: %v", err)
	}
	locked.Password = pw
	if _, err := n1.Store().Authenticate(ctx, locked); err != nil {
		t.Errorf("app password restricted to app passwords: %v", err)
	}

	list, err := n1.Directory().AppPasswords(ctx, addr)
	if err != nil || len(list) != 2 || list[0].Name != "Phone mail" || strings.Join(list[0].Scope, ",") != "imap" ||
		list[1].Name != "laptop" || strings.Join(list[1].Scope, ",") != "imap,pop3,smtp" || list[0].Created.IsZero() {
		t.Fatalf("app passwords on node 1: %+v, %v", list, err)
	}
	if u, err := n1.Directory().User(ctx, addr); err != nil || u.AppPasswords != 2 {
		t.Errorf("user shows %+v, %v", u, err)
	}

	// Revoked through node 0 (the name in other capitals), refused on
	// node 1 without waiting for any cache.
	if err := n0.Directory().RevokeAppPassword(ctx, addr, "PHONE mail"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Cluster().CatchUpMeta(ctx); err != nil {
		t.Fatal(err)
	}
	if err := loginVia(ctx, n1, addr, pw, schema.ProtocolIMAP); !errors.Is(err, schema.ErrAuthFailed) {
		t.Fatalf("revoked app password on node 1: %v, want ErrAuthFailed", err)
	}
	if err := loginVia(ctx, n1, addr, other, schema.ProtocolIMAP); err != nil {
		t.Errorf("the other app password after a revocation: %v", err)
	}
	if err := n0.Directory().RevokeAppPassword(ctx, addr, "phone mail"); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("revoke twice: %v", err)
	}
	if list, err := n1.Directory().AppPasswords(ctx, addr); err != nil || len(list) != 1 || list[0].Name != "laptop" {
		t.Errorf("app passwords after the revocation: %+v, %v", list, err)
	}
	for _, secret := range []string{pw, other, strings.ReplaceAll(pw, "-", ""), account} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs hold a password %q", secret)
		}
	}
}

// countingCluster counts the settings a directory writes.
type countingCluster struct {
	directory.Cluster
	mu       sync.Mutex
	settings int
}

func (c *countingCluster) Apply(ctx context.Context, n uint32, p schema.Payload) (*schema.Result, error) {
	if _, ok := p.(*schema.PutSetting); ok {
		c.mu.Lock()
		c.settings++
		c.mu.Unlock()
	}
	return c.Cluster.Apply(ctx, n, p)
}

func (c *countingCluster) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settings
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestAppPasswordLastUseThrottled: the last use of an app password (time
// and address) is recorded without a meta write per login: one write for
// many logins within the hour, none by a node that finds a use recorded
// less than an hour ago, and one again after the hour. Directories on a
// fake clock, over a real node's cluster, count their writes (Close
// writes what is queued).
func TestAppPasswordLastUseThrottled(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 1, Replicas: 1})
	const addr = "lin@example.test"
	c.AddUser(addr, "account-password")
	ctx := testCtx(t)
	n := c.Nodes[0]
	pw, err := n.Directory().AddAppPassword(ctx, addr, "tablet", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: start}
	open := func() (*directory.Directory, *countingCluster) {
		cc := &countingCluster{Cluster: n.Cluster()}
		d, err := directory.New(cc, directory.Config{MasterKey: n.MasterKey, PasswordConcurrency: 2, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return d, cc
	}
	login := func(d *directory.Directory, ip string) {
		t.Helper()
		_, err := d.Authenticate(ctx, schema.Credentials{Username: addr, Password: pw, Protocol: schema.ProtocolSMTP, Remote: netip.MustParseAddr(ip)})
		if err != nil {
			t.Fatalf("login at %v: %v", clock.Now(), err)
		}
	}
	lastUse := func() directory.AppPassword {
		t.Helper()
		list, err := n.Directory().AppPasswords(ctx, addr)
		if err != nil || len(list) != 1 {
			t.Fatalf("app passwords: %+v, %v", list, err)
		}
		return list[0]
	}
	if ap := lastUse(); !ap.LastUsed.IsZero() || ap.LastIP != "" {
		t.Fatalf("an unused app password shows a use: %+v", ap)
	}

	d, cc := open()
	for range 20 {
		login(d, "192.0.2.1")
		clock.Advance(time.Minute)
	}
	d.Close()
	if w := cc.writes(); w != 1 {
		t.Fatalf("20 logins in 20 minutes wrote %d records, want 1", w)
	}
	if ap := lastUse(); !ap.LastUsed.Equal(start) || ap.LastIP != "192.0.2.1" {
		t.Fatalf("last use %v from %q, want %v from 192.0.2.1", ap.LastUsed, ap.LastIP, start)
	}

	// Another node, which has seen no login yet, finds the recorded use.
	d, cc = open()
	login(d, "192.0.2.2")
	clock.Advance(39 * time.Minute) // 59 minutes after the recorded use
	login(d, "192.0.2.2")
	d.Close()
	if w := cc.writes(); w != 0 {
		t.Fatalf("logins within the hour of a recorded use wrote %d records", w)
	}

	// After the hour: one write, with the new address.
	d, cc = open()
	clock.Advance(2 * time.Minute)
	for range 5 {
		login(d, "192.0.2.3")
	}
	clock.Advance(30 * time.Minute)
	login(d, "192.0.2.3")
	clock.Advance(31 * time.Minute) // an hour after the last write, in memory
	login(d, "192.0.2.4")
	d.Close()
	if w := cc.writes(); w != 2 {
		t.Fatalf("logins over 62 minutes wrote %d records, want 2", w)
	}
	if ap := lastUse(); !ap.LastUsed.Equal(start.Add(122*time.Minute)) || ap.LastIP != "192.0.2.4" {
		t.Fatalf("last use %v from %q", ap.LastUsed, ap.LastIP)
	}

	// A failed login records nothing.
	d, cc = open()
	clock.Advance(2 * time.Hour)
	if _, err := d.Authenticate(ctx, schema.Credentials{Username: addr, Password: "wxyz-wxyz-wxyz-wxyz", Protocol: schema.ProtocolSMTP}); !errors.Is(err, schema.ErrAuthFailed) {
		t.Fatalf("wrong app password: %v", err)
	}
	d.Close()
	if w := cc.writes(); w != 0 {
		t.Fatalf("a failed login wrote %d records", w)
	}
}
