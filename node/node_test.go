package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// testConfig returns a config for a node on loopback port 0 everywhere,
// with few shards and fast elections.
func testConfig(t *testing.T) Config {
	t.Helper()
	cfg := Default()
	cfg.DataDir = t.TempDir()
	for _, name := range ListenerNames() {
		cfg.Listen.set(name, "127.0.0.1:0")
	}
	cfg.Cluster.Listen = "127.0.0.1:0"
	cfg.MailShards = 2
	cfg.RaftTiming = raftstore.Timing{HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond}
	cfg.AuthGuard.FailureDelay = 0
	return cfg
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg, Options{Logger: discardLogger(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	return n
}

// clientTLS trusts the node's generated certificate, as a client that
// pinned it would.
func clientTLS(t *testing.T, cfg Config) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mustRead(t, filepath.Join(cfg.DataDir, tlsDirName, certFileName))) {
		t.Fatal("no certificate in cert.pem")
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// greeting connects to a listener and returns its first line.
func greeting(t *testing.T, addr net.Addr, tlsCfg *tls.Config) string {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if tlsCfg != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr.String(), tlsCfg)
	} else {
		c, err = d.Dial("tcp", addr.String())
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting from %s: %v", addr, err)
	}
	return line
}

func httpGet(t *testing.T, n *Node, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + n.Addr(ListenHTTP).String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestNodeServesEveryListener(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	tlsCfg := clientTLS(t, cfg)

	tests := []struct {
		listener string
		tls      bool
		prefix   string
	}{
		{ListenSMTP, false, "220 "},
		{ListenSubmission, false, "220 "},
		{ListenSubmissions, true, "220 "},
		{ListenIMAP, false, "* OK"},
		{ListenIMAPS, true, "* OK"},
		{ListenPOP3, false, "+OK"},
		{ListenPOP3S, true, "+OK"},
	}
	for _, tt := range tests {
		t.Run(tt.listener, func(t *testing.T) {
			addr := n.Addr(tt.listener)
			if addr == nil {
				t.Fatal("no address")
			}
			if addr.(*net.TCPAddr).Port == 0 {
				t.Fatalf("address %s has no bound port", addr)
			}
			var c *tls.Config
			if tt.tls {
				c = tlsCfg
			}
			if got := greeting(t, addr, c); !strings.HasPrefix(got, tt.prefix) {
				t.Errorf("greeting %q, want prefix %q", got, tt.prefix)
			}
		})
	}

	if code, body := httpGet(t, n, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := httpGet(t, n, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	code, body := httpGet(t, n, "/metrics")
	for _, want := range []string{"mail_node_up 1", "go_goroutines", "process_open_fds", `mail_node_build_info{node="node1",version="test"} 1`,
		`mail_raft_shard_leader{shard="0"} 1`, `mail_raft_shard_leader{shard="2"} 1`, `mail_raft_shard_applied_index{shard="1"}`,
		`mail_raft_shard_stopped{shard="1"} 0`, `mail_raft_shard_disk_stuck{shard="1"} 0`, `mail_raft_shard_skipped_entries{shard="1"} 0`, `mail_raft_log_damaged_reads_total{shard="1"} 0`, `mail_raft_repaired_pieces_total{shard="1"} 0`, "mail_node_data_available_bytes ", `mail_cluster_connections_opened_total{kind="rpc"}`, `mail_cluster_message_reads_total{served_by="replica"}`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	// Every replica's latency histograms; the meta shard's log has had
	// at least its bootstrap configuration written.
	for _, want := range []string{`mail_raft_apply_seconds_bucket{shard="1",le="0.001"} `, `mail_raft_state_commit_seconds_sum{shard="2"} `,
		`mail_raft_log_write_seconds_bucket{shard="1",le="+Inf"} `} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^mail_raft_log_write_seconds_count\{shard="0"\} [1-9]`).MatchString(body) {
		t.Errorf("/metrics: the meta shard's log writes were not counted")
	}
}

func TestNodeDisabledListeners(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listen.IMAPS, cfg.Listen.POP3, cfg.Listen.POP3S, cfg.Listen.HTTP = "", "", "", ""
	n := startNode(t, cfg)
	for _, name := range []string{ListenIMAPS, ListenPOP3, ListenPOP3S, ListenHTTP} {
		if a := n.Addr(name); a != nil {
			t.Errorf("disabled listener %s bound to %s", name, a)
		}
	}
	if got := greeting(t, n.Addr(ListenIMAP), nil); !strings.HasPrefix(got, "* OK") {
		t.Errorf("imap greeting %q", got)
	}
}

func TestNodeCloseStopsEverythingAndIsIdempotent(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]net.Addr{}
	for _, name := range ListenerNames() {
		addrs[name] = n.Addr(name)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for name, a := range addrs {
		if c, err := net.DialTimeout("tcp", a.String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Close", name)
		}
	}
	if err := n.Start(context.Background()); err == nil {
		t.Error("a closed node started again")
	}
	// The lock is released: another node may open the directory.
	startNode(t, cfg)
}

func TestNodeRestartKeepsData(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	n := startNode(t, cfg)
	c := n.Directory()
	if err := c.AddDomain(ctx, "example.test", directory.KeyModeUser, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.AddUser(ctx, "alice@example.test", "alice-password"); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := startNode(t, cfg)
	users, err := n2.Directory().Users(ctx, "")
	if err != nil || len(users) != 1 || users[0] != "alice@example.test" {
		t.Fatalf("users after restart: %v, %v", users, err)
	}
	acct, err := n2.Store().Authenticate(ctx, schema.Credentials{Username: "alice@example.test", Password: "alice-password"})
	if err != nil {
		t.Fatalf("login after restart: %v", err)
	}
	acct.Close()
}

func TestNodeSecondProcessOnSameDirFails(t *testing.T) {
	cfg := testConfig(t)
	startNode(t, cfg)
	n2, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = n2.Start(context.Background())
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second node on the same dir: %v, want ErrDataDirInUse", err)
	}
	if err := n2.Close(); err != nil {
		t.Errorf("close after failed start: %v", err)
	}
}

func TestNodeStartFailsCleanlyOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.Listen.POP3S = busy.Addr().String()
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "listen pop3s") {
		t.Fatalf("start with a busy port: %v", err)
	}
	// Everything was released: the same directory starts with a free port.
	cfg.Listen.POP3S = "127.0.0.1:0"
	startNode(t, cfg)
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.Log.Format = "xml"
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("New with a bad config: %v", err)
	}
}

func TestNodeConnectionLimitAnswersBusy(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.MaxConnectionsPerIP = 1
	n := startNode(t, cfg)
	tlsCfg := clientTLS(t, cfg)

	// Hold the only slot of 127.0.0.1.
	hold, err := net.Dial("tcp", n.Addr(ListenIMAP).String())
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	hold.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(hold).ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		listener string
		tls      bool
		want     string
	}{
		{ListenSMTP, false, "421 4.7.0 too many connections\r\n"},
		{ListenIMAP, false, "* BYE too many connections\r\n"},
		{ListenIMAPS, true, "* BYE too many connections\r\n"},
		{ListenPOP3, false, "-ERR [SYS/TEMP] too many connections\r\n"},
		{ListenPOP3S, true, "-ERR [SYS/TEMP] too many connections\r\n"},
	}
	for _, tt := range tests {
		var c *tls.Config
		if tt.tls {
			c = tlsCfg
		}
		if got := greeting(t, n.Addr(tt.listener), c); got != tt.want {
			t.Errorf("%s over the limit: %q, want %q", tt.listener, got, tt.want)
		}
	}
	_, body := httpGet(t, n, "/metrics")
	if !strings.Contains(body, `mail_node_connections_rejected_total{listener="pop3s",reason="max_connections_per_ip"} 1`) {
		t.Error("rejections not counted in /metrics")
	}
}

// TestNodeMailFlow delivers a message over SMTP (MX, STARTTLS) and reads
// it back over POP3S: the vertical slice through one node.
func TestNodeMailFlow(t *testing.T) {
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

	conn, err := tls.Dial("tcp", n.Addr(ListenPOP3S).String(), tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	expectOK := func(cmd string) string {
		t.Helper()
		if cmd != "" {
			if err := tp.PrintfLine("%s", cmd); err != nil {
				t.Fatal(err)
			}
		}
		line, err := tp.ReadLine()
		if err != nil || !strings.HasPrefix(line, "+OK") {
			t.Fatalf("%q: %q, %v", cmd, line, err)
		}
		return line
	}
	expectOK("")
	expectOK("USER bob@example.test")
	expectOK("PASS bob-password")
	stat := expectOK("STAT")
	if !strings.HasPrefix(stat, "+OK 1 ") {
		t.Fatalf("STAT = %q, want one message", stat)
	}
	expectOK("RETR 1")
	body, err := tp.ReadDotLines()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(body, "\n"), "Hello Bob.") {
		t.Errorf("retrieved message lacks the body: %q", body)
	}
	expectOK("QUIT")
}
