//go:build compose

package composetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds on waiting.
const (
	dockerTimeout   = 2 * time.Minute  // one docker or compose command
	buildTimeout    = 5 * time.Minute  // go build, docker build, compose up
	formTimeout     = 3 * time.Minute  // three nodes up, every shard led
	loadTimeout     = 2 * time.Minute  // enough messages acknowledged
	failoverTimeout = 2 * time.Minute  // a new leader, and deliveries again
	rejoinTimeout   = 3 * time.Minute  // the killed node back and caught up
	readTimeout     = time.Minute      // reading the mailbox after a fault
	ioTimeout       = 30 * time.Second // one client session
	pollInterval    = 250 * time.Millisecond
)

// The load: workers deliver messages without pause; the leader is killed
// once minAcked messages were acknowledged, and the load runs until
// minAcked more were acknowledged after the kill.
const (
	loadWorkers = 4
	minAcked    = 40
)

const (
	domain = "compose.test"
	user   = "alice@" + domain
)

// nodes are the services of docker-compose.yml, and their regions.
var (
	nodes   = []string{"n1", "n2", "n3"}
	regions = map[string]string{"n1": "eu", "n2": "us", "n3": "ap"}
)

// portVars name the ports docker-compose.yml publishes, as in the
// variables (MAILCLUSTER_N1_SMTP...) that set their host side.
var portVars = []string{"SMTP", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "POP3", "POP3S", "HTTP", "HTTPS"}

const (
	portSMTP  = 2525
	portIMAPS = 2993
)

// TestComposeCluster runs the three-region cluster of docker-compose.yml,
// delivers and reads across nodes, kills the leader of the user's mail
// shard under load, and checks that nothing acknowledged was lost.
func TestComposeCluster(t *testing.T) {
	c := setUp(t)

	c.step("cluster forms: three nodes up in their regions, every shard led")
	waitFor(t, formTimeout, "three nodes up, every shard led", func() error {
		s, err := c.clusterStatus("n1")
		if err != nil {
			return err
		}
		return s.formed()
	})

	c.step("admin commands as operators run them: compose exec, no --data")
	if out, err := c.compose(dockerTimeout, "", "exec", "-T", "n1", "mailnode", "cluster", "status"); err != nil || !strings.Contains(out, "n3") {
		t.Fatalf("compose exec -T n1 mailnode cluster status: %v\n%s", err, out)
	}

	// The domain's mail is homed in eu, so the user's shard is led by n1,
	// which also leads the meta shard and admitted the others: the node
	// whose loss is the hardest.
	c.step("domain (region eu) and user through n1")
	password := "pw-" + randomHex(8)
	c.mustAdmin("n1", "", "domain", "add", "--region", "eu", domain)
	c.mustAdmin("n1", password+"\n", "user", "add", user)
	var u userInfo
	if err := json.Unmarshal([]byte(c.mustAdmin("n1", "", "user", "show", "--json", user)), &u); err != nil {
		t.Fatalf("user show --json: %v", err)
	}
	// Every node knows the user (the directory is replicated).
	for _, n := range nodes {
		waitFor(t, formTimeout, "user known on "+n, func() error {
			_, err := c.admin(n, "", "user", "show", "--json", user)
			return err
		})
	}

	c.step("deliver through n2 (SMTP), read through n3 (IMAPS) and n1")
	first := newMessage(0, "cross-node")
	if err := c.deliver("n2", first); err != nil {
		t.Fatalf("deliver through n2: %v", err)
	}
	for _, n := range []string{"n3", "n1"} {
		var got map[string]int
		waitFor(t, readTimeout, "first message visible through "+n, func() (err error) {
			got, err = c.readMessageIDs(n, password)
			if err == nil && got[first.id] != 1 {
				err = fmt.Errorf("message %s found %d times", first.id, got[first.id])
			}
			return err
		})
	}

	s, err := c.clusterStatus("n1")
	if err != nil {
		t.Fatal(err)
	}
	victim := s.shard(u.Shard).Leader
	if !slices.Contains(nodes, victim) {
		t.Fatalf("shard %d of %s has no leader among %v: %q", u.Shard, user, nodes, victim)
	}
	survivors := others(victim)
	t.Logf("%s lives on mail shard %d, led by %s (%s); survivors %v", user, u.Shard, victim, regions[victim], survivors)

	c.step(fmt.Sprintf("load through %v, then SIGKILL %s", survivors, victim))
	var targets []target
	for _, n := range survivors {
		addr, err := c.hostAddr(n, portSMTP)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, target{node: n, addr: addr, tls: c.tlsConfig(n)})
	}
	l := startLoad(targets, loadWorkers)
	defer l.stop()
	waitFor(t, loadTimeout, fmt.Sprintf("%d messages acknowledged", minAcked), func() error {
		return l.atLeast(minAcked)
	})
	// Kill the shard's leader as it is now: leadership may have moved.
	if s, err := c.clusterStatus(survivors[0]); err == nil {
		if ld := s.shard(u.Shard).Leader; ld != victim && slices.Contains(nodes, ld) {
			t.Logf("leadership of shard %d moved to %s under load: killing it instead of %s", u.Shard, ld, victim)
			victim, survivors = ld, others(ld)
		}
	}
	if _, err := c.compose(dockerTimeout, "", "kill", "-s", "KILL", victim); err != nil {
		l.stop()
		t.Fatalf("kill %s: %v", victim, err)
	}
	killedAt := l.ackedCount()
	t.Logf("killed %s after %d acknowledged messages (%d refused so far)", victim, killedAt, l.failures.Load())

	waitFor(t, failoverTimeout, fmt.Sprintf("a new leader of shard %d", u.Shard), func() error {
		s, err := c.clusterStatus(survivors[0])
		if err != nil {
			return err
		}
		if ld := s.shard(u.Shard).Leader; ld == "" || ld == victim {
			return fmt.Errorf("leader %q", ld)
		}
		return nil
	})
	waitFor(t, failoverTimeout, fmt.Sprintf("%d more messages acknowledged after the kill", minAcked), func() error {
		return l.atLeast(killedAt + minAcked)
	})
	l.stop()
	acked := l.ackedIDs()
	acked[first.id] = true
	t.Logf("load: %d acknowledged, %d refused or cut off (last: %v)", len(acked)-1, l.failures.Load(), l.lastError())

	c.step("every acknowledged message exactly once through " + survivors[0])
	c.checkMailbox(survivors[0], password, acked)

	c.step("restart " + victim + " and wait until it caught up")
	if _, err := c.compose(buildTimeout, "", "start", victim); err != nil {
		t.Fatalf("start %s: %v", victim, err)
	}
	c.forgetPorts(victim)
	waitFor(t, rejoinTimeout, victim+" ready", func() error {
		out, err := c.admin(victim, "", "status", "--json")
		if err != nil {
			return err
		}
		var st nodeStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Errorf("status --json: %w", err)
		}
		if !st.Ready {
			return fmt.Errorf("not ready: %s", st.ReadyError)
		}
		return nil
	})
	// Caught up: the victim's replica of every shard has applied what the
	// survivors had applied when it came back.
	target, err := c.clusterStatus(survivors[0])
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, rejoinTimeout, victim+" up and caught up on every shard", func() error {
		s, err := c.clusterStatus(survivors[0])
		if err != nil {
			return err
		}
		return s.caughtUp(victim, target)
	})

	c.step("the restarted " + victim + " serves: read everything through it, deliver through it")
	c.checkMailbox(victim, password, acked)
	last := newMessage(1, "after-restart")
	if err := c.deliver(victim, last); err != nil {
		t.Fatalf("deliver through the restarted %s: %v", victim, err)
	}
	waitFor(t, readTimeout, "the last message through "+survivors[1], func() error {
		got, err := c.readMessageIDs(survivors[1], password)
		if err == nil && got[last.id] != 1 {
			err = fmt.Errorf("message %s found %d times", last.id, got[last.id])
		}
		return err
	})
}

// others returns the nodes but one.
func others(node string) []string {
	var out []string
	for _, n := range nodes {
		if n != node {
			out = append(out, n)
		}
	}
	return out
}

// --- the compose project ---

// cluster is one compose project of docker-compose.yml: its own project
// name, image and free host ports.
type cluster struct {
	t          *testing.T
	root       string   // the repository: project directory and compose file
	composeCmd []string // "docker compose" or "docker-compose"
	project    string
	image      string
	env        []string
	work       string
	started    time.Time

	mu    sync.Mutex
	ids   map[string]string // node -> container id
	ports map[string]string // "n1/2525" -> host address
	tls   map[string]*tls.Config
}

// setUp finds Docker and compose, builds the image, and brings the three
// nodes up; everything is removed again when the test ends.
func setUp(t *testing.T) *cluster {
	t.Helper()
	requireDocker(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{
		t:          t,
		root:       root,
		composeCmd: composeCommand(t),
		project:    os.Getenv("MAILCLUSTER_COMPOSE_PROJECT"),
		work:       t.TempDir(),
		started:    time.Now(),
		ids:        make(map[string]string),
		ports:      make(map[string]string),
		tls:        make(map[string]*tls.Config),
	}
	if c.project == "" {
		c.project = "mailclustertest" + randomHex(4)
	}
	c.image = "mailcluster/mailnode:" + c.project
	c.env = append(os.Environ(),
		"MAILCLUSTER_IMAGE="+c.image,
		"MAILCLUSTER_TOKEN=composetest-"+randomHex(16),
	)
	for _, n := range nodes {
		for _, name := range portVars {
			// An empty host port: Docker picks a free one.
			c.env = append(c.env, fmt.Sprintf("MAILCLUSTER_%s_%s=127.0.0.1:", strings.ToUpper(n), name))
		}
	}
	t.Logf("compose: %s, project %s, image %s", strings.Join(c.composeCmd, " "), c.project, c.image)

	c.step("build the binary and the image")
	bin := os.Getenv("MAILNODE_BIN")
	if bin == "" {
		bin = filepath.Join(c.work, "mailnode")
		if out, err := c.run(buildTimeout, "", []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", bin, "./node/cmd/mailnode"); err != nil {
			t.Fatalf("build mailnode: %v\n%s", err, out)
		}
	}
	buildDir := filepath.Join(c.work, "image")
	if err := os.MkdirAll(filepath.Join(buildDir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ from, to string }{
		{bin, "bin/mailnode"}, {filepath.Join(root, "Dockerfile"), "Dockerfile"}, {filepath.Join(root, ".dockerignore"), ".dockerignore"},
	} {
		if err := copyFile(f.from, filepath.Join(buildDir, f.to)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if out, err := c.run(dockerTimeout, "", nil, "docker", "image", "rm", "-f", c.image); err != nil {
			t.Errorf("remove image %s: %v\n%s", c.image, err, out)
		}
	})
	if out, err := c.run(buildTimeout, "", nil, "docker", "build", "-q", "-t", c.image, buildDir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}

	c.step("compose up")
	t.Cleanup(c.down)
	t.Cleanup(c.dumpLogsOnFailure)
	if out, err := c.compose(buildTimeout, "", "up", "-d", "--no-build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	return c
}

// step logs the start of a phase with the time since set-up.
func (c *cluster) step(what string) {
	c.t.Helper()
	c.t.Logf("[%5.1fs] %s", time.Since(c.started).Seconds(), what)
}

// down removes the project's containers, network and volumes, and checks
// that none is left.
func (c *cluster) down() {
	out, err := c.compose(dockerTimeout, "", "down", "-v", "--remove-orphans", "-t", "20")
	if err != nil {
		c.t.Errorf("compose down: %v\n%s", err, out)
	}
	left, err := c.run(dockerTimeout, "", nil, "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+c.project)
	if err != nil {
		c.t.Errorf("docker ps: %v", err)
	} else if strings.TrimSpace(left) != "" {
		c.t.Errorf("containers of %s left after compose down: %s", c.project, strings.Fields(left))
	}
}

// dumpLogsOnFailure logs the end of every node's log when the test failed.
func (c *cluster) dumpLogsOnFailure() {
	if !c.t.Failed() {
		return
	}
	for _, n := range nodes {
		out, _ := c.compose(dockerTimeout, "", "logs", "--no-color", "--tail", "60", n)
		c.t.Logf("last log lines of %s:\n%s", n, out)
	}
	out, _ := c.compose(dockerTimeout, "", "ps")
	c.t.Logf("compose ps:\n%s", out)
}

// run runs a command in the repository with a deadline and returns its
// standard output; the error carries standard error.
func (c *cluster) run(timeout time.Duration, stdin string, extraEnv []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.root
	cmd.Env = append(slices.Clip(c.env), extraEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %s)", ctx.Err(), timeout)
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// compose runs one compose command on the test's project.
func (c *cluster) compose(timeout time.Duration, stdin string, args ...string) (string, error) {
	full := append(slices.Clone(c.composeCmd[1:]),
		"-p", c.project, "-f", filepath.Join(c.root, "docker-compose.yml"), "--project-directory", c.root)
	return c.run(timeout, stdin, nil, c.composeCmd[0], append(full, args...)...)
}

// container returns the id of a node's container (the same after a kill
// and start).
func (c *cluster) container(node string) (string, error) {
	c.mu.Lock()
	id := c.ids[node]
	c.mu.Unlock()
	if id != "" {
		return id, nil
	}
	out, err := c.compose(dockerTimeout, "", "ps", "-q", node)
	if err != nil {
		return "", err
	}
	if id = strings.TrimSpace(out); id == "" {
		return "", fmt.Errorf("no container for %s", node)
	}
	c.mu.Lock()
	c.ids[node] = id
	c.mu.Unlock()
	return id, nil
}

// admin runs a mailnode admin command inside a node's container, without
// --data (the image sets MAILNODE_DATA). It uses docker exec on the
// project's container: the same as `compose exec -T`, without the
// standalone docker-compose's seconds of start-up on every poll.
func (c *cluster) admin(node, stdin string, args ...string) (string, error) {
	id, err := c.container(node)
	if err != nil {
		return "", err
	}
	return c.run(dockerTimeout, stdin, nil, "docker", append([]string{"exec", "-i", id, "mailnode"}, args...)...)
}

func (c *cluster) mustAdmin(node, stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.admin(node, stdin, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// hostAddr returns the host address a node's container port is published
// on (a free port Docker chose; it changes when the container restarts).
func (c *cluster) hostAddr(node string, port int) (string, error) {
	key := fmt.Sprintf("%s/%d", node, port)
	c.mu.Lock()
	addr, ok := c.ports[key]
	c.mu.Unlock()
	if ok {
		return addr, nil
	}
	id, err := c.container(node)
	if err != nil {
		return "", err
	}
	out, err := c.run(dockerTimeout, "", nil, "docker", "port", id, fmt.Sprintf("%d/tcp", port))
	if err != nil {
		return "", err
	}
	lines := strings.Fields(out)
	if len(lines) == 0 {
		return "", fmt.Errorf("%s: port %d is not published", node, port)
	}
	addr = lines[len(lines)-1]
	if _, p, err := net.SplitHostPort(addr); err != nil || p == "0" {
		return "", fmt.Errorf("%s: port %d: unexpected %q", node, port, out)
	}
	c.mu.Lock()
	c.ports[key] = addr
	c.mu.Unlock()
	return addr, nil
}

func (c *cluster) forgetPorts(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.ports {
		if strings.HasPrefix(k, node+"/") {
			delete(c.ports, k)
		}
	}
}

// tlsConfig trusts a node's self-signed certificate, copied out of its
// container, for its host name (nN.mailcluster.test).
func (c *cluster) tlsConfig(node string) *tls.Config {
	c.t.Helper()
	c.mu.Lock()
	cfg := c.tls[node]
	c.mu.Unlock()
	if cfg != nil {
		return cfg
	}
	id, err := c.container(node)
	if err != nil {
		c.t.Fatal(err)
	}
	path := filepath.Join(c.work, node+"-cert.pem")
	if out, err := c.run(dockerTimeout, "", nil, "docker", "cp", id+":/data/tls/cert.pem", path); err != nil {
		c.t.Fatalf("copy the certificate of %s: %v\n%s", node, err, out)
	}
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		c.t.Fatalf("%s: no certificate in %s", node, path)
	}
	cfg = &tls.Config{RootCAs: pool, ServerName: node + ".mailcluster.test", MinVersion: tls.VersionTLS12}
	c.mu.Lock()
	c.tls[node] = cfg
	c.mu.Unlock()
	return cfg
}

// --- status ---

// clusterStatus is the part of `mailnode cluster status --json` the test
// reads.
type clusterStatus struct {
	Node  string `json:"node"`
	Nodes []struct {
		ID     string `json:"id"`
		Region string `json:"region"`
		Health string `json:"health"`
	} `json:"nodes"`
	Shards []shardStatus `json:"shards"`
}

type shardStatus struct {
	Shard       uint32          `json:"shard"`
	Leader      string          `json:"leader"`
	CommitIndex uint64          `json:"commit_index"`
	Replicas    []replicaStatus `json:"replicas"`
}

type replicaStatus struct {
	Node         string `json:"node"`
	Voter        bool   `json:"voter"`
	State        string `json:"state"`
	AppliedIndex uint64 `json:"applied_index"`
}

// userInfo is `mailnode user show --json`.
type userInfo struct {
	Address string `json:"address"`
	Shard   uint32 `json:"shard"`
}

// nodeStatus is the part of `mailnode status --json` the test reads.
type nodeStatus struct {
	Ready      bool   `json:"ready"`
	ReadyError string `json:"ready_error"`
}

func (c *cluster) clusterStatus(node string) (clusterStatus, error) {
	var s clusterStatus
	out, err := c.admin(node, "", "cluster", "status", "--json")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("cluster status --json: %w", err)
	}
	return s, nil
}

// formed reports nil once every node is up in its region and every
// shard has a leader and a voting replica on every node.
func (s clusterStatus) formed() error {
	up := map[string]bool{}
	for _, n := range s.Nodes {
		if n.Health == "up" && regions[n.ID] == n.Region {
			up[n.ID] = true
		}
	}
	for _, n := range nodes {
		if !up[n] {
			return fmt.Errorf("%s not up in region %s (as %s sees it)", n, regions[n], s.Node)
		}
	}
	if len(s.Shards) == 0 {
		return errors.New("no shards")
	}
	for _, sh := range s.Shards {
		if sh.Leader == "" {
			return fmt.Errorf("shard %d has no leader", sh.Shard)
		}
		voters := 0
		for _, r := range sh.Replicas {
			if r.Voter {
				voters++
			}
		}
		if voters != len(nodes) {
			return fmt.Errorf("shard %d has %d voting replicas", sh.Shard, voters)
		}
	}
	return nil
}

func (s clusterStatus) shard(n uint32) shardStatus {
	for _, sh := range s.Shards {
		if sh.Shard == n {
			return sh
		}
	}
	return shardStatus{Shard: n}
}

// caughtUp reports nil once node is up and its replica of every shard
// is a leader or follower that applied at least what any replica had
// applied in target.
func (s clusterStatus) caughtUp(node string, target clusterStatus) error {
	for _, n := range s.Nodes {
		if n.ID == node && n.Health != "up" {
			return fmt.Errorf("%s is %s", node, n.Health)
		}
	}
	for _, want := range target.Shards {
		var need uint64
		for _, r := range want.Replicas {
			need = max(need, r.AppliedIndex)
		}
		sh := s.shard(want.Shard)
		i := slices.IndexFunc(sh.Replicas, func(r replicaStatus) bool { return r.Node == node })
		if i < 0 {
			return fmt.Errorf("shard %d has no replica on %s", sh.Shard, node)
		}
		r := sh.Replicas[i]
		if r.State != "leader" && r.State != "follower" {
			return fmt.Errorf("shard %d: replica on %s is %s", sh.Shard, node, r.State)
		}
		if r.AppliedIndex < need {
			return fmt.Errorf("shard %d: replica on %s applied %d of %d", sh.Shard, node, r.AppliedIndex, need)
		}
	}
	return nil
}

// --- environment ---

// requireDocker skips the test when no Docker engine answers, unless CI
// is set: there a missing engine is a failure.
func requireDocker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err == nil {
		t.Logf("Docker engine %s", strings.TrimSpace(string(out)))
		return
	}
	msg := fmt.Sprintf("no Docker engine: docker version: %v: %s", err, strings.TrimSpace(string(out)))
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so the compose test must run)", msg)
	}
	t.Skipf("skipping the compose end-to-end test: %s", msg)
}

// composeCommand returns $MAILCLUSTER_COMPOSE, or the compose plugin,
// or the standalone docker-compose. With a Docker engine but no compose,
// the test fails.
func composeCommand(t *testing.T) []string {
	t.Helper()
	if v := strings.Fields(os.Getenv("MAILCLUSTER_COMPOSE")); len(v) > 0 {
		return v
	}
	for _, cand := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := exec.CommandContext(ctx, cand[0], append(cand[1:], "version")...).Run()
		cancel()
		if err == nil {
			return cand
		}
	}
	t.Fatal("a Docker engine runs, but neither `docker compose` nor docker-compose is installed")
	return nil
}

// repoRoot returns the directory of go.mod above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// waitFor polls cond until it returns nil, and fails the test with its
// last error when timeout passes first.
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
