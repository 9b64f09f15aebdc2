package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Fault runs: mail flows through every node (deliveries, some to
// recipients on several shards, and IMAP-like sessions appending,
// flagging, expunging and reading one mailbox) while nodes crash,
// restart, stop gracefully, get cut off and go silent (their
// connections stay open but carry nothing, as a stalled VM's do). Every outcome is recorded.
// Afterwards every acknowledged message must be found exactly once,
// unacknowledged ones at most once, no UID handed out twice, UIDs only
// growing for every client, UIDNEXT above every UID seen, every replica
// holding the same mail, the spools drained, and the history of the
// checked mailboxes linearizable.

const (
	faultPassword = "password-1"
	// faultOpTimeout bounds one load operation: longer than the route
	// timeout, so a call through a node cut off fails on its own.
	faultOpTimeout = 20 * time.Second
	// faultProgressWait bounds the wait for the cluster to acknowledge
	// writes again after a fault: a minority is down, so it must.
	faultProgressWait = time.Minute
	faultConvergeWait = 2 * time.Minute
	// faultStopWait bounds a node's Kill or Stop.
	faultStopWait = 90 * time.Second
	// faultStuckWriteAfter is how long a leader's disk write hangs before
	// it steps aside (raftstore.Timing.StuckWriteAfter): short, so that
	// most of the chaos test's disk stalls of a leader replace it, and
	// still above what an fsync takes on a loaded machine.
	faultStuckWriteAfter = time.Second
)

// TestFaultsUnderLoad kills and restarts the leader of the busiest shard
// three times, cuts a node off and heals it, silences the leader and
// lets it speak again, stalls its disk until another node leads and lets
// it go on, and stops and starts one gracefully, all while load runs
// through every node.
func TestFaultsUnderLoad(t *testing.T) {
	r := newFaultRun(t, clustertest.Options{Nodes: 3, MailShards: 3}, faultSeed(t), 2)
	busy := r.users[0].shard
	r.startLoad()
	r.waitProgress(20, "warm-up")
	for i := 0; i < 3; i++ {
		r.newBox()
		leader := r.leaderOf(busy)
		r.kill(leader, "kill leader")
		r.waitProgress(10, "after killing "+leader.ID)
		r.restart(leader)
		r.waitConverged()
		r.waitProgress(5, "after restarting "+leader.ID)
	}
	r.newBox()
	victim := r.leaderOf(busy)
	r.partition(victim, "partition leader")
	r.waitProgress(10, "with "+victim.ID+" cut off")
	r.heal(victim)
	r.waitConverged()
	r.waitProgress(5, "after healing "+victim.ID)
	r.newBox()
	quiet := r.leaderOf(busy)
	r.silence(quiet, "silence leader")
	r.waitProgress(10, "with "+quiet.ID+" silent")
	r.unsilence(quiet)
	r.waitConverged()
	r.waitProgress(5, "after "+quiet.ID+" spoke again")
	r.newBox()
	stuck := r.leaderOf(busy)
	r.stall(stuck, "stall leader's disk")
	r.waitLeaderMoves(busy, stuck)
	r.checkStalledNode(stuck, busy)
	r.waitProgress(10, "with "+stuck.ID+"'s disk stalled")
	r.unstall(stuck)
	r.waitConverged()
	r.waitProgress(5, "after "+stuck.ID+"'s disk came back")
	r.newBox()
	stopped := r.nodes[(slices.Index(r.nodes, victim)+1)%len(r.nodes)]
	r.stopGracefully(stopped, "stop node")
	r.waitProgress(10, "with "+stopped.ID+" stopped")
	r.restart(stopped)
	r.waitConverged()
	r.waitProgress(10, "at the end")
	r.stopLoad()
	s := r.verify()
	s.log(t)
	s.fail(t)
}

// TestChaos runs MAILCLUSTER_CHAOS_ROUNDS rounds of random faults under
// load (MAILCLUSTER_CHAOS_NODES nodes, default 5; MAILCLUSTER_CHAOS_SEED
// to repeat a fault schedule), then the same checks as
// TestFaultsUnderLoad.
func TestChaos(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("MAILCLUSTER_CHAOS_ROUNDS"))
	if rounds <= 0 {
		t.Skip("set MAILCLUSTER_CHAOS_ROUNDS (make chaos runs 300) to run the long fault test")
	}
	nodes := 5
	if n, err := strconv.Atoi(os.Getenv("MAILCLUSTER_CHAOS_NODES")); err == nil && n >= 3 {
		nodes = n
	}
	r := newFaultRun(t, clustertest.Options{Nodes: nodes, MailShards: 3}, faultSeed(t), 2)
	rng := rand.New(rand.NewPCG(r.seed, 0))
	r.startLoad()
	r.waitProgress(20, "warm-up")
	started := time.Now()
	for round := 1; round <= rounds; round++ {
		r.newBox()
		r.chaosRound(rng)
		// Most rounds let the cluster settle and require progress; the
		// others start the next fault while it is still recovering.
		if rng.IntN(10) < 7 || round == rounds {
			r.waitConverged()
			r.waitProgress(3, fmt.Sprintf("after round %d", round))
		}
		if round%10 == 0 {
			t.Logf("chaos: round %d of %d after %s: %s", round, rounds, time.Since(started).Round(time.Second), r.progressLine())
		}
		if t.Failed() {
			t.Logf("chaos: stopping after round %d: the test has failed", round)
			break
		}
	}
	r.stopLoad()
	s := r.verify()
	s.rounds = rounds
	s.log(t)
	s.fail(t)
}

// chaosRound injects one random fault (on five nodes or more, sometimes
// two at once: still a minority of the nodes, though perhaps not of one
// shard's replicas), holds it for a moment while the load runs, and
// repairs it.
func (r *faultRun) chaosRound(rng *rand.Rand) {
	faults := 1
	if len(r.nodes) >= 5 && rng.IntN(4) == 0 {
		faults = 2
	}
	var repairs []func()
	used := map[*faultNode]bool{}
	for i := 0; i < faults; i++ {
		var leader *faultNode
		if l := r.c.Leader(r.users[rng.IntN(len(r.users))].shard); l != nil {
			leader = r.wrap(l)
		}
		// pick returns the leader of a shard if asked for and still
		// unharmed, else any node not under a fault yet.
		pick := func(wantLeader bool) (*faultNode, string) {
			if wantLeader && leader != nil && !used[leader] {
				used[leader] = true
				return leader, "leader"
			}
			var free []*faultNode
			for _, n := range r.nodes {
				if !used[n] {
					free = append(free, n)
				}
			}
			n := free[rng.IntN(len(free))]
			used[n] = true
			return n, "node"
		}
		switch k := rng.IntN(8); k {
		case 0, 1:
			n, role := pick(k == 0)
			r.kill(n, "kill "+role)
			repairs = append(repairs, func() { r.restart(n) })
		case 2, 3:
			n, role := pick(k == 2)
			r.partition(n, "partition "+role)
			repairs = append(repairs, func() { r.heal(n) })
		case 4:
			a, _ := pick(true)
			b, _ := pick(false)
			r.cut(a, b)
			repairs = append(repairs, func() { r.uncut(a, b) })
		case 5:
			n, role := pick(rng.IntN(2) == 0)
			r.stopGracefully(n, "stop "+role)
			repairs = append(repairs, func() { r.restart(n) })
		case 6:
			n, role := pick(rng.IntN(2) == 0)
			r.silence(n, "silence "+role)
			repairs = append(repairs, func() { r.unsilence(n) })
		case 7:
			n, role := pick(rng.IntN(2) == 0)
			r.stall(n, "stall disk of "+role)
			repairs = append(repairs, func() { r.unstall(n) })
		}
	}
	// The fault's duration, not a wait for a condition.
	time.Sleep(time.Duration(200+rng.IntN(2800)) * time.Millisecond)
	rng.Shuffle(len(repairs), func(i, j int) { repairs[i], repairs[j] = repairs[j], repairs[i] })
	for _, fix := range repairs {
		fix()
	}
}

// faultSeed returns MAILCLUSTER_CHAOS_SEED or a fresh seed, logged so a
// fault schedule can be repeated.
func faultSeed(t *testing.T) uint64 {
	seed := rand.Uint64()
	if s, err := strconv.ParseUint(os.Getenv("MAILCLUSTER_CHAOS_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (MAILCLUSTER_CHAOS_SEED=%d repeats the fault schedule)", seed, seed)
	return seed
}

type faultUser struct {
	addr  string
	id    schema.ID
	shard uint32
}

// faultNode is a test node and how often it has been stopped or
// started, so a session knows to drop its account and log in again.
type faultNode struct {
	*clustertest.Node
	gen atomic.Int64
}

// faultBox is a mailbox whose history is checked for linearizability.
type faultBox struct {
	name string
	id   schema.ID
}

type faultDelivery struct {
	msgID     string
	node      string
	rcpts     []int // indexes into faultRun.users
	acked     bool
	err       error
	call, ret int64
}

type faultAppend struct {
	msgID     string
	box       string
	uid       schema.UID
	acked     bool
	call, ret int64
}

type faultExpunge struct {
	box              string
	targets, removed []schema.UID
	acked            bool
}

// faultRun is one fault test: the cluster, the load and what it recorded.
type faultRun struct {
	t        *testing.T
	c        *clustertest.Cluster
	seed     uint64
	sessions int // per node
	nodes    []*faultNode
	users    []faultUser
	hist     *linHistory
	started  time.Time

	box     atomic.Pointer[faultBox]
	boxes   int
	stopped atomic.Bool
	wg      sync.WaitGroup
	acked   atomic.Int64 // acknowledged writes, for progress checks

	mu          sync.Mutex
	deliveries  []*faultDelivery
	appends     []*faultAppend
	expunges    []*faultExpunge
	ops, failed map[string]int // by kind
	errs        map[string]map[string]int
	slowest     time.Duration // of an acknowledged operation
	slowestOp   string        // its kind and when it began, to match with the faults logged
	observed    map[string]map[schema.UID]schema.ID
	owner       map[string]map[schema.UID]string // by checked mailbox: the Message-ID at a UID
	where       map[string]map[string]schema.UID // and the reverse
	maxUID      map[string]schema.UID            // by mailbox: the highest UID any result held
	violations  []string
	faults      map[string]int
	faultStarts []int64
	down        map[*faultNode]int64 // nodes under a fault, since
	recoveries  []time.Duration      // from a repair to convergence
}

// newFaultRun starts a cluster and adds one user per mail shard.
func newFaultRun(t *testing.T, opts clustertest.Options, seed uint64, sessions int) *faultRun {
	if opts.Timing.StuckWriteAfter == 0 {
		opts.Timing.StuckWriteAfter = faultStuckWriteAfter
	}
	c := clustertest.Start(t, opts)
	r := &faultRun{t: t, c: c, seed: seed, sessions: sessions, hist: newLinHistory(), started: time.Now(),
		ops: map[string]int{}, failed: map[string]int{}, errs: map[string]map[string]int{},
		observed: map[string]map[schema.UID]schema.ID{}, maxUID: map[string]schema.UID{},
		owner: map[string]map[schema.UID]string{}, where: map[string]map[string]schema.UID{},
		faults: map[string]int{}, down: map[*faultNode]int64{}}
	for _, n := range c.Nodes {
		r.nodes = append(r.nodes, &faultNode{Node: n})
	}
	t.Cleanup(r.stopAll)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	shards := map[uint32]bool{}
	for i := 1; len(shards) < opts.MailShards; i++ {
		if i > 3*opts.MailShards {
			t.Fatalf("users landed on %d of %d shards", len(shards), opts.MailShards)
		}
		addr := fmt.Sprintf("user%d@fault.test", i)
		c.AddUser(addr, faultPassword)
		u, err := c.Nodes[0].Directory().ResolveRecipient(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		if !shards[u.Shard] {
			shards[u.Shard] = true
			r.users = append(r.users, faultUser{addr: addr, id: u.ID, shard: u.Shard})
		}
	}
	r.newBox()
	return r
}

func (r *faultRun) wrap(n *clustertest.Node) *faultNode {
	for _, x := range r.nodes {
		if x.Node == n {
			return x
		}
	}
	panic("unknown node " + n.ID)
}

func (r *faultRun) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.violations = append(r.violations, msg)
	r.mu.Unlock()
	r.t.Logf("VIOLATION: %s", msg)
}

func (r *faultRun) since() string { return time.Since(r.started).Round(time.Millisecond).String() }

// login authenticates a user through a node, retrying while the node
// catches up with the directory, for up to ten seconds.
func (r *faultRun) login(n *faultNode, addr string) (protocols.Account, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		acct, err := n.Store().Authenticate(ctx, schema.Credentials{Username: addr, Password: faultPassword})
		if err == nil {
			return acct, nil
		}
		if ctx.Err() != nil || !n.Running() {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond) // polling with a deadline
	}
}

// anyLogin logs in through the first running node that answers.
func (r *faultRun) anyLogin(addr string) protocols.Account {
	r.t.Helper()
	for _, n := range r.nodes {
		if !n.Running() {
			continue
		}
		if acct, err := r.login(n, addr); err == nil {
			return acct
		}
	}
	r.t.Fatalf("no node lets %s log in", addr)
	return nil
}

// newBox creates the next checked mailbox of the first user and points
// the sessions at it: every fault round gets its own history, which
// keeps each linearizability check small.
func (r *faultRun) newBox() {
	r.t.Helper()
	r.boxes++
	name := fmt.Sprintf("lin-%03d", r.boxes)
	ctx, cancel := context.WithTimeout(context.Background(), faultConvergeWait)
	defer cancel()
	for {
		var err error
		for _, n := range r.nodes {
			if !n.Running() {
				continue
			}
			var acct protocols.Account
			if acct, err = r.login(n, r.users[0].addr); err != nil {
				continue
			}
			// A create that failed may still have happened.
			if err = acct.CreateMailbox(ctx, name, ""); err == nil || errors.Is(err, schema.ErrMailboxExists) {
				var info schema.MailboxInfo
				if info, err = acct.Mailbox(ctx, name); err == nil {
					acct.Close()
					r.box.Store(&faultBox{name: name, id: info.ID})
					return
				}
			}
			acct.Close()
		}
		if ctx.Err() != nil {
			r.t.Fatalf("create mailbox %s: %v", name, err)
		}
		time.Sleep(200 * time.Millisecond) // polling with a deadline
	}
}

// startLoad starts, on every node, a deliverer, the sessions and an
// observer of every inbox.
func (r *faultRun) startLoad() {
	for i, n := range r.nodes {
		r.wg.Add(2 + r.sessions)
		go r.deliverer(n, rand.New(rand.NewPCG(r.seed, uint64(100+i))))
		go r.observer(n, rand.New(rand.NewPCG(r.seed, uint64(200+i))))
		for j := 0; j < r.sessions; j++ {
			go r.session(n, j, rand.New(rand.NewPCG(r.seed, uint64(1000+10*i+j))))
		}
	}
}

// stopLoad lets every load goroutine finish its operation and return.
func (r *faultRun) stopLoad() {
	r.stopped.Store(true)
	r.wg.Wait()
	r.t.Logf("%s load stopped: %s", r.since(), r.progressLine())
	r.mu.Lock()
	defer r.mu.Unlock()
	for kind, errs := range r.errs {
		for msg, n := range errs {
			r.t.Logf("  %s failed %d times: %s", kind, n, msg)
		}
	}
}

func (r *faultRun) progressLine() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%d writes acknowledged; operations %v, failed %v", r.acked.Load(), r.ops, r.failed)
}

// pace sleeps between two operations of a load goroutine.
func pace(rng *rand.Rand, min, spread time.Duration) {
	time.Sleep(min + time.Duration(rng.Int64N(int64(spread))))
}

// opDone counts an operation and its outcome.
func (r *faultRun) opDone(kind string, call, ret int64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops[kind]++
	if err != nil {
		r.failed[kind]++
		if r.errs[kind] == nil {
			r.errs[kind] = map[string]int{}
		}
		r.errs[kind][err.Error()]++
		return
	}
	if d := time.Duration(ret - call); d > r.slowest {
		r.slowest = d
		r.slowestOp = fmt.Sprintf("%s from %s", kind, time.Duration(call).Round(time.Millisecond))
	}
}

// Faults. Every one is logged, counted by kind and shown in the
// linearizability visualization.

func (r *faultRun) faultBegins(n *faultNode, kind string) {
	now := r.hist.now()
	r.mu.Lock()
	r.faults[kind]++
	r.faultStarts = append(r.faultStarts, now)
	r.down[n] = now
	r.mu.Unlock()
	r.t.Logf("%s %s: %s", r.since(), kind, n.ID)
}

func (r *faultRun) faultEnds(n *faultNode, what string) {
	now := r.hist.now()
	r.mu.Lock()
	start, ok := r.down[n]
	delete(r.down, n)
	r.mu.Unlock()
	if ok {
		r.hist.fault(what+" "+n.ID, start, now)
	}
	r.t.Logf("%s %s: %s", r.since(), what, n.ID)
}

// leaderOf waits for shard n to have a leader and returns it.
func (r *faultRun) leaderOf(n uint32) *faultNode {
	var leader *clustertest.Node
	r.c.Eventually(faultProgressWait, fmt.Sprintf("a leader of shard %d", n), func() error {
		if leader = r.c.Leader(n); leader == nil {
			return fmt.Errorf("shard %d has no leader", n)
		}
		return nil
	})
	return r.wrap(leader)
}

func (r *faultRun) kill(n *faultNode, what string) {
	r.faultBegins(n, what)
	n.gen.Add(1)
	r.stopWithin("kill "+n.ID, n.Kill)
}

func (r *faultRun) stopGracefully(n *faultNode, what string) {
	r.faultBegins(n, what)
	n.gen.Add(1)
	r.stopWithin("stop "+n.ID, n.Stop)
}

// stopAll kills every node, each within faultStopWait. It runs as a
// cleanup before clustertest's, which would wait for a stuck node
// forever.
func (r *faultRun) stopAll() {
	var wg sync.WaitGroup
	for _, n := range r.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stopWithin("kill "+n.ID+" at the end", n.Kill)
		}()
	}
	wg.Wait()
}

// stuckPipelines returns the replication goroutines blocked in
// hashicorp/raft's pipeline (netPipeline.AppendEntries) in two goroutine
// dumps a second apart: a healthy pipeline hands a request over in
// microseconds; one whose response decoder gave up never does, and its
// follower gets heartbeats but no entries (hashicorp/raft#612).
func stuckPipelines() []string {
	blocked := func() map[string]string {
		var all bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&all, 2)
		out := map[string]string{}
		for _, g := range strings.Split(all.String(), "\n\n") {
			if i := strings.Index(g, "netPipeline).AppendEntries"); i >= 0 {
				head, _, _ := strings.Cut(g, "\n")
				id, _, _ := strings.Cut(strings.TrimPrefix(head, "goroutine "), " ")
				out[id] = head
			}
		}
		return out
	}
	first := blocked()
	if len(first) == 0 {
		return nil
	}
	time.Sleep(time.Second) // the second sample
	var stuck []string
	for id, head := range blocked() {
		if _, ok := first[id]; ok {
			stuck = append(stuck, head)
		}
	}
	sort.Strings(stuck)
	return stuck
}

// stopWithin runs stop (a node's Kill or Stop) and waits up to
// faultStopWait for it.
// A node that does not stop is a bug (a goroutine of it is stuck), and
// nothing can unstick it: every later call on the node, clustertest's
// cleanup included, would wait for it until the test binary times out.
// So stopWithin writes the stuck goroutines to stderr (t.Log output is
// lost on exit without -v) and ends the test binary at once.
func (r *faultRun) stopWithin(what string, stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		stop()
	}()
	select {
	case <-done:
		return
	case <-time.After(faultStopWait):
	}
	var all bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&all, 2)
	var b strings.Builder
	fmt.Fprintf(&b, "--- FAIL: %s: %s did not return within %s (%s into the run).\n", r.t.Name(), what, faultStopWait, r.since())
	r.mu.Lock()
	for _, v := range r.violations {
		fmt.Fprintf(&b, "violation before: %s\n", v)
	}
	r.mu.Unlock()
	b.WriteString("Goroutines that have waited a minute or more in raft's replication or shutdown, or in the cluster's:\n\n")
	for _, g := range strings.Split(all.String(), "\n\n") {
		if strings.Contains(g, "minutes]") && !strings.Contains(g, "handleConn") && !strings.Contains(g, "runSnapshots") &&
			(strings.Contains(g, "hashicorp/raft.(*Raft).") || strings.Contains(g, "netPipeline") || strings.Contains(g, "mailcluster/cluster.")) {
			b.WriteString(g + "\n\n")
		}
	}
	if strings.Contains(b.String(), "netPipeline).AppendEntries") && strings.Contains(b.String(), "decodeResponses") {
		b.WriteString("This looks like hashicorp/raft's pipeline deadlock (hashicorp/raft#612): a replication goroutine " +
			"blocks in netPipeline.AppendEntries after pipelineDecode gave up, and Raft's shutdown waits for it.\n")
	}
	fmt.Fprintln(os.Stderr, b.String())
	os.Exit(1)
}

func (r *faultRun) restart(n *faultNode) {
	r.t.Helper()
	if err := n.Start(); err != nil {
		r.t.Fatalf("restart %s: %v", n.ID, err)
	}
	n.gen.Add(1)
	r.faultEnds(n, "restarted")
}

func (r *faultRun) partition(n *faultNode, what string) {
	r.faultBegins(n, what)
	n.Partition(true)
}

func (r *faultRun) heal(n *faultNode) {
	n.Partition(false)
	r.faultEnds(n, "healed")
}

// silence makes n's cluster port go quiet: its connections stay open
// and carry nothing, so its peers get timeouts, never errors.
func (r *faultRun) silence(n *faultNode, what string) {
	r.faultBegins(n, what)
	n.Silence(true)
}

func (r *faultRun) unsilence(n *faultNode) {
	n.Silence(false)
	r.faultEnds(n, "heard again")
}

// stall holds every write of the node's replicas to their disk, as a
// disk that hangs would.
func (r *faultRun) stall(n *faultNode, what string) {
	r.faultBegins(n, what)
	n.StallDisk(true)
}

func (r *faultRun) unstall(n *faultNode) {
	n.StallDisk(false)
	r.faultEnds(n, "disk back")
}

// waitLeaderMoves waits until a node other than old leads shard n, which
// a leader whose disk hangs must let happen, and logs how long it took.
func (r *faultRun) waitLeaderMoves(n uint32, old *faultNode) {
	r.t.Helper()
	start := time.Now()
	r.c.Eventually(faultProgressWait, fmt.Sprintf("another leader of shard %d than %s", n, old.ID), func() error {
		for _, x := range r.c.Running() {
			if x != old.Node && x.Cluster().LeadsShard(n) {
				return nil
			}
		}
		return fmt.Errorf("no node but %s leads shard %d", old.ID, n)
	})
	r.t.Logf("%s shard %d led by another node %s after the fault", r.since(), n, time.Since(start).Round(time.Millisecond))
}

// checkStalledNode checks a node whose disk hangs and whose leadership of
// shard n has moved: it says it is not ready and why, it leads nothing,
// and a read of n through it is served by n's new leader.
func (r *faultRun) checkStalledNode(node *faultNode, n uint32) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultOpTimeout)
	defer cancel()
	// Its writes under way count as hung StuckWriteAfter after they
	// began, which the leadership's move may have come before (an
	// election for another reason on a loaded machine).
	r.c.Eventually(faultProgressWait, node.ID+" to say that its disk hangs", func() error {
		if err := node.Cluster().Ready(ctx); err == nil || !strings.Contains(err.Error(), "has not returned") {
			return fmt.Errorf("%s, whose disk hangs, answers ready: %v", node.ID, err)
		}
		return nil
	})
	if node.Cluster().LeadsShard(n) {
		r.t.Errorf("%s, whose disk hangs, still leads shard %d", node.ID, n)
	}
	start := time.Now()
	q := raftstore.Query{Kind: raftstore.QueryMailboxes, User: r.users[0].id}
	if _, err := node.Cluster().Query(ctx, n, q, 0); err != nil {
		r.t.Errorf("read of shard %d through %s, whose disk hangs: %v", n, node.ID, err)
	}
	r.t.Logf("%s a read of shard %d through %s took %s", r.since(), n, node.ID, time.Since(start).Round(time.Millisecond))
}

// cut breaks the link between a and b only: each still reaches the
// others (clustertest has no helper for it yet).
func (r *faultRun) cut(a, b *faultNode) {
	r.faultBegins(a, "cut link")
	r.mu.Lock()
	r.down[b] = r.down[a]
	r.mu.Unlock()
	r.t.Logf("%s   ... from %s", r.since(), b.ID)
	a.Cluster().Transport().Block(b.ID)
	b.Cluster().Transport().Block(a.ID)
}

func (r *faultRun) uncut(a, b *faultNode) {
	a.Cluster().Transport().Unblock(b.ID)
	b.Cluster().Transport().Unblock(a.ID)
	r.faultEnds(a, "link restored")
	r.mu.Lock()
	delete(r.down, b)
	r.mu.Unlock()
}

// waitProgress waits for n more writes to be acknowledged; with at most
// a minority of the nodes down, the cluster must get there.
func (r *faultRun) waitProgress(n int64, when string) {
	r.t.Helper()
	want := r.acked.Load() + n
	deadline := time.Now().Add(faultProgressWait)
	for r.acked.Load() < want {
		if time.Now().After(deadline) {
			r.t.Errorf("%s: no progress %s: %d of %d writes acknowledged within %s; status: %s", r.since(), when,
				r.acked.Load(), want, faultProgressWait, r.status())
			return
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// waitConverged waits for every shard to have a leader and every replica
// to vote again, and records how long it took.
func (r *faultRun) waitConverged() {
	r.t.Helper()
	start := time.Now()
	deadline := start.Add(faultConvergeWait)
	slow := start.Add(10 * time.Second)
	for {
		err := r.c.Converged()
		if err == nil {
			break
		}
		if !slow.IsZero() && time.Now().After(slow) {
			r.t.Logf("%s slow recovery: not converged after 10s: %v; status: %s", r.since(), err, r.status())
			if stuck := stuckPipelines(); len(stuck) > 0 {
				r.violation("raft replication stuck while the cluster runs (a follower gets heartbeats but no entries): %s",
					strings.Join(stuck, "; "))
			}
			slow = time.Time{}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: cluster not converged within %s: %v; status: %s", r.since(), faultConvergeWait, err, r.status())
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	r.mu.Lock()
	r.recoveries = append(r.recoveries, time.Since(start))
	r.mu.Unlock()
	r.waitCaughtUp()
}

// waitCaughtUp waits for every running replica of every shard to apply
// what its leader had committed when the wait began: a leader that has
// stopped replicating to a follower (while its heartbeats keep the
// follower from starting an election) shows here.
func (r *faultRun) waitCaughtUp() {
	r.t.Helper()
	target := map[uint32]uint64{}
	for _, n := range r.c.Running() {
		for _, s := range n.Cluster().Shards() {
			if st := s.Status(); st.State == "leader" {
				target[s.ID()] = max(target[s.ID()], st.CommitIndex)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var behind []string
		for _, n := range r.c.Running() {
			for _, s := range n.Cluster().Shards() {
				if st := s.Status(); st.AppliedIndex < target[s.ID()] {
					behind = append(behind, fmt.Sprintf("shard %d on %s applied %d of %d (last contact %s ago, leader %s)",
						s.ID(), n.ID, st.AppliedIndex, target[s.ID()], time.Since(st.LastContact).Round(time.Millisecond), st.LeaderID))
				}
			}
		}
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.violation("replicas stopped receiving entries from their leader, 30s after the cluster converged: %s",
				strings.Join(behind, "; "))
			return
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
}

// status describes every shard as each running node sees it.
func (r *faultRun) status() string {
	var b strings.Builder
	for _, n := range r.c.Running() {
		st := n.Cluster().Status()
		fmt.Fprintf(&b, "[%s:", n.ID)
		for _, s := range st.Shards {
			fmt.Fprintf(&b, " %d:leader=%s,term=%d,commit=%d", s.Shard, s.Leader, s.Term, s.CommitIndex)
		}
		b.WriteString("] ")
	}
	return b.String()
}
