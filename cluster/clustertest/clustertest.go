// Package clustertest starts real clusters inside a test process: every
// node is a full member (cluster port with mutual TLS over loopback TCP,
// Raft groups over bbolt in a temporary directory, directory and mail
// store), so tests exercise what production runs. Faults are injected at
// the transport (partitions) and by stopping nodes with or without a
// hand-over. Nothing in production imports it.
package clustertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Options shape a test cluster. Zero fields take small defaults that keep
// tests fast on two cores.
type Options struct {
	// Nodes is how many nodes start (default 3).
	Nodes int
	// Regions are given to the nodes in turn (default "r1", "r2", "r3").
	Regions []string
	// MailShards of the new cluster (default 4).
	MailShards int
	// Replicas per mail shard (default 3).
	Replicas int
	// Timing of every Raft group (default: 500 ms timeouts, a LAN profile
	// that holds on a loaded machine; a Timing with only StuckWriteAfter
	// set takes that profile with it).
	Timing raftstore.Timing
	// DeadAfter is how long a node may be unreachable before its replicas
	// are replaced (default one minute).
	DeadAfter time.Duration
	// RouteTimeout bounds the wait for a leader (default 10 s).
	RouteTimeout time.Duration
	// Logger receives every node's logs (default: discarded; set
	// MAILCLUSTER_TEST_LOG=1 to see them on stderr).
	Logger *slog.Logger
	// FirstDir and FirstKey, if set, are the data directory and master
	// key of the first node (a restored backup, a directory to reopen).
	FirstDir string
	FirstKey *[32]byte
	// SearchIndexer, if set, builds the search record stored with every
	// message (mailstore.Config.SearchIndexer); nil stores none.
	SearchIndexer func(msg []byte) []byte
	// CommandLevel is the command level the nodes start at
	// (cluster.Config.CommandLevel; default the software's own).
	CommandLevel int
}

func (o *Options) defaults() {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if len(o.Regions) == 0 {
		o.Regions = []string{"r1", "r2", "r3"}
	}
	if o.MailShards == 0 {
		o.MailShards = 4
	}
	if o.Replicas == 0 {
		o.Replicas = 3
	}
	if o.Timing.HeartbeatTimeout == 0 {
		stuck := o.Timing.StuckWriteAfter // the one field a test may set alone
		o.Timing = raftstore.Timing{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
			LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 10 * time.Millisecond, StuckWriteAfter: stuck}
	}
	if o.DeadAfter == 0 {
		o.DeadAfter = time.Minute
	}
	if o.Logger == nil {
		if os.Getenv("MAILCLUSTER_TEST_LOG") != "" {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		} else {
			o.Logger = slog.New(slog.DiscardHandler)
		}
	}
}

// Cluster is a running test cluster.
type Cluster struct {
	t     testing.TB
	opts  Options
	token string // the bootstrap token every node accepts
	// root holds the nodes' data directories.
	root string

	mu    sync.Mutex
	Nodes []*Node
}

// Node is one member: its cluster, directory and mail store.
type Node struct {
	c      *Cluster
	ID     string
	Region string
	Dir    string
	// Addr is the node's cluster address, kept across restarts.
	Addr string
	// MasterKey is the cluster's master key as this node holds it (a test may
	// change it before a restart).
	MasterKey [32]byte
	// CommandLevel is the command level the node runs at
	// (cluster.Config.CommandLevel); a test may change it before a
	// restart, as an upgrade or a downgrade of its software would.
	CommandLevel int

	mu      sync.Mutex
	cluster *cluster.Cluster
	dir     *directory.Directory
	store   *mailstore.Store
	running bool
	// stalled are the replicas whose disk writes StallDisk holds.
	stalled []*raftstore.Shard
}

// Start starts a cluster: the first node creates it, the others join with
// a token, and Start waits until every shard has its replicas voting and
// a leader.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	opts.defaults()
	// The temporary directory is asked for before the cleanup that
	// stops the nodes is registered, so that its removal (also a
	// cleanup, run in reverse order) comes after the nodes stopped: a
	// node still running could write into it while it is removed.
	c := &Cluster{t: t, opts: opts, token: "bootstrap-" + rand.Text(), root: t.TempDir()}
	t.Cleanup(c.Close)
	for i := 0; i < opts.Nodes; i++ {
		c.AddNode(opts.Regions[i%len(opts.Regions)])
	}
	c.WaitConverged(2 * time.Minute)
	return c
}

// AddNode starts one more node in region; the first node creates the
// cluster, later ones join it through a running member with the
// bootstrap token.
func (c *Cluster) AddNode(region string) *Node {
	c.t.Helper()
	return c.AddNodeWithToken(region, c.token)
}

// AddNodeWithToken is AddNode with a join token of the caller's (one
// from IssueToken).
func (c *Cluster) AddNodeWithToken(region, token string) *Node {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.Nodes)
	c.mu.Unlock()
	n := &Node{c: c, ID: fmt.Sprintf("n%d", i+1), Region: region, Dir: filepath.Join(c.root, fmt.Sprintf("n%d", i+1)), Addr: freeAddr(c.t),
		CommandLevel: c.opts.CommandLevel}
	if i == 0 {
		if c.opts.FirstDir != "" {
			n.Dir = c.opts.FirstDir
		}
		if c.opts.FirstKey != nil {
			n.MasterKey = *c.opts.FirstKey
		} else if _, err := rand.Read(n.MasterKey[:]); err != nil {
			c.t.Fatal(err)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		via := c.anyRunning()
		res, err := cluster.Join(ctx, cluster.JoinRequest{Addr: via.Addr, Token: token, DataDir: n.Dir,
			NodeID: n.ID, Region: region, Advertise: n.Addr, Version: "test", CommandLevel: n.CommandLevel})
		if err != nil {
			c.t.Fatalf("join %s: %v", n.ID, err)
		}
		if err := cluster.WriteIdentity(n.Dir, res); err != nil {
			c.t.Fatal(err)
		}
		n.MasterKey = res.MasterKey
	}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, n)
	c.mu.Unlock()
	if err := n.Start(); err != nil {
		c.t.Fatalf("start %s: %v", n.ID, err)
	}
	return n
}

func (c *Cluster) anyRunning() *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Nodes {
		if n.Running() {
			return n
		}
	}
	c.t.Fatal("no running node")
	return nil
}

// freeAddr returns a loopback address with a port that was free.
func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start (re)starts a stopped node on its data directory and address.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		return errors.New("already running")
	}
	o := n.c.opts
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var cl *cluster.Cluster
	var err error
	// The port was free a moment ago. A restart may find it taken: it
	// lies in the kernel's ephemeral range, where a listener of a test
	// running beside this one (another package's, under go test -p) may
	// have got it while the node was down. Such a listener lives for its
	// test, so wait for it to go, up to 30 s.
	for attempt := 0; ; attempt++ {
		cl, err = cluster.Open(ctx, cluster.Config{
			DataDir: n.Dir, NodeID: n.ID, Region: n.Region, Listen: n.Addr, MailShards: o.MailShards,
			Replicas: o.Replicas, MasterKey: n.MasterKey, Timing: o.Timing, BootstrapToken: n.c.token,
			DeadAfter: o.DeadAfter, RouteTimeout: o.RouteTimeout, Version: "test", CommandLevel: n.CommandLevel,
			Logger: o.Logger.With("node", n.ID),
		})
		if err == nil || attempt == 300 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	dir, err := directory.New(cl, directory.Config{MasterKey: n.MasterKey, PasswordConcurrency: 2, Logger: o.Logger})
	if err != nil {
		cl.Close()
		return err
	}
	n.cluster, n.dir = cl, dir
	n.store = mailstore.New(cl, dir, mailstore.Config{Logger: o.Logger, SpoolRetry: 2 * time.Second, MaildropLease: 3 * time.Second,
		SearchIndexer: o.SearchIndexer})
	n.running = true
	// The directory needs the meta shard; a joining node gets it shortly.
	go func() {
		ictx, icancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer icancel()
		for ictx.Err() == nil {
			if dir.Init(ictx) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return nil
}

// Stop closes the node gracefully: it hands the leadership of its groups
// over first.
func (n *Node) Stop() { n.stop(true) }

// Kill stops the node as a crash would: no hand-over, connections cut.
func (n *Node) Kill() { n.stop(false) }

func (n *Node) stop(graceful bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running {
		return
	}
	n.running = false
	n.stallLocked(false) // a held write would hold the replicas' close
	n.store.Close()
	var err error
	if graceful {
		err = n.cluster.Close()
	} else {
		err = n.cluster.Abort()
	}
	n.dir.Close()
	if err != nil {
		n.c.t.Logf("stop %s: %v", n.ID, err)
	}
}

// Running reports whether the node runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

// Cluster returns the running node's cluster.
func (n *Node) Cluster() *cluster.Cluster {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cluster
}

// Directory returns the running node's directory.
func (n *Node) Directory() *directory.Directory {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dir
}

// Store returns the running node's mail store. (A test that wants it as
// the frontends see it wraps it in protocols.StoreOf; this helper stays
// below the protocols layer.)
func (n *Node) Store() *mailstore.Store {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.store
}

// Partition cuts the node off from every other (or heals it).
func (n *Node) Partition(on bool) { n.Cluster().Transport().Isolate(on) }

// Silence makes the node's cluster port go quiet without closing or
// refusing anything, as a network dropping its packets or a stalled VM
// would (or lifts that); see transport.Silence.
func (n *Node) Silence(on bool) { n.Cluster().Transport().Silence(on) }

// StallDisk holds every write of the node's replicas to their disk (their
// Raft logs, their state files' commits), as a disk that hangs would, or
// lets them through; see raftstore.Shard.StallWrites. Stopping the node
// lets them through first.
func (n *Node) StallDisk(on bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stallLocked(on)
}

func (n *Node) stallLocked(on bool) {
	if on && n.stalled == nil && n.running {
		n.stalled = n.cluster.Shards()
		for _, s := range n.stalled {
			s.StallWrites(true)
		}
	}
	if !on {
		for _, s := range n.stalled {
			s.StallWrites(false)
		}
		n.stalled = nil
	}
}

// Close stops every node.
func (c *Cluster) Close() {
	c.mu.Lock()
	nodes := append([]*Node(nil), c.Nodes...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Kill()
		}()
	}
	wg.Wait()
}

// Running returns the running nodes.
func (c *Cluster) Running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Node returns the node with an id.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Leader returns the running node that leads shard n, or nil.
func (c *Cluster) Leader(n uint32) *Node {
	for _, node := range c.Running() {
		if node.Cluster().LeadsShard(n) {
			return node
		}
	}
	return nil
}

// WaitLeader waits until a running node leads shard n and returns it.
func (c *Cluster) WaitLeader(n uint32, timeout time.Duration) *Node {
	c.t.Helper()
	var leader *Node
	c.Eventually(timeout, fmt.Sprintf("shard %d has a leader", n), func() error {
		if leader = c.Leader(n); leader == nil {
			return errors.New("no leader")
		}
		return nil
	})
	return leader
}

// Eventually polls cond until it returns nil or timeout passes, then
// fails the test with cond's last error.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// WaitConverged waits until, as every running node sees it, every shard
// has a leader and every placed replica on a live node votes, and every
// running node is ready.
func (c *Cluster) WaitConverged(timeout time.Duration) {
	c.t.Helper()
	c.Eventually(timeout, "cluster converged", c.Converged)
}

// Converged reports why the cluster has not converged, or nil.
func (c *Cluster) Converged() error {
	running := c.Running()
	if len(running) == 0 {
		return errors.New("no node runs")
	}
	live := map[string]bool{}
	for _, n := range running {
		live[n.ID] = true
	}
	for _, n := range running {
		if err := n.Cluster().Ready(context.Background()); err != nil {
			return fmt.Errorf("%s: %w", n.ID, err)
		}
	}
	st := running[0].Cluster().Status()
	for _, s := range st.Shards {
		if s.Leader == "" {
			return fmt.Errorf("shard %d has no leader", s.Shard)
		}
		want := min(c.opts.Replicas, len(running))
		voters := 0
		for _, r := range s.Replicas {
			if !r.Placed {
				if live[r.Node] {
					return fmt.Errorf("shard %d: %s is still a member but not placed", s.Shard, r.Node)
				}
				continue
			}
			if !r.Voter {
				return fmt.Errorf("shard %d: replica on %s does not vote yet", s.Shard, r.Node)
			}
			voters++
		}
		if s.Shard != 0 && voters < want {
			return fmt.Errorf("shard %d has %d voting replicas, want %d", s.Shard, voters, want)
		}
	}
	return nil
}

// AddUser creates a user (and its domain) through the first running
// node.
func (c *Cluster) AddUser(address, password string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := c.anyRunning().Directory()
	domain := address[strings.LastIndexByte(address, '@')+1:]
	if err := d.AddDomain(ctx, domain, directory.KeyModeUser, ""); err != nil && !errors.Is(err, schema.ErrDomainExists) {
		c.t.Fatalf("add domain %s: %v", domain, err)
	}
	if err := d.AddUser(ctx, address, password); err != nil {
		c.t.Fatalf("add user %s: %v", address, err)
	}
}

// Login authenticates through node n, retrying while the node catches up
// with the directory; the account is closed when the test ends.
func (n *Node) Login(address, password string) *mailstore.Account {
	n.c.t.Helper()
	var acct *mailstore.Account
	n.c.Eventually(30*time.Second, "login on "+n.ID, func() error {
		var err error
		acct, err = n.Store().Authenticate(context.Background(), schema.Credentials{Username: address, Password: password})
		return err
	})
	n.c.t.Cleanup(func() { acct.Close() })
	return acct
}
