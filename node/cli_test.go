package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/node/admin"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// cliResult is one in-process run of the mailnode command.
type cliResult struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, ctx context.Context, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	cli := CLI{Version: "test", Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut}
	code := cli.Run(ctx, args)
	return cliResult{code, out.String(), errOut.String()}
}

// mustCLI runs a command that must succeed.
func mustCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := runCLI(t, context.Background(), stdin, args...)
	if r.code != ExitOK {
		t.Fatalf("mailnode %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// failCLI runs a command that must fail with code and a message
// containing want.
func failCLI(t *testing.T, code int, want, stdin string, args ...string) {
	t.Helper()
	r := runCLI(t, context.Background(), stdin, args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		t.Errorf("mailnode %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
}

func TestCLIAdminRoundTrip(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	dir := cfg.DataDir
	ctx := context.Background()

	mustCLI(t, "", "domain", "add", "--data", dir, "example.test")
	// Flags after the argument work too.
	mustCLI(t, "", "domain", "add", "other.test", "--data", dir, "--key-mode", "shared")
	failCLI(t, ExitError, "already exists", "", "domain", "add", "--data", dir, "example.test")
	failCLI(t, ExitError, "key mode", "", "domain", "add", "--data", dir, "--key-mode", "weird", "third.test")

	out := mustCLI(t, "", "domain", "list", "--data", dir)
	for _, want := range []string{"DOMAIN", "example.test  user", "other.test    shared"} {
		if !strings.Contains(out, want) {
			t.Errorf("domain list lacks %q:\n%s", want, out)
		}
	}

	mustCLI(t, "alice-password\n", "user", "add", "--data", dir, "alice@example.test")
	mustCLI(t, "bob-password", "user", "add", "--data", dir, "bob@example.test")
	mustCLI(t, "olga-password\r\n", "user", "add", "--data", dir, "olga@other.test")
	failCLI(t, ExitError, "already exists", "x-password\n", "user", "add", "--data", dir, "alice@example.test")
	failCLI(t, ExitError, "no such domain", "x-password\n", "user", "add", "--data", dir, "eve@unknown.test")
	failCLI(t, ExitError, "at least 8", "short\n", "user", "add", "--data", dir, "carl@example.test")
	failCLI(t, ExitError, "no password", "", "user", "add", "--data", dir, "carl@example.test")

	if out := mustCLI(t, "", "user", "list", "--data", dir); out != "alice@example.test\nbob@example.test\nolga@other.test\n" {
		t.Errorf("user list:\n%s", out)
	}
	if out := mustCLI(t, "", "user", "list", "--data", dir, "--domain", "other.test"); out != "olga@other.test\n" {
		t.Errorf("user list --domain other.test:\n%s", out)
	}
	if out := mustCLI(t, "", "domain", "list", "--data", dir); !strings.Contains(out, "example.test  user      -       2") {
		t.Errorf("domain list does not count users:\n%s", out)
	}

	// The password is really replaced.
	mustCLI(t, "alice-new-password\n", "user", "passwd", "--data", dir, "alice@example.test")
	if _, err := n.Store().Authenticate(ctx, schema.Credentials{Username: "alice@example.test", Password: "alice-password"}); !errors.Is(err, schema.ErrAuthFailed) {
		t.Errorf("old password after passwd: %v", err)
	}
	acct, err := n.Store().Authenticate(ctx, schema.Credentials{Username: "alice@example.test", Password: "alice-new-password"})
	if err != nil {
		t.Fatalf("new password after passwd: %v", err)
	}
	acct.Close()
	failCLI(t, ExitError, "no such user", "whatever-password\n", "user", "passwd", "--data", dir, "nobody@example.test")

	failCLI(t, ExitError, "still has users", "", "domain", "del", "--data", dir, "other.test")
	mustCLI(t, "", "user", "del", "--data", dir, "olga@other.test")
	failCLI(t, ExitError, "no such user", "", "user", "del", "--data", dir, "olga@other.test")
	mustCLI(t, "", "domain", "del", "--data", dir, "other.test")
	failCLI(t, ExitError, "no such domain", "", "domain", "del", "--data", dir, "other.test")
	if out := mustCLI(t, "", "user", "list", "--data", dir); out != "alice@example.test\nbob@example.test\n" {
		t.Errorf("user list after deletes:\n%s", out)
	}

	// Store errors keep their identity across the socket.
	client := admin.NewClient(dir)
	defer client.Close()
	if err := client.AddDomain(ctx, "example.test", "", ""); !errors.Is(err, schema.ErrDomainExists) {
		t.Errorf("duplicate domain over the socket: %v, want ErrDomainExists", err)
	}
	if err := client.DeleteUser(ctx, "nobody@example.test"); !errors.Is(err, schema.ErrNoSuchUser) {
		t.Errorf("unknown user over the socket: %v, want ErrNoSuchUser", err)
	}
	if err := client.AddUser(ctx, "not an address", "long-enough-pw"); !errors.Is(err, schema.ErrInvalid) {
		t.Errorf("bad address over the socket: %v, want ErrInvalid", err)
	}

	status := mustCLI(t, "", "status", "--data", dir)
	for _, want := range []string{"node1", "ready               yes", "listen imaps", n.Addr(ListenIMAPS).String()} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
}

func TestCLIAdminErrorsWithoutNode(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"domain", "list", "--data", dir},
		{"domain", "add", "--data", dir, "example.test"},
		{"user", "add", "--data", dir, "a@example.test"},
		{"user", "del", "--data", dir, "a@example.test"},
		{"status", "--data", dir},
	} {
		// A password on stdin must not be asked for when nobody listens.
		failCLI(t, ExitError, "no node is serving the data directory "+dir, "", args...)
	}
	// A stale socket file left by a crashed node is no better.
	if err := os.WriteFile(filepath.Join(dir, admin.SocketName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	failCLI(t, ExitError, "no node is serving", "", "user", "list", "--data", dir)
}

func TestCLIUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"domain"}, "needs a subcommand"},
		{[]string{"domain", "rename", "--data", "/tmp/x", "a.test"}, "unknown command"},
		{[]string{"domain", "add", "example.test"}, "--data"},
		{[]string{"domain", "add", "--data", "/tmp/x"}, "takes 1 argument"},
		{[]string{"user", "list", "--data", "/tmp/x", "extra"}, "takes 0 argument"},
		{[]string{"user", "list", "--data", "/tmp/x", "--nope"}, "flag provided but not defined"},
		{[]string{"serve", "extra"}, "no arguments"},
	}
	for _, tt := range tests {
		failCLI(t, ExitUsage, tt.want, "", tt.args...)
	}
	r := runCLI(t, context.Background(), "", "help")
	if r.code != ExitOK || !strings.Contains(r.stdout, "mailnode serve --data DIR") {
		t.Errorf("help: %d %q", r.code, r.stdout)
	}
	// Every command the summary sends "below" has its section there.
	for _, section := range []string{
		"\nLogin lockouts and command-rate limits:\n", "\nAudit log:\n", "\nOutbound queue", "\nSessions and recent logins:\n",
		"\nAdmin API tokens", "\nDKIM signing keys", "\nAliases and catch-all:\n",
		"\nApp passwords and MFA:\n", "\nBackups:\n", "\nExporting a user's data:\n", "\nImporting mail:\n",
	} {
		if !strings.Contains(r.stdout, section) {
			t.Errorf("help has no section %q", strings.TrimSpace(section))
		}
	}
	r = runCLI(t, context.Background(), "", "version")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "mailnode test (go") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
}

func TestCLIServeRejectsBadConfig(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(cfgFile, []byte("[listen]\nsmtpd = \"127.0.0.1:25\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	failCLI(t, ExitError, "unknown key(s): listen.smtpd", "", "serve", "--config", cfgFile, "--data", t.TempDir())
	failCLI(t, ExitError, "data_dir", "", "serve")
	failCLI(t, ExitError, "log.level", "", "serve", "--data", t.TempDir(), "--log-level", "chatty")
	failCLI(t, ExitError, "read config", "", "serve", "--config", filepath.Join(t.TempDir(), "missing.toml"))
}

// TestCLIServe runs `mailnode serve` in-process with a config file on
// port 0, administers it through --config, and stops it by cancelling
// the context as SIGTERM does.
func TestCLIServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfgFile := filepath.Join(t.TempDir(), "mailnode.toml")
	var listen strings.Builder
	for _, name := range ListenerNames() {
		fmt.Fprintf(&listen, "%s = \"127.0.0.1:0\"\n", name)
	}
	conf := fmt.Sprintf("data_dir = %q\nmail_shards = 1\n[listen]\n%s[log]\nformat = \"text\"\n", dir, listen.String())
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		cli := CLI{Version: "test", Stdin: strings.NewReader(""), Stdout: &logs, Stderr: &logs}
		done <- cli.Run(ctx, []string{"serve", "--config", cfgFile, "--hostname", "mail.example.test", "--node-id", "n7"})
	}()

	client := admin.NewClient(dir)
	defer client.Close()
	deadline := time.Now().Add(30 * time.Second)
	var st admin.Status
	for {
		var err error
		st, err = client.Status(ctx)
		if err == nil && st.Ready {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited early with %d:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready: %v %+v\n%s", err, st, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.NodeID != "n7" || st.Hostname != "mail.example.test" || st.Listeners[ListenSMTP] == "" {
		t.Errorf("flags not applied: %+v", st)
	}
	mustCLI(t, "", "domain", "add", "--config", cfgFile, "example.test")
	var js admin.Status
	if err := json.Unmarshal([]byte(mustCLI(t, "", "status", "--json", "--data", dir)), &js); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if !js.Ready || js.Listeners[ListenIMAP] != st.Listeners[ListenIMAP] {
		t.Errorf("status --json = %+v", js)
	}

	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("serve exit %d after cancel:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after cancel")
	}
	out := logs.String()
	for _, want := range []string{"node started", "shutting down", "node stopped", "level=INFO"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	// After shutdown the admin commands say so.
	failCLI(t, ExitError, "no node is serving", "", "domain", "list", "--data", dir)
}

// TestAdminRejectsBadRequests speaks raw HTTP to the admin socket.
func TestAdminRejectsBadRequests(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	fi, err := os.Stat(n.AdminSocket())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode %v, want a 0600 socket", fi.Mode())
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.AdminSocket())
		},
	}}
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown field", "POST", "/v1/domains", `{"name":"a.test","color":"red"}`, 400, admin.CodeInvalid},
		{"trailing data", "POST", "/v1/domains", `{"name":"a.test"} {}`, 400, admin.CodeInvalid},
		{"not json", "POST", "/v1/users", `address=a@b.test`, 400, admin.CodeInvalid},
		{"too large", "POST", "/v1/users", `{"address":"a@b.test","password":"` + strings.Repeat("x", 70<<10) + `"}`, 400, admin.CodeInvalid},
		{"bad domain", "POST", "/v1/domains", `{"name":"-bad-"}`, 400, admin.CodeInvalid},
		{"bad mfa policy", "PUT", "/v1/domains/a.test/mfa", `{"policy":"sometimes"}`, 400, admin.CodeInvalid},
		{"bad app password name", "POST", "/v1/users/a@b.test/app-passwords", `{"name":"a/b"}`, 400, admin.CodeInvalid},
		{"unknown route", "GET", "/v1/nothing", "", 404, ""},
		{"wrong method", "PATCH", "/v1/domains", "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://mailnode"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.code != "" && !strings.Contains(string(b), `"code":"`+tt.code+`"`) {
				t.Errorf("body %s lacks code %s", b, tt.code)
			}
			if strings.Contains(string(b), "xxxxxxxx") {
				t.Error("error body echoes the password")
			}
		})
	}
	hc.CloseIdleConnections()
}

// TestClusterStatusTableWithoutALeader: a shard without a leader shows
// NONE and no term or commit index (they are the leader's), and its
// replicas as the status reports them.
func TestClusterStatusTableWithoutALeader(t *testing.T) {
	var buf bytes.Buffer
	err := printClusterStatus(&buf, cluster.Status{ClusterID: "c1", Node: "n1", Shards: []cluster.ShardStatus{
		{Shard: 1, Home: "eu", Leader: "n1", Term: 4, CommitIndex: 29, Replicas: []cluster.ReplicaStatus{
			{Node: "n1", Voter: true, Placed: true, State: "leader", AppliedIndex: 29}}},
		{Shard: 3, Home: "ap", Replicas: []cluster.ReplicaStatus{
			{Node: "n1", Voter: true, Placed: true, State: "follower", AppliedIndex: 33},
			{Node: "n3", Voter: true, Placed: true, State: "candidate", AppliedIndex: 31}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var led, leaderless string
	for _, line := range strings.Split(buf.String(), "\n") {
		switch f := strings.Fields(line); {
		case len(f) > 0 && f[0] == "1":
			led = strings.Join(f[:5], " ")
		case len(f) > 0 && f[0] == "3":
			leaderless = strings.Join(f, " ")
		}
	}
	if led != "1 eu n1 4 29" {
		t.Errorf("led shard's row starts %q, want %q\n%s", led, "1 eu n1 4 29", buf.String())
	}
	if want := "3 ap NONE - - n1:follower:33:0 n3:candidate:31:0"; leaderless != want {
		t.Errorf("leaderless shard's row %q, want %q\n%s", leaderless, want, buf.String())
	}
}
