package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/protocols/outbound/mtatest"
)

// clusterStatus is the part of `mailnode cluster status --json` the tests
// read.
type clusterStatus struct {
	Nodes []struct {
		ID     string `json:"id"`
		Region string `json:"region"`
		Health string `json:"health"`
	} `json:"nodes"`
	Shards []struct {
		Shard    uint32 `json:"shard"`
		Home     string `json:"home"`
		Leader   string `json:"leader"`
		Replicas []struct {
			Node  string `json:"node"`
			Voter bool   `json:"voter"`
			Lag   uint64 `json:"lag"`
		} `json:"replicas"`
	} `json:"shards"`
}

func (n *node) clusterStatus() (clusterStatus, error) {
	var st clusterStatus
	out, err := n.cli("", "cluster", "status", "--json")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(out), &st)
}

// converged reports why the cluster, as n sees it, is not yet whole: a
// shard without a leader or without `voters` voting replicas.
func (n *node) converged(voters int) error {
	st, err := n.clusterStatus()
	if err != nil {
		return err
	}
	for _, s := range st.Shards {
		v := 0
		for _, r := range s.Replicas {
			if r.Voter {
				v++
			}
		}
		if s.Leader == "" || v < voters {
			return fmt.Errorf("shard %d: leader %q, %d voters", s.Shard, s.Leader, v)
		}
	}
	return nil
}

// freePort returns a loopback address whose port was free.
func freePort(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", mtatest.FreePort(t))
}

// startCluster starts three real mailnode processes, in regions r1, r2
// and r3, as one cluster: the first creates it, the others join with its
// bootstrap token.
func startCluster(t *testing.T) []*node {
	t.Helper()
	return startClusterWith(t, nil)
}

// startClusterWith starts three nodes as startCluster does, node i with
// its data directory at dataDir(i) when dataDir is set.
func startClusterWith(t *testing.T, dataDir func(i int) string) []*node {
	t.Helper()
	const token = "e2e-bootstrap-token-0123456789"
	var nodes []*node
	var first string
	for i := 1; i <= 3; i++ {
		addr := freePort(t)
		opts := nodeOptions{nodeID: fmt.Sprintf("n%d", i), region: fmt.Sprintf("r%d", i), clusterListen: addr}
		if dataDir != nil {
			opts.dataDir = dataDir(i - 1)
		}
		if i == 1 {
			first = addr
			opts.firstArgs = []string{"--bootstrap-token", token}
		} else {
			opts.firstArgs = []string{"--join", first, "--token", token}
		}
		n, err := newNode(env.bin, t.TempDir(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.stop(); err != nil {
				t.Errorf("stop %s: %v", opts.nodeID, err)
			}
		})
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	waitFor(t, time.Minute, "three voters on every shard", func() error { return nodes[0].converged(3) })
	return nodes
}

// leaderOfUser returns the node (by index) that leads the shard of a
// user, once that leader is in the shard's home region. A new cluster
// moves each mail shard's leadership home, so a leader elsewhere may
// hand over at any moment: a test that stopped it would stop a node
// that no longer leads.
func leaderOfUser(t *testing.T, nodes []*node, via *node, user string) int {
	t.Helper()
	out, err := via.cli("", "user", "show", "--json", user)
	if err != nil {
		t.Fatal(err)
	}
	var u struct {
		Shard uint32 `json:"shard"`
	}
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatal(err)
	}
	var leader string
	waitFor(t, 30*time.Second, "a leader for the user's shard", func() error {
		st, err := via.clusterStatus()
		if err != nil {
			return err
		}
		sh := st.Shards[u.Shard]
		leader = sh.Leader
		if leader == "" {
			return fmt.Errorf("shard %d has no leader", u.Shard)
		}
		for _, n := range st.Nodes {
			if n.ID == leader && sh.Home != "" && n.Region != sh.Home {
				return fmt.Errorf("shard %d: leader %s in region %s, its home is %s", u.Shard, leader, n.Region, sh.Home)
			}
		}
		return nil
	})
	for i := range nodes {
		if fmt.Sprintf("n%d", i+1) == leader {
			return i
		}
	}
	t.Fatalf("leader %q is not one of the nodes", leader)
	return -1
}

// TestClusterOfThreeProcesses: three mailnode processes form a cluster.
// A domain pinned to a region and a user are added through different
// nodes; mail sent through one node is read through another, and a
// session in IDLE on a third node is told of it; a POP3 maildrop locked
// on one node is in use on another; the leader of the user's shard is
// killed with SIGKILL under load and then restarted, and every
// acknowledged message is found exactly once; finally every node is
// restarted in turn with SIGTERM while mail flows, and no send fails.
func TestClusterOfThreeProcesses(t *testing.T) {
	nodes := startCluster(t)
	if _, err := nodes[0].cli("", "domain", "add", "--region", "r2", testDomain); err != nil {
		t.Fatal(err)
	}
	const user, pass = "multi@" + testDomain, "multi-password-1"
	nodes[1].addUser(t, user, pass)

	// IDLE on node 3 sees mail sent through node 1.
	exists := make(chan uint32, 64)
	handler := &imapclient.UnilateralDataHandler{Mailbox: func(d *imapclient.UnilateralDataMailbox) {
		if d.NumMessages != nil {
			exists <- *d.NumMessages
		}
	}}
	idler := imapDialTLS(t, nodes[2], user, pass, handler)
	selectBox(t, idler, "INBOX", false)
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	smtpSend(t, nodes[0], "x@remote.example", []string{user}, simpleMessage("x@remote.example", user, "across nodes", "hello"))
	select {
	case got := <-exists:
		if got != 1 {
			t.Fatalf("EXISTS %d, want 1", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no EXISTS on node 3 for mail sent through node 1")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	reader := imapDialStartTLS(t, nodes[1], user, pass, nil)
	selectBox(t, reader, "INBOX", true)
	if got := subjects(t, reader); len(got) != 1 || got[0] != "across nodes" {
		// Say whether the read was stale or the message is gone, and
		// what the cluster looked like.
		again := imapDialStartTLS(t, nodes[1], user, pass, nil)
		selectBox(t, again, "INBOX", true)
		st, err := nodes[1].clusterStatus()
		t.Errorf("cluster status: %+v (%v)", st, err)
		for i, n := range nodes {
			t.Errorf("node %d log:\n%s", i+1, n.logTail())
		}
		t.Fatalf("node 2 reads %q; a new session a moment later reads %q", got, subjects(t, again))
	}

	// The POP3 maildrop lock holds across nodes.
	pop3Login := func(n *node) (*rawConn, string) {
		c := dialRaw(t, n.addr("pop3s"), n.clientTLS)
		c.line() // greeting
		c.send("USER " + user)
		c.line()
		c.send("PASS " + pass)
		return c, c.line()
	}
	first, reply := pop3Login(nodes[0])
	if !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("POP3 login on node 1: %q", reply)
	}
	second, reply := pop3Login(nodes[2])
	if !strings.HasPrefix(reply, "-ERR [IN-USE]") {
		t.Fatalf("second POP3 session on node 3: %q, want -ERR [IN-USE]", reply)
	}
	second.send("QUIT")
	first.send("QUIT")
	if reply := first.line(); !strings.HasPrefix(reply, "+OK") {
		t.Fatalf("POP3 QUIT: %q", reply)
	}
	waitFor(t, 30*time.Second, "maildrop released across nodes", func() error {
		c, reply := pop3Login(nodes[2])
		c.send("QUIT")
		if !strings.HasPrefix(reply, "+OK") {
			return fmt.Errorf("login on node 3: %q", reply)
		}
		return nil
	})

	// kill -9 the leader of the user's shard while mail flows.
	victim := leaderOfUser(t, nodes, nodes[0], user)
	load := startLoad(t, nodes, victim, user)
	load.waitAcks(t, 20)
	if err := nodes[victim].kill(); err != nil {
		t.Fatal(err)
	}
	load.waitAcks(t, load.acks()+20) // mail keeps flowing through the others
	if err := nodes[victim].start(); err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}
	waitFor(t, time.Minute, "cluster whole again", func() error { return nodes[0].converged(3) })
	load.stop()
	load.check(t, nodes[victim], user, pass)

	// A rolling restart with SIGTERM: each node hands its leadership over
	// before it stops; no send fails.
	roll := startLoad(t, nodes, -1, user)
	roll.strict = true
	for i, n := range nodes {
		roll.waitAcks(t, roll.acks()+10)
		roll.skip(i)
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
		roll.skip(-1)
		waitFor(t, time.Minute, "cluster whole after restarting "+fmt.Sprint(i+1), func() error { return nodes[0].converged(3) })
	}
	roll.stop()
	roll.check(t, nodes[0], user, pass)
}

// TestClusterRidesOutAFrozenLeader: the leader of a user's shard is
// stopped with SIGSTOP under load, as a stalled VM or a long pause would
// stop it: its sockets stay open and its peers just stop hearing from
// it. The others elect a new leader and acknowledge every message sent
// through them, those in flight to the stopped leader included (they
// waited for the sender's whole timeout before callLeader). It stays
// stopped until more messages arrived than a session's watcher holds
// (1,024 changes), so the session it held open across the pause must
// resynchronise: at its next NOOP that session, and a session opened
// on it as it resumes (still believing for a moment that it leads),
// both see every message acknowledged meanwhile. In the end every
// acknowledged message is there exactly once.
func TestClusterRidesOutAFrozenLeader(t *testing.T) {
	nodes := startCluster(t)
	if err := nodes[0].addDomain(testDomain); err != nil {
		t.Fatal(err)
	}
	user, pass := nodes[0].newUser(t, "frozen")
	victim := leaderOfUser(t, nodes, nodes[0], user)
	other := nodes[(victim+1)%len(nodes)]
	held := imapDialTLS(t, nodes[victim], user, pass, nil)
	selectBox(t, held, "INBOX", false)

	load := startLoad(t, nodes, victim, user)
	load.strict = true // the senders avoid the stopped node: nothing may fail
	load.waitAcks(t, 10)
	thaw := nodes[victim].freeze(t)
	frozen := time.Now()
	load.waitAcks(t, load.acks()+1100) // committed without the stopped leader
	acked := load.ackedIDs()
	thaw()
	t.Logf("n%d stopped for %v; %d messages acknowledged by then", victim+1, time.Since(frozen).Round(time.Millisecond), len(acked))

	if err := held.Noop().Wait(); err != nil {
		t.Fatalf("NOOP on the session held across the pause: %v", err)
	}
	if missing := missingIDs(t, held, acked); len(missing) > 0 {
		t.Errorf("the session held open on n%d misses %d of %d acknowledged messages after NOOP: %s",
			victim+1, len(missing), len(acked), firstFew(missing))
	}
	fresh := imapDialTLS(t, nodes[victim], user, pass, nil)
	selectBox(t, fresh, "INBOX", true)
	if missing := missingIDs(t, fresh, acked); len(missing) > 0 {
		t.Errorf("a session opened on n%d as it resumed misses %d of %d acknowledged messages: %s",
			victim+1, len(missing), len(acked), firstFew(missing))
	}

	load.stop()
	waitFor(t, time.Minute, "cluster whole again", func() error { return other.converged(3) })
	load.check(t, nodes[victim], user, pass)
}

// firstFew quotes the first five of ids and says how many more there
// are, so that a failure's report stays short enough to be read whole.
func firstFew(ids []string) string {
	if len(ids) <= 5 {
		return fmt.Sprintf("%q", ids)
	}
	return fmt.Sprintf("%q and %d more", ids[:5], len(ids)-5)
}

// missingIDs returns the Message-IDs of want that the selected mailbox
// of c does not hold.
func missingIDs(t *testing.T, c *imapclient.Client, want []string) []string {
	t.Helper()
	have := map[string]bool{}
	for _, m := range fetchAll(t, c, &imap.FetchOptions{Envelope: true}) {
		have[m.Envelope.MessageID] = true
	}
	var missing []string
	for _, id := range want {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	return missing
}

// load sends mail to one user through every node but one, counting
// acknowledgements; with strict, a refusal by a node that is not being
// restarted at that moment fails the test (a client connected to the
// node that stops loses its session, as any client would).
type load struct {
	t      *testing.T
	nodes  []*node
	user   string
	strict bool

	mu       sync.Mutex
	acked    map[string]bool
	refused  int
	failures []sendFailure
	windows  []restartWindow
	avoid    int
	done     chan struct{}
	wg       sync.WaitGroup
}

type sendFailure struct {
	node       int
	start, end time.Time
	err        error
}

type restartWindow struct {
	node       int
	start, end time.Time
}

func startLoad(t *testing.T, nodes []*node, avoid int, user string) *load {
	l := &load{t: t, nodes: nodes, user: user, acked: map[string]bool{}, avoid: avoid, done: make(chan struct{})}
	for s := 0; s < 3; s++ {
		l.wg.Add(1)
		go l.sender(s)
	}
	return l
}

// skip makes the senders avoid node i (-1: none), as a client would
// avoid a node being restarted; skip(-1) closes the node's restart
// window.
func (l *load) skip(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if i >= 0 {
		l.windows = append(l.windows, restartWindow{node: i, start: now})
	} else if n := len(l.windows); n > 0 {
		l.windows[n-1].end = now
	}
	l.avoid = i
}

// excused reports whether a failed send went to a node during its
// restart.
func (l *load) excused(f sendFailure) bool {
	for _, w := range l.windows {
		end := w.end
		if end.IsZero() {
			end = time.Now()
		}
		if f.node == w.node && f.start.Before(end) && f.end.After(w.start) {
			return true
		}
	}
	return false
}

func (l *load) sender(s int) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.done:
			return
		default:
		}
		l.mu.Lock()
		avoid := l.avoid
		l.mu.Unlock()
		k := (s + i) % len(l.nodes)
		if k == avoid {
			k = (k + 1) % len(l.nodes)
		}
		addr, ok := l.nodes[k].listenerAddr("smtp")
		if !ok {
			continue // between stop and start
		}
		id := fmt.Sprintf("load-%d-%d.%s@client.e2e.test", s, i, randomHex(4))
		msg := mailSpec{From: "load@remote.example", To: l.user, Subject: "load", MessageID: id, Text: "x"}.build()
		start := time.Now()
		err := sendVia(addr, l.user, msg)
		l.mu.Lock()
		if err == nil {
			l.acked[id] = true
		} else {
			l.refused++
			l.failures = append(l.failures, sendFailure{node: k, start: start, end: time.Now(), err: err})
		}
		l.mu.Unlock()
	}
}

func sendVia(addr, rcpt string, msg []byte) error {
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return err
	}
	c := gosmtp.NewClient(conn)
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = ioTimeout, ioTimeout
	if err := c.Hello("sender.e2e.test"); err != nil {
		return err
	}
	if err := sendOne(c, rcpt, msg); err != nil {
		return err
	}
	return c.Quit()
}

func (l *load) acks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// ackedIDs returns the Message-IDs acknowledged so far.
func (l *load) ackedIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.acked))
	for id := range l.acked {
		ids = append(ids, id)
	}
	return ids
}

func (l *load) waitAcks(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 2*time.Minute, fmt.Sprintf("%d acknowledged messages", n), func() error {
		if got := l.acks(); got < n {
			return fmt.Errorf("%d acknowledged", got)
		}
		return nil
	})
}

func (l *load) stop() {
	close(l.done)
	l.wg.Wait()
}

// check reads the user's INBOX through n: every acknowledged message
// exactly once.
func (l *load) check(t *testing.T, n *node, user, pass string) {
	t.Helper()
	c := imapDialTLS(t, n, user, pass, nil)
	selectBox(t, c, "INBOX", true)
	found := map[string]int{}
	for _, m := range fetchAll(t, c, &imap.FetchOptions{Envelope: true}) {
		found[m.Envelope.MessageID]++
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var missing, dup []string
	for id := range l.acked {
		if found[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, k := range found {
		if k > 1 {
			dup = append(dup, id)
		}
	}
	t.Logf("acknowledged %d, refused %d, found %d distinct, missing %d, duplicated %d", len(l.acked), l.refused, len(found), len(missing), len(dup))
	if len(missing) > 0 || len(dup) > 0 {
		t.Fatalf("missing %q, duplicated %q", missing, dup)
	}
	if l.strict {
		var bad []string
		for _, f := range l.failures {
			if !l.excused(f) {
				bad = append(bad, fmt.Sprintf("n%d: %v", f.node+1, f.err))
			}
		}
		if len(bad) > 0 {
			t.Fatalf("sends through nodes that were running failed: %q", bad)
		}
	}
}
