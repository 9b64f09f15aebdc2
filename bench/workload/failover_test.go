package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/targets"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/protocols/imap"
	"github.com/mailcluster/mailcluster/protocols/protocoltest"
	protosmtp "github.com/mailcluster/mailcluster/protocols/smtp"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want outcome
	}{
		{nil, acked},
		{&smtp.SMTPError{Code: 451, Message: "try again"}, temporary},
		{fmt.Errorf("end of data: %w", &smtp.SMTPError{Code: 421}), temporary},
		{fmt.Errorf("rcpt to: %w", &smtp.SMTPError{Code: 550}), permanent},
		{fmt.Errorf("end of data: %w", io.EOF), connection},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, connection},
		{&smtp.SMTPError{Code: 250}, connection}, // not a refusal code: treated as a broken exchange
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestFailoverTally feeds the tally attempts around a kill and checks
// each count and the failover time.
func TestFailoverTally(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	onShard := func(seq int) *corpus.Message { return &corpus.Message{Tag: "s" + strconv.Itoa(seq), Rcpt: 1} }
	elsewhere := func(seq int) *corpus.Message { return &corpus.Message{Tag: "o" + strconv.Itoa(seq), Rcpt: 2} }
	temp := &smtp.SMTPError{Code: 451}
	tally := newFailoverTally([]int{1})
	steps := []struct {
		a    attempt
		want outcome
	}{
		// Before the kill at 1000 ms.
		{attempt{msg: onShard(0), node: 0, dataEnd: at(10), end: at(20)}, acked},
		{attempt{msg: elsewhere(0), node: 1, dataEnd: at(30), end: at(40)}, acked},
		{attempt{msg: onShard(1), node: 2, err: temp, dataEnd: at(50), end: at(60)}, temporary},
		// Committed before the kill, answered after it: not a recovery.
		{attempt{msg: onShard(2), node: 0, dataEnd: at(990), end: at(1005)}, acked},
		// After the kill.
		{attempt{msg: onShard(3), node: 0, err: temp, dataEnd: at(1010), end: at(1020)}, temporary},
		{attempt{msg: onShard(4), node: 1, err: io.EOF, dataEnd: at(1015), end: at(1030)}, connection},
		{attempt{msg: onShard(5), node: 1, err: &net.OpError{Op: "dial", Err: errors.New("refused")}, end: at(1040)}, connection},
		{attempt{msg: elsewhere(1), node: 2, dataEnd: at(1050), end: at(1060)}, acked}, // another shard
		{attempt{msg: onShard(6), node: 2, err: &smtp.SMTPError{Code: 554}, dataEnd: at(1070), end: at(1080)}, permanent},
		{attempt{msg: onShard(3), node: 0, dataEnd: at(1500), end: at(1700)}, acked}, // the first recovery, by end time
		{attempt{msg: onShard(4), node: 2, dataEnd: at(1400), end: at(1650)}, acked},
		{attempt{msg: onShard(5), node: 2, dataEnd: at(1800), end: at(1900)}, acked},
	}
	for i, s := range steps {
		if i == 3 {
			if _, ok := tally.firstAckAfterKill(); ok {
				t.Fatal("a recovery before the kill")
			}
			tally.markKill(at(1000))
		}
		if got := tally.add(s.a); got != s.want {
			t.Fatalf("step %d: outcome %d, want %d", i, got, s.want)
		}
	}
	r := tally.result()
	if r.attempts != len(steps) || len(r.acked) != 7 || r.refusedBefore != 1 || r.refused4xx != 1 || r.refusedConn != 2 || r.rejected != 1 {
		t.Fatalf("counts %+v", r)
	}
	if tally.shardAckedBefore() != 1 {
		t.Fatalf("%d acknowledgements to the shard before the kill, want 1", tally.shardAckedBefore())
	}
	first, ok := tally.firstAckAfterKill()
	if !ok || !first.Equal(at(1650)) {
		t.Fatalf("first recovery at %v (%v), want 1650 ms", first.Sub(base), ok)
	}
	if len(r.unknown) != 1 || !r.unknown["s4"] {
		t.Fatalf("unknown outcomes %v, want s4 (connection lost after the end of data)", r.unknown)
	}
	if r.via["s3"] != 0 || r.via["s4"] != 2 || r.via["o1"] != 2 {
		t.Fatalf("via %v", r.via)
	}
}

func TestReadPlan(t *testing.T) {
	via := map[string]int{"a": 0, "b": 1, "c": 2}
	p, err := newReadPlan(3, via, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	for u := range 4 {
		list := p.listNode(u)
		if list == 2 {
			t.Fatalf("user %d listed through the node that is down", u)
		}
		for tag, in := range via {
			n, elsewhere := p.readNode(u, tag)
			if n == 2 || n == in || !elsewhere {
				t.Errorf("user %d, message in through %d: read through %d (elsewhere %v)", u, in, n, elsewhere)
			}
		}
		if n, elsewhere := p.readNode(u, "unknown"); n != list || elsewhere {
			t.Errorf("unknown message read through %d, elsewhere %v", n, elsewhere)
		}
	}
	// One node: no other node to read through.
	one, err := newReadPlan(1, map[string]int{"a": 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, elsewhere := one.readNode(0, "a"); n != 0 || elsewhere {
		t.Fatalf("single node: %d %v", n, elsewhere)
	}
	if _, err := newReadPlan(2, nil, []int{0, 1}); err == nil {
		t.Fatal("a plan with every node down")
	}
}

func TestHeaderValue(t *testing.T) {
	for section, want := range map[string]string{
		"X-Mailbench-Id: 1-2\r\n\r\n":               "1-2",
		"x-mailbench-id:failover-7 \r\n\r\n":        "failover-7",
		"X-Mailbench-Id: a\r\n\tb\r\n\r\n":          "a\tb",
		"Subject: X-Mailbench-Id: no\r\n\r\n":       "",
		"":                                          "",
		"X-Mailbench-Idx: no\r\nX-Other: 1\r\n\r\n": "",
	} {
		if got := headerValue([]byte(section), corpus.TagHeader); got != want {
			t.Errorf("headerValue(%q) = %q, want %q", section, got, want)
		}
	}
}

// testNode is one node of an in-process cluster: an SMTP and an IMAP
// server over the cluster's shared store.
type testNode struct {
	smtp, imap net.Listener
}

// testCluster runs n nodes over one in-memory store, with users.
func testCluster(t *testing.T, n int, users []targets.User) (*protocoltest.Env, []testNode, Env) {
	t.Helper()
	store := protocoltest.NewStore(t)
	serverTLS, clientTLS := protocoltest.TLS(t)
	for _, u := range users {
		store.AddUser(t, u.Address, u.Password)
	}
	guard := protocols.NewAuthGuard(protocols.DefaultAuthGuardConfig(), nil)
	env := Env{Target: "in-process cluster", TLS: clientTLS, Users: users}
	var nodes []testNode
	for range n {
		mx, err := protosmtp.NewServer(protosmtp.Config{Mode: protosmtp.ModeMX, Hostname: "localhost", TLS: serverTLS}, store.Store)
		if err != nil {
			t.Fatal(err)
		}
		im, err := imap.NewServer(imap.Config{Hostname: "localhost", TLS: serverTLS, Guard: guard}, store.Store)
		if err != nil {
			t.Fatal(err)
		}
		tn := testNode{smtp: listen(t, mx), imap: listen(t, im)}
		nodes = append(nodes, tn)
		env.Nodes = append(env.Nodes, targets.Endpoints{SMTP: tn.smtp.Addr().String(), IMAP: tn.imap.Addr().String()})
	}
	env.Endpoints = env.Nodes[0]
	return store, nodes, env
}

func testUsers(n int) []targets.User {
	users := make([]targets.User, n)
	for i := range users {
		users[i] = targets.User{Address: fmt.Sprintf("user%d@bench.test", i), Password: "bench-password"}
	}
	return users
}

// fakeCluster plays the cluster's control for the failover workload: a
// user's shard is 1 + its index modulo 2; node n3 leads until it is
// killed, which refuses new connections to it and makes the store refuse
// writes for outage, as an election would.
type fakeCluster struct {
	ids    []string
	nodes  []testNode
	store  *protocoltest.Env
	outage time.Duration

	mu        sync.Mutex
	killed    string
	restarted []string
}

func (f *fakeCluster) NodeIDs() []string { return f.ids }

func (f *fakeCluster) UserShard(_ context.Context, address string) (uint32, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(strings.Split(address, "@")[0], "user"))
	if err != nil {
		return 0, err
	}
	return uint32(1 + i%2), nil
}

func (f *fakeCluster) ShardLeader(context.Context, uint32) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killed != "" {
		return "n1", nil
	}
	return "n3", nil
}

func (f *fakeCluster) Kill(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killed != "" {
		return errors.New("a node is down already")
	}
	for i, n := range f.ids {
		if n == id {
			f.killed = id
			f.store.SetUnavailable(true)
			time.AfterFunc(f.outage, func() { f.store.SetUnavailable(false) })
			f.nodes[i].smtp.Close()
			f.nodes[i].imap.Close()
			return nil
		}
	}
	return fmt.Errorf("no node %s", id)
}

func (f *fakeCluster) Restart(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != f.killed {
		return fmt.Errorf("restart of %s, which was not killed", id)
	}
	f.restarted = append(f.restarted, id)
	return nil
}

// TestFailoverAgainstServers runs the failover workload against three
// in-process nodes over one store, with a fake cluster control: the
// senders must be refused while the store has no quorum, retry, and
// every acknowledged message must be read back once through the nodes
// left.
func TestFailoverAgainstServers(t *testing.T) {
	users := testUsers(4)
	store, nodes, env := testCluster(t, 3, users)
	const outage = 400 * time.Millisecond
	cl := &fakeCluster{ids: []string{"n1", "n2", "n3"}, nodes: nodes, store: store, outage: outage}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Failover(ctx, env, cl, FailoverConfig{Senders: 3, Before: 300 * time.Millisecond, After: 600 * time.Millisecond,
		User: 1, PerConnection: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover %.3f s, %d refused (%d 4xx, %d connection), %d sent, %d acked, %d found",
		res.FailoverSec, res.Refused, res.Refused4xx, res.RefusedConn, res.Sent, res.Acked, res.Found)
	if res.Shard != 2 || res.ShardUsers != 2 || res.Killed != "n3" || res.NewLeader != "n1" {
		t.Errorf("shard %d (%d users), killed %s, new leader %s; want shard 2 (2 users), n3, n1", res.Shard, res.ShardUsers, res.Killed, res.NewLeader)
	}
	// No write can succeed before the outage ends.
	if !res.Recovered || res.FailoverSec < outage.Seconds() {
		t.Errorf("recovered %v after %.3f s; the store refused writes for %v", res.Recovered, res.FailoverSec, outage)
	}
	if res.Refused4xx == 0 || res.RefusedConn == 0 || res.Refused != res.Refused4xx+res.RefusedConn || res.RefusedBefore != 0 {
		t.Errorf("refusals: %d 4xx, %d connection, %d in all, %d before the kill", res.Refused4xx, res.RefusedConn, res.Refused, res.RefusedBefore)
	}
	if res.Acked == 0 || res.Sent != res.Acked+res.GaveUp+res.Rejected || res.Rejected != 0 {
		t.Errorf("sent %d, acked %d, gave up %d, rejected %d", res.Sent, res.Acked, res.GaveUp, res.Rejected)
	}
	if !res.OK() || res.Found != res.Acked || res.Lost != 0 || res.Duplicates != 0 || res.Check.ReadElsewhere != res.Acked {
		t.Errorf("read back: %+v", res.Check)
	}
	if !res.Rejoined || len(cl.restarted) != 1 || len(res.Errors) != 0 {
		t.Errorf("rejoined %v, restarts %v, errors %v", res.Rejoined, cl.restarted, res.Errors)
	}
}

// TestVerifyCountsLossAndDuplicates stores acknowledged probes once,
// twice and not at all, and checks what Verify reports through the two
// nodes left of three.
func TestVerifyCountsLossAndDuplicates(t *testing.T) {
	users := testUsers(2)
	_, _, env := testCluster(t, 3, users)
	c, err := corpus.Generate(corpus.Config{Seed: 3, Messages: 1, Users: 2})
	if err != nil {
		t.Fatal(err)
	}
	probes := make([]*corpus.Message, 5)
	all := &corpus.Corpus{}
	for i := range probes {
		probes[i] = probe(i, i%2, users[i%2].Address)
		all.Messages = append(all.Messages, *probes[i])
	}
	send := func(node int, m *corpus.Message) {
		t.Helper()
		cl, err := dialSMTP(context.Background(), env.Nodes[node].SMTP, env.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := sendOne(cl, m, users[m.Rcpt].Address); err != nil {
			t.Fatal(err)
		}
	}
	send(0, probes[0])
	send(1, probes[0]) // a retry stored it twice
	send(1, probes[1])
	send(2, probes[3])      // stored, never acknowledged
	send(0, &c.Messages[0]) // not a probe: left alone
	acked := probes[:3]     // probes[2] was acknowledged but is lost
	via := map[string]int{probes[0].Tag: 0, probes[1].Tag: 1, probes[2].Tag: 0}
	env.Corpus = all
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Verify(ctx, env, acked, VerifyConfig{Via: via, Down: []int{2}})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() || res.Expected != 3 || res.Matched != 2 || res.Missing != 1 || res.Duplicates != 1 ||
		res.Mismatched != 0 || res.Unacknowledged != 1 || res.ReadElsewhere != 2 ||
		len(res.DuplicateTags) != 1 || res.DuplicateTags[0] != probes[0].Tag {
		t.Fatalf("result %+v", res)
	}
}

// TestIngestSpreadsOverNodes checks that smtp-ingest's clients spread
// over the nodes of a cluster and that the check reads every message
// through another node than the one that acknowledged it.
func TestIngestSpreadsOverNodes(t *testing.T) {
	users := testUsers(3)
	_, _, env := testCluster(t, 3, users)
	c, err := corpus.Generate(corpus.Config{Seed: 5, Messages: 30, Users: len(users), MaxSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	env.Corpus = c
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := WarmUp(ctx, env); err != nil {
		t.Fatal(err)
	}
	in, err := Ingest(ctx, env, IngestConfig{Clients: 3, Duration: time.Minute, PerConnection: 2})
	if err != nil {
		t.Fatal(err)
	}
	perNode := make(map[int]int)
	for _, n := range in.AckedVia() {
		perNode[n]++
	}
	if in.Acked != len(c.Messages) || len(perNode) != 3 {
		t.Fatalf("acked %d of %d; per node %v", in.Acked, len(c.Messages), perNode)
	}
	check, err := Verify(ctx, env, in.AckedMessages(), VerifyConfig{SentAt: time.Now(), Wait: 10 * time.Second, Via: in.AckedVia()})
	if err != nil {
		t.Fatal(err)
	}
	if !check.OK() || check.ReadElsewhere != check.Matched {
		t.Fatalf("check %+v: %d of %d read through another node", check, check.ReadElsewhere, check.Matched)
	}
}
