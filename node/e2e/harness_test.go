package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bounds on waiting for the node process.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	cliTimeout   = time.Minute
	pollInterval = 50 * time.Millisecond
)

// The domain every test user lives in, and the shared node's hostname
// (not the default "localhost", so certificate checks prove the
// certificate was generated for the configured name).
const (
	testDomain     = "e2e.test"
	sharedHostname = "mail.e2e.test"
)

// suite is what TestMain prepares for every test: the binary and the
// node that tests which do not interfere share.
type suite struct {
	bin     string
	workDir string

	sharedOnce sync.Once
	shared     *node
	sharedErr  error
}

// env is set once by TestMain before any test runs.
var env *suite

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if testing.Short() {
		fmt.Println("e2e: skipping the end-to-end tests in -short mode")
		return 0
	}
	work, err := os.MkdirTemp("", "mailnode-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(work)
	bin, err := mailnodeBinary(work)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	env = &suite{bin: bin, workDir: work}
	code := m.Run()
	if env.shared != nil {
		if err := env.shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stop shared node:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// mailnodeBinary returns MAILNODE_E2E_BIN, or builds the binary into dir
// the way `make build` does.
func mailnodeBinary(dir string) (string, error) {
	if bin := os.Getenv("MAILNODE_E2E_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("MAILNODE_E2E_BIN: %w", err)
		}
		return bin, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the mailcluster module")
	}
	bin := filepath.Join(dir, "mailnode")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./node/cmd/mailnode")
	build.Dir = filepath.Dir(gomod)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build mailnode: %w\n%s", err, out)
	}
	return bin, nil
}

// nodeOptions are the settings a test may change in a node's config.
type nodeOptions struct {
	hostname       string
	logLevel       string // default "info", the production level
	maxMessageSize string // TOML byte size, e.g. "64KiB"
	maxRecipients  int
	maxConnsPerIP  int
	// handshakeTimeout is [limits] handshake_timeout (TOML duration);
	// "" keeps the node's default.
	handshakeTimeout string
	// postmaster is the config's postmaster address; "" for none.
	postmaster string
	// productionAuthGuard keeps the node's default brute-force limits
	// (per address and per user) instead of the permissive ones every
	// other test needs, only without the delay before a failure's answer.
	productionAuthGuard bool
	// Cluster membership (empty for a node of its own): the node id and
	// region, a fixed cluster port, and the arguments of its first start
	// (--join and --token, or --bootstrap-token).
	nodeID        string
	region        string
	clusterListen string
	firstArgs     []string
	// dataDir, if set, is the node's data directory (default: "data" in
	// the node's directory, beside its config and log).
	dataDir string
}

// node is one mailnode process (and its restarts) on one data directory.
type node struct {
	bin      string
	dir      string // holds config, log and data directory
	data     string
	config   string
	logPath  string
	hostname string

	cmd  *exec.Cmd
	done chan struct{}
	// waitErr is the process's exit status, set before done is closed.
	waitErr error
	logFile *os.File

	addrMu    sync.Mutex // guards addrs, which load generators read
	addrs     map[string]string
	clientTLS *tls.Config
	// firstArgs are added to `serve` on this node's first start.
	firstArgs []string
	started   bool
}

// newNode writes the config of a node living in dir; it does not start it.
func newNode(bin, dir string, opts nodeOptions) (*node, error) {
	if opts.hostname == "" {
		opts.hostname = "localhost"
	}
	if opts.logLevel == "" {
		opts.logLevel = "info"
	}
	if opts.maxMessageSize == "" {
		opts.maxMessageSize = "50MiB"
	}
	if opts.maxRecipients == 0 {
		opts.maxRecipients = 100
	}
	if opts.maxConnsPerIP == 0 {
		opts.maxConnsPerIP = 200
	}
	if opts.nodeID == "" {
		opts.nodeID = "e2e1"
	}
	if opts.region == "" {
		opts.region = "default"
	}
	if opts.clusterListen == "" {
		opts.clusterListen = "127.0.0.1:0"
	}
	if opts.dataDir == "" {
		opts.dataDir = filepath.Join(dir, "data")
	}
	n := &node{
		bin:       bin,
		dir:       dir,
		data:      opts.dataDir,
		config:    filepath.Join(dir, "mailnode.toml"),
		logPath:   filepath.Join(dir, "node.log"),
		hostname:  opts.hostname,
		firstArgs: opts.firstArgs,
	}
	// Every listener on a free loopback port. The auth guard answers
	// failures at once and allows many of them: every test client comes
	// from 127.0.0.1.
	var topLevel, limitsExtra string
	if opts.postmaster != "" {
		topLevel = fmt.Sprintf("postmaster = %q\n", opts.postmaster)
	}
	if opts.handshakeTimeout != "" {
		limitsExtra = fmt.Sprintf("handshake_timeout      = %q\n", opts.handshakeTimeout)
	}
	guard := `max_failures_per_ip   = 10000
max_failures_per_user = 10000
window                = "1m"
lockout               = "1m"
failure_delay         = "0s"
`
	if opts.productionAuthGuard {
		guard = "failure_delay = \"0s\"\n"
	}
	cfg := fmt.Sprintf(`hostname = %q
data_dir = %q
node_id = %q
mail_shards = 2
%s
[listen]
smtp        = "127.0.0.1:0"
submission  = "127.0.0.1:0"
submissions = "127.0.0.1:0"
imap        = "127.0.0.1:0"
imaps       = "127.0.0.1:0"
pop3        = "127.0.0.1:0"
pop3s       = "127.0.0.1:0"
http        = "127.0.0.1:0"
https       = "127.0.0.1:0"

[cluster]
listen       = %q
region       = %q
raft_profile = "lan"

[limits]
max_message_size       = %q
max_recipients         = %d
max_connections        = 1000
max_connections_per_ip = %d
# Every test client comes from 127.0.0.1, so one address carries the
# load generators of several tests: the per-address command rate would
# refuse them (421) on a loaded machine. The limiter has its own tests.
commands_per_second    = 0

%s
[auth_guard]
%s
[dns]
# A closed port: mail to other domains stays queued (MX lookups fail
# temporarily), so no test depends on the network or gets a bounce.
servers = ["127.0.0.1:9"]
timeout = "1s"

[log]
level  = %q
format = "json"
`, opts.hostname, n.data, opts.nodeID, topLevel, opts.clusterListen, opts.region, opts.maxMessageSize, opts.maxRecipients, opts.maxConnsPerIP, limitsExtra, guard, opts.logLevel)
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	return n, nil
}

// startNode starts a node of its own for one test, stopped when the test
// ends.
func startNode(t testing.TB, opts nodeOptions) *node {
	t.Helper()
	n, err := newNode(env.bin, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("stop node: %v", err)
		}
	})
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	return n
}

// sharedNode returns the node shared by tests that use users of their
// own, starting it on first use; TestMain stops it.
func sharedNode(t testing.TB) *node {
	t.Helper()
	env.sharedOnce.Do(func() {
		dir := filepath.Join(env.workDir, "shared")
		if err := os.Mkdir(dir, 0o700); err != nil {
			env.sharedErr = err
			return
		}
		n, err := newNode(env.bin, dir, nodeOptions{hostname: sharedHostname})
		if err != nil {
			env.sharedErr = err
			return
		}
		env.shared = n
		if err := n.start(); err != nil {
			env.sharedErr = err
			return
		}
		env.sharedErr = n.addDomain(testDomain)
	})
	if env.sharedErr != nil {
		t.Fatalf("shared node: %v", env.sharedErr)
	}
	return env.shared
}

// start runs `mailnode serve` and waits until the node reports ready,
// then records its listeners and trusts its certificate.
func (n *node) start() error {
	if n.cmd != nil {
		return errors.New("node already running")
	}
	lf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open node log: %w", err)
	}
	args := []string{"serve", "--config", n.config}
	if !n.started {
		args = append(args, n.firstArgs...)
	}
	cmd := exec.Command(n.bin, args...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start mailnode: %w", err)
	}
	n.cmd, n.logFile, n.done, n.started = cmd, lf, make(chan struct{}), true
	go func() {
		n.waitErr = cmd.Wait()
		close(n.done)
	}()
	if err := n.waitReady(); err != nil {
		_ = n.kill()
		return fmt.Errorf("%w\nnode log:\n%s", err, n.logTail())
	}
	pemBytes, err := os.ReadFile(filepath.Join(n.data, "tls", "cert.pem"))
	if err != nil {
		return fmt.Errorf("read node certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return errors.New("node certificate: no PEM certificate")
	}
	n.clientTLS = &tls.Config{RootCAs: pool, ServerName: n.hostname, MinVersion: tls.VersionTLS12}
	return nil
}

// status is the part of `mailnode status --json` the tests read.
type status struct {
	Ready      bool              `json:"ready"`
	ReadyError string            `json:"ready_error"`
	Hostname   string            `json:"hostname"`
	Listeners  map[string]string `json:"listeners"`
}

// waitReady polls `mailnode status --json` until the node is ready, the
// process exits, or readyTimeout passes.
func (n *node) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			return fmt.Errorf("mailnode exited before it was ready: %v", n.waitErr)
		default:
		}
		out, err := n.cli("", "status", "--json")
		if err == nil {
			var s status
			if err := json.Unmarshal([]byte(out), &s); err != nil {
				return fmt.Errorf("status --json: %w: %s", err, out)
			}
			if s.Ready && len(s.Listeners) == 9 {
				n.addrMu.Lock()
				n.addrs = s.Listeners
				n.addrMu.Unlock()
				return nil
			}
			err = fmt.Errorf("not ready: %s (%d listeners)", s.ReadyError, len(s.Listeners))
		}
		last = err
		select {
		case <-n.done:
		case <-time.After(pollInterval):
		}
	}
	return fmt.Errorf("node not ready after %s: %v", readyTimeout, last)
}

// addr returns the bound address of a listener ("smtp", "imaps", ...).
func (n *node) addr(name string) string {
	a, ok := n.listenerAddr(name)
	if !ok {
		panic("e2e: no listener " + name)
	}
	return a
}

// stop sends SIGTERM and waits for a clean exit; a node that does not
// exit in time is killed and reported. Stopping a stopped node is a
// no-op.
func (n *node) stop() error {
	if n.cmd == nil {
		return nil
	}
	defer n.release()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal mailnode: %w", err)
	}
	select {
	case <-n.done:
	case <-time.After(stopTimeout):
		_ = n.cmd.Process.Kill()
		<-n.done
		return fmt.Errorf("mailnode did not stop within %s", stopTimeout)
	}
	if n.waitErr != nil {
		return fmt.Errorf("mailnode exited with %v\nnode log:\n%s", n.waitErr, n.logTail())
	}
	return nil
}

// kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (n *node) kill() error {
	if n.cmd == nil {
		return nil
	}
	defer n.release()
	if err := n.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill mailnode: %w", err)
	}
	select {
	case <-n.done:
		return nil
	case <-time.After(stopTimeout):
		return errors.New("mailnode did not die after SIGKILL")
	}
}

// freeze stops the process with SIGSTOP, as a VM stall or a long pause
// would: its sockets stay open and its peers hear nothing from it. The
// returned function resumes it (SIGCONT); it is also run at cleanup, so
// a failing test leaves no process stopped.
func (n *node) freeze(t testing.TB) (thaw func()) {
	t.Helper()
	p := n.cmd.Process
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP mailnode: %v", err)
	}
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			if err := p.Signal(syscall.SIGCONT); err != nil && !errors.Is(err, os.ErrProcessDone) {
				t.Errorf("SIGCONT mailnode: %v", err)
			}
		})
	}
	t.Cleanup(thaw)
	return thaw
}

func (n *node) release() {
	n.logFile.Close()
	n.cmd, n.logFile = nil, nil
	n.addrMu.Lock()
	n.addrs = nil
	n.addrMu.Unlock()
}

// listenerAddr returns the bound address of a listener while the node
// runs; it may be called from other goroutines.
func (n *node) listenerAddr(name string) (string, bool) {
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	a, ok := n.addrs[name]
	return a, ok
}

// cli runs one mailnode admin command against this node's data
// directory, with stdin as its standard input, and returns its standard
// output.
func (n *node) cli(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	// Flags may follow the positional arguments.
	full := append(append([]string{}, args...), "--data", n.data)
	cmd := exec.CommandContext(ctx, n.bin, full...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("mailnode %s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (n *node) addDomain(domain string) error {
	_, err := n.cli("", "domain", "add", domain)
	return err
}

// addUser creates a user with the CLI, the password on standard input.
func (n *node) addUser(t testing.TB, address, password string) {
	t.Helper()
	if _, err := n.cli(password+"\n", "user", "add", address); err != nil {
		t.Fatal(err)
	}
}

// newUser creates a user of testDomain whose address starts with name
// and is unique to this run (tests may run more than once against the
// shared node), and returns its address and password.
func (n *node) newUser(t testing.TB, name string) (address, password string) {
	t.Helper()
	address = name + "-" + randomHex(3) + "@" + testDomain
	password = name + "-password-" + randomHex(4)
	n.addUser(t, address, password)
	return address, password
}

// logBytes returns everything the node has logged so far.
func (n *node) logBytes(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logTail returns the end of the node log, for failure messages.
func (n *node) logTail() string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// waitFor polls cond every pollInterval until it returns nil or timeout
// passes, and fails the test with cond's last error then.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(pollInterval)
	}
}
