package targets

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds and shape of the cluster3 target.
const (
	// clusterNodes is the number of mailnode processes.
	clusterNodes = 3
	// clusterReplicas is how many replicas each mail shard keeps.
	clusterReplicas = 3
	// clusterConvergeTimeout bounds the wait until every shard has a
	// leader and all its replicas vote, after a start or a restart.
	clusterConvergeTimeout = 2 * time.Minute
	// clusterKillTimeout bounds the wait for a killed process to be reaped.
	clusterKillTimeout = 10 * time.Second
	// clusterPorts is how many ports a node listens on: SMTP, IMAP, POP3,
	// HTTP and the cluster port.
	clusterPorts = 5
)

// clusterNode is one mailnode process of the cluster3 target.
type clusterNode struct {
	id     string
	region string
	dir    string
	data   string
	config string
	// ports are SMTP, IMAP, POP3, HTTP and the cluster port.
	ports []int
	proc  *process
}

func (n *clusterNode) addr(i int) string { return "127.0.0.1:" + strconv.Itoa(n.ports[i]) }

func (n *clusterNode) endpoints() Endpoints {
	if len(n.ports) < clusterPorts {
		return Endpoints{}
	}
	return Endpoints{SMTP: n.addr(0), IMAP: n.addr(1), POP3: n.addr(2)}
}

func (n *clusterNode) httpAddr() string    { return n.addr(3) }
func (n *clusterNode) clusterAddr() string { return n.addr(4) }

// running reports whether the node's process is up.
func (n *clusterNode) running() bool {
	if n.proc == nil {
		return false
	}
	done, _ := n.proc.exited()
	return !done
}

// cluster3 is the "cluster3" target: three mailnode processes on
// loopback forming one cluster with three replicas of every shard, with
// the real settings (fsync on, encryption on) like the single target.
type cluster3 struct {
	opts    Options
	log     *slog.Logger
	bin     string
	dir     string
	token   string
	version string
	nodes   []*clusterNode
	// mu guards the nodes' processes: the failover workload kills and
	// restarts nodes while status queries run.
	mu sync.Mutex
}

func newCluster3(opts Options) (*cluster3, error) {
	bin := opts.Mailnode
	if bin == "" {
		bin = "bin/mailnode"
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("%w: mailnode binary %s: %v (run `make build`)", ErrUnavailable, bin, err)
	}
	c := &cluster3{opts: opts, log: opts.Logger.With("target", "cluster3"), bin: abs, dir: opts.Dir}
	for i := range clusterNodes {
		id := fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(opts.Dir, id)
		c.nodes = append(c.nodes, &clusterNode{id: id, region: fmt.Sprintf("r%d", i+1), dir: dir,
			data: filepath.Join(dir, "data"), config: filepath.Join(dir, "mailnode.toml")})
	}
	return c, nil
}

func (c *cluster3) Info() Info {
	return Info{
		Name:     "cluster3",
		Software: c.version,
		Durability: "250/OK after the Raft commit: the message's log entry is fsynced (raft-wal segment file) on a majority " +
			"(2 of 3) of the shard's replicas and applied on its leader; each replica's bbolt state file takes applied entries " +
			"in groups, fsynced within 150 ms or 4 MiB, and the log keeps them until then (a crash replays them); " +
			"3 replicas (voters) on 3 processes that share one disk",
		Storage: "8 mail shards, each a Raft log (raft-wal) and a bbolt state file on 3 nodes; every message, header and flag encrypted " +
			"(zstd, then XChaCha20-Poly1305 with a per-user key)",
		Auth: "argon2id (m=19 MiB, t=2, p=1) with a 5-minute in-memory cache of verified logins on each node",
		TLS:  "SMTP STARTTLS (MX port, no AUTH); IMAP STARTTLS + AUTHENTICATE PLAIN; POP3 STLS + AUTH PLAIN",
		Settings: map[string]string{
			"config": "mailnode defaults; listeners on 127.0.0.1, the run's certificate, log level warn",
			"nodes": "3 mailnode processes on 127.0.0.1 (n1 in region r1, n2 in r2, n3 in r3), raft profile lan; " +
				"n2 and n3 join n1 with a bootstrap token",
			"replicas": "3 per shard, all voters; mail shards placed by region (each node is home to some)",
			"clients": "SMTP, IMAP and POP3 clients spread round-robin over the 3 nodes; the check after " +
				"smtp-ingest reads each message through another node than the one that accepted it",
		},
	}
}

// Endpoints are the first node's; NodeEndpoints lists every node's.
func (c *cluster3) Endpoints() Endpoints { return c.nodes[0].endpoints() }

// NodeEndpoints returns every node's endpoints, in node order.
func (c *cluster3) NodeEndpoints() []Endpoints {
	out := make([]Endpoints, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.endpoints()
	}
	return out
}

// NodeIDs returns the nodes' ids, in node order.
func (c *cluster3) NodeIDs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.id
	}
	return out
}

func (c *cluster3) ClientTLS() *tls.Config { return c.opts.Cert.ClientTLS() }

// ProfileURLs are the CPU profile endpoints of the three nodes (the
// harness's configs switch [debug] pprof on).
func (c *cluster3) ProfileURLs() []string {
	var urls []string
	for _, n := range c.nodes {
		if len(n.ports) == clusterPorts {
			urls = append(urls, "http://"+n.httpAddr()+"/debug/pprof/profile")
		}
	}
	return urls
}

// Processes are the three nodes: their logs and, for those running,
// their debug endpoints.
func (c *cluster3) Processes() []Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Process
	for _, n := range c.nodes {
		p := Process{Name: "mailnode " + n.id, Log: filepath.Join(n.dir, "mailnode.log")}
		if n.running() && len(n.ports) == clusterPorts {
			p.Debug = "http://" + n.httpAddr()
		}
		out = append(out, p)
	}
	return out
}

func (c *cluster3) Start(ctx context.Context, users []User) error {
	out, err := run(30*time.Second, "", nil, c.bin, "version")
	if err != nil {
		return err
	}
	c.version = strings.TrimSpace(string(out))
	certFile, keyFile, err := c.opts.Cert.Write(filepath.Join(c.dir, "tls"))
	if err != nil {
		return err
	}
	if c.token, err = newToken(); err != nil {
		return err
	}
	ports, err := freePorts(clusterNodes * clusterPorts)
	if err != nil {
		return err
	}
	for i, n := range c.nodes {
		n.ports = ports[i*clusterPorts : (i+1)*clusterPorts]
		conf := nodeConfig{Hostname: c.opts.Cert.Hostname, Data: n.data, CertFile: certFile, KeyFile: keyFile,
			SMTP: n.ports[0], IMAP: n.ports[1], POP3: n.ports[2], HTTP: n.ports[3], Cluster: n.ports[4],
			Replicas: clusterReplicas}
		if err := writeFile(n.config, []byte(conf.render()), 0o644); err != nil {
			return err
		}
	}
	// The first node bootstraps the cluster; the others join it once it
	// is ready.
	for i, n := range c.nodes {
		if err := c.startNode(ctx, n, serveArgs(c.nodes, i, c.token, true)); err != nil {
			return err
		}
	}
	t0 := time.Now()
	if err := c.waitConverged(ctx, ""); err != nil {
		return err
	}
	c.log.Info("cluster converged", "took", time.Since(t0).Round(time.Millisecond))
	for _, n := range c.nodes {
		if err := waitEndpoints(ctx, n.endpoints()); err != nil {
			return err
		}
	}
	if _, err := c.admin(c.nodes[0], "", "domain", "add", c.opts.Domain); err != nil {
		return err
	}
	// Admin commands work through any node: spread them.
	for i, u := range users {
		if _, err := c.admin(c.nodes[i%len(c.nodes)], u.Password+"\n", "user", "add", u.Address); err != nil {
			return err
		}
	}
	c.log.Info("started", "version", c.version, "users", len(users), "endpoints", c.NodeEndpoints())
	return nil
}

// newToken returns a random bootstrap token.
func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("bootstrap token: %w", err)
	}
	return "mailbench-" + hex.EncodeToString(b), nil
}

// serveArgs returns the command line of node i. The first node accepts
// joins with token (it is its bootstrap token); the others join it with
// token on their first start (later starts keep their membership).
func serveArgs(nodes []*clusterNode, i int, token string, first bool) []string {
	n := nodes[i]
	args := []string{"serve", "--config", n.config, "--data", n.data, "--node-id", n.id, "--region", n.region,
		"--raft-profile", "lan", "--cluster-listen", n.clusterAddr()}
	switch {
	case i == 0:
		args = append(args, "--bootstrap-token", token)
	case first:
		args = append(args, "--join", nodes[0].clusterAddr(), "--token", token)
	}
	return args
}

// startNode starts one node and waits until its /readyz answers 200.
func (c *cluster3) startNode(ctx context.Context, n *clusterNode, args []string) error {
	p, err := c.launchNode(n, args)
	if err != nil {
		return err
	}
	return c.waitReady(ctx, n, p)
}

// launchNode starts one node's process.
func (c *cluster3) launchNode(n *clusterNode, args []string) (*process, error) {
	p, err := startProcess("mailnode "+n.id, filepath.Join(n.dir, "mailnode.log"), nil, append([]string{c.bin}, args...)...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	n.proc = p
	c.mu.Unlock()
	return p, nil
}

// waitReady waits until node n, running as p, answers 200 on /readyz.
func (c *cluster3) waitReady(ctx context.Context, n *clusterNode, p *process) error {
	url := "http://" + n.httpAddr() + "/readyz"
	client := &http.Client{Timeout: 2 * time.Second}
	return waitFor(ctx, mailnodeReadyTimeout, "mailnode "+n.id, func() error {
		if done, err := p.exited(); done {
			return errors.Join(fmt.Errorf("mailnode %s exited (see %s)", n.id, filepath.Join(n.dir, "mailnode.log")), err)
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		return nil
	})
}

// waitEndpoints waits until every endpoint greets.
func waitEndpoints(ctx context.Context, ep Endpoints) error {
	for _, w := range []struct{ addr, prefix string }{{ep.SMTP, "220"}, {ep.IMAP, "* OK"}, {ep.POP3, "+OK"}} {
		if err := waitGreeting(ctx, w.addr, w.prefix, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// clusterStatus is the part of `mailnode cluster status --json` the
// harness reads.
type clusterStatus struct {
	Node  string `json:"node"`
	Nodes []struct {
		ID     string `json:"id"`
		Health string `json:"health"`
	} `json:"nodes"`
	Shards []struct {
		Shard    uint32 `json:"shard"`
		Leader   string `json:"leader"`
		Replicas []struct {
			Node  string `json:"node"`
			Voter bool   `json:"voter"`
			State string `json:"state"`
		} `json:"replicas"`
	} `json:"shards"`
}

// converged says why st is not yet a cluster of nodes nodes where every
// node is up and every shard has a leader and replicas voting replicas;
// nil when it is. A replica of rejoined (a node id, or "") must also
// report its state, which it does once it runs again.
func converged(st clusterStatus, nodes, replicas int, rejoined string) error {
	up := 0
	for _, n := range st.Nodes {
		if n.Health != "up" {
			return fmt.Errorf("node %s is %s", n.ID, n.Health)
		}
		up++
	}
	if up != nodes {
		return fmt.Errorf("%d of %d nodes are members", up, nodes)
	}
	if len(st.Shards) == 0 {
		return errors.New("no shard reported")
	}
	for _, sh := range st.Shards {
		if sh.Leader == "" {
			return fmt.Errorf("shard %d has no leader", sh.Shard)
		}
		voters := 0
		for _, r := range sh.Replicas {
			if r.Voter {
				voters++
			}
			if r.Node == rejoined && (r.State == "" || r.State == "unknown") {
				return fmt.Errorf("shard %d: the replica on %s has not reported yet", sh.Shard, r.Node)
			}
		}
		if voters != replicas || len(sh.Replicas) != replicas {
			return fmt.Errorf("shard %d has %d replicas, %d voting; want %d voters", sh.Shard, len(sh.Replicas), voters, replicas)
		}
	}
	return nil
}

// leaderOf returns the node leading shard in st.
func leaderOf(st clusterStatus, shard uint32) (string, error) {
	for _, sh := range st.Shards {
		if sh.Shard == shard {
			if sh.Leader == "" {
				return "", fmt.Errorf("shard %d has no leader", shard)
			}
			return sh.Leader, nil
		}
	}
	return "", fmt.Errorf("shard %d: not in the cluster status", shard)
}

// status runs `mailnode cluster status --json` through a running node.
func (c *cluster3) status() (clusterStatus, error) {
	var st clusterStatus
	n, err := c.liveNode()
	if err != nil {
		return st, err
	}
	out, err := c.admin(n, "", "cluster", "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("cluster status: %w: %s", err, trimOutput(out))
	}
	return st, nil
}

// waitConverged waits until every node is up, every shard has a leader
// and all its replicas vote, and rejoined's replicas (if any) report.
func (c *cluster3) waitConverged(ctx context.Context, rejoined string) error {
	return waitFor(ctx, clusterConvergeTimeout, "cluster3", func() error {
		for _, n := range c.nodes {
			if !c.isRunning(n) {
				return fmt.Errorf("mailnode %s is not running (see %s)", n.id, filepath.Join(n.dir, "mailnode.log"))
			}
		}
		st, err := c.status()
		if err != nil {
			return err
		}
		return converged(st, len(c.nodes), clusterReplicas, rejoined)
	})
}

func (c *cluster3) isRunning(n *clusterNode) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return n.running()
}

// liveNode returns a running node, the first in node order.
func (c *cluster3) liveNode() (*clusterNode, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.running() {
			return n, nil
		}
	}
	return nil, errors.New("cluster3: no node is running")
}

func (c *cluster3) node(id string) (*clusterNode, error) {
	for _, n := range c.nodes {
		if n.id == id {
			return n, nil
		}
	}
	return nil, fmt.Errorf("cluster3: no node %q", id)
}

// admin runs a mailnode admin command through node n: args are the
// command words and arguments, --data is added.
func (c *cluster3) admin(n *clusterNode, stdin string, args ...string) ([]byte, error) {
	argv := append([]string{c.bin}, args...)
	argv = append(argv, "--data", n.data)
	return run(mailnodeAdminTimeout, stdin, nil, argv...)
}

// UserShard returns the mail shard holding address's mailbox.
func (c *cluster3) UserShard(_ context.Context, address string) (uint32, error) {
	n, err := c.liveNode()
	if err != nil {
		return 0, err
	}
	out, err := c.admin(n, "", "user", "show", "--json", address)
	if err != nil {
		return 0, err
	}
	var u struct {
		Shard uint32 `json:"shard"`
	}
	if err := json.Unmarshal(out, &u); err != nil {
		return 0, fmt.Errorf("user show %s: %w: %s", address, err, trimOutput(out))
	}
	if u.Shard == 0 {
		return 0, fmt.Errorf("user show %s: no mail shard", address)
	}
	return u.Shard, nil
}

// ShardLeader returns the node leading shard as a running node sees it.
// (A node reports a peer's replicas for a few seconds after its last
// answer, so right after a kill the dead node may still be named.)
func (c *cluster3) ShardLeader(_ context.Context, shard uint32) (string, error) {
	st, err := c.status()
	if err != nil {
		return "", err
	}
	return leaderOf(st, shard)
}

// Kill ends node id at once with SIGKILL, as a crash would.
func (c *cluster3) Kill(id string) error {
	n, err := c.node(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := n.proc
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("cluster3: node %s is not running", id)
	}
	if err := p.kill(clusterKillTimeout); err != nil {
		return err
	}
	c.log.Info("node killed", "node", id)
	return nil
}

// Restart starts node id again (it keeps its data and membership) and
// returns once it serves and the cluster has converged with it.
func (c *cluster3) Restart(ctx context.Context, id string) error {
	n, err := c.node(id)
	if err != nil {
		return err
	}
	if c.isRunning(n) {
		return fmt.Errorf("cluster3: node %s is running", id)
	}
	idx := 0
	for i := range c.nodes {
		if c.nodes[i] == n {
			idx = i
		}
	}
	if err := c.startNode(ctx, n, serveArgs(c.nodes, idx, c.token, false)); err != nil {
		return err
	}
	if err := waitEndpoints(ctx, n.endpoints()); err != nil {
		return err
	}
	return c.waitConverged(ctx, n.id)
}

// Compact snapshots every shard through each running node (truncating
// the Raft logs), then, one node at a time so that the cluster keeps its
// quorum, stops the node, rewrites its shard files without free pages
// and starts it again: what `mailnode compact` offers an operator.
func (c *cluster3) Compact(ctx context.Context) error {
	for _, n := range c.nodes {
		if _, err := c.admin(n, "", "compact"); err != nil {
			return fmt.Errorf("online compact of %s: %w", n.id, err)
		}
	}
	for i, n := range c.nodes {
		c.mu.Lock()
		p := n.proc
		c.mu.Unlock()
		if err := p.stop(mailnodeStopGrace); err != nil {
			return fmt.Errorf("stop %s: %w", n.id, err)
		}
		if _, err := c.admin(n, "", "compact"); err != nil {
			return fmt.Errorf("offline compact of %s: %w", n.id, err)
		}
		if err := c.startNode(ctx, n, serveArgs(c.nodes, i, c.token, false)); err != nil {
			return err
		}
		if err := waitEndpoints(ctx, n.endpoints()); err != nil {
			return err
		}
		if err := c.waitConverged(ctx, n.id); err != nil {
			return err
		}
	}
	return nil
}

// Pause stops every node, keeping their data and membership, until
// Resume.
func (c *cluster3) Pause() error { return c.Stop() }

// Resume starts every paused node again and returns once each serves and
// the cluster has converged. The nodes start together: none is ready
// before the shards it keeps have a quorum.
func (c *cluster3) Resume(ctx context.Context) error {
	procs := make([]*process, len(c.nodes))
	for i, n := range c.nodes {
		p, err := c.launchNode(n, serveArgs(c.nodes, i, c.token, false))
		if err != nil {
			return err
		}
		procs[i] = p
	}
	for i, n := range c.nodes {
		if err := c.waitReady(ctx, n, procs[i]); err != nil {
			return err
		}
	}
	if err := c.waitConverged(ctx, ""); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if err := waitEndpoints(ctx, n.endpoints()); err != nil {
			return err
		}
	}
	return nil
}

// Disk measures the shard directories of every node.
func (c *cluster3) Disk() (Disk, error) {
	roots := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		roots[i] = filepath.Join(n.data, "shards")
	}
	return diskUsage(roots...)
}

// Stop stops every node at once, so that none waits for a quorum the
// others are leaving.
func (c *cluster3) Stop() error {
	c.mu.Lock()
	procs := make([]*process, len(c.nodes))
	for i, n := range c.nodes {
		procs[i], n.proc = n.proc, nil
	}
	c.mu.Unlock()
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.stop(mailnodeStopGrace)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
