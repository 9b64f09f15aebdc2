package workload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/stats"
	"github.com/mailcluster/mailcluster/bench/targets"
)

// Cluster is the control the failover workload needs over a target of
// several nodes (the targets package's cluster3 provides it).
type Cluster interface {
	// NodeIDs names the nodes, in the order of Env.Nodes.
	NodeIDs() []string
	// UserShard returns the mail shard holding a user's mailbox.
	UserShard(ctx context.Context, address string) (uint32, error)
	// ShardLeader returns the node leading a shard, as a running node
	// sees it.
	ShardLeader(ctx context.Context, shard uint32) (string, error)
	// Kill ends a node at once (SIGKILL), as a crash would.
	Kill(id string) error
	// Restart starts a killed node again and returns once it has
	// rejoined the cluster.
	Restart(ctx context.Context, id string) error
}

// Defaults and bounds of the failover workload.
const (
	// failoverGrace is how much longer than FailoverConfig.After the
	// load goes on while the shard has accepted no write since the kill.
	failoverGrace = time.Minute
	// failoverSteadyGrace bounds the wait for the first acknowledged
	// write to the shard before the kill.
	failoverSteadyGrace = 30 * time.Second
	// failoverLeaderWait bounds the wait until a running node names the
	// shard's new leader.
	failoverLeaderWait = 30 * time.Second
	// failoverRejoinTimeout bounds the restart of the killed node.
	failoverRejoinTimeout = 3 * time.Minute
	// failoverPoll is how often the workload looks at the senders' tally.
	failoverPoll = 10 * time.Millisecond
	// probeFrom is the envelope sender of the failover's messages.
	probeFrom = "failover@mailbench.example.org"
)

// FailoverConfig shapes failover.
type FailoverConfig struct {
	// Senders is the number of concurrent SMTP senders; sender i starts
	// on node i (round-robin) and moves to the next node when its
	// connection fails, as an MTA tries the next MX host.
	Senders int
	// Before is how long the load runs before the kill.
	Before time.Duration
	// After is how long the load goes on after the kill (longer while
	// the shard has not acknowledged a write since, up to a minute more).
	After time.Duration
	// User is the index of the user whose shard's leader is killed.
	User int
	// Backoff is how long a sender waits before it retries a refused
	// message (0: 50 ms).
	Backoff time.Duration
	// PerConnection is how many messages a sender sends before it
	// reconnects (0: 10).
	PerConnection int
	// Drain bounds how long senders keep retrying refused messages once
	// the load stops (0: 30 s).
	Drain time.Duration
}

// FailoverResult is what the failover workload measured.
type FailoverResult struct {
	Senders int `json:"senders"`
	// User is the chosen user; Shard its mail shard; Killed the node that
	// led the shard and was killed; NewLeader the node that led it next.
	User       string `json:"user"`
	Shard      uint32 `json:"shard"`
	ShardUsers int    `json:"shard_users"`
	Killed     string `json:"killed"`
	NewLeader  string `json:"new_leader,omitempty"`
	// BeforeSec and AfterSec are how long the load ran before and after
	// the kill.
	BeforeSec float64 `json:"before_sec"`
	AfterSec  float64 `json:"after_sec"`
	// Recovered says whether the shard acknowledged a write after the
	// kill; FailoverSec is the time from the kill to the first 250 for a
	// message to a user of the shard whose end of data was sent after the
	// kill (so it was committed by the new leader).
	Recovered   bool    `json:"recovered"`
	FailoverSec float64 `json:"failover_sec"`
	// Sent is the number of distinct messages the senders started;
	// Attempts the transactions and connection attempts made for them.
	Sent     int `json:"sent"`
	Attempts int `json:"attempts"`
	// Acked were acknowledged with 250 (after retries).
	Acked int `json:"acked"`
	// Refused counts the attempts refused after the kill: answered with a
	// 4xx code (Refused4xx) or ended by a connection error (RefusedConn);
	// each was retried. RefusedBefore counts refusals before the kill.
	Refused       int `json:"refused"`
	Refused4xx    int `json:"refused_4xx"`
	RefusedConn   int `json:"refused_connection"`
	RefusedBefore int `json:"refused_before_kill"`
	// Rejected were refused for good (5xx); a sender gives them up.
	Rejected int `json:"rejected"`
	// GaveUp were still refused when the senders' retry time ran out.
	GaveUp int `json:"gave_up"`
	// UnknownOutcome counts messages with an attempt whose connection was
	// lost after the end of data was sent: the sender cannot know whether
	// it was stored, so its retry may store it twice.
	UnknownOutcome int `json:"unknown_outcome"`
	// Found, Lost and Duplicates come from reading every mailbox back
	// through the surviving nodes: acknowledged messages found (at least
	// once), not found, and extra copies.
	Found      int `json:"found"`
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
	// DuplicatesLostReply counts the duplicated messages that had an
	// attempt of unknown outcome (see UnknownOutcome): stored, but the
	// 250 was lost with the connection, so the sender sent it again.
	DuplicatesLostReply int `json:"duplicates_lost_reply"`
	// Rejoined says whether the killed node, restarted, rejoined the
	// cluster; RejoinSec is how long that took.
	Rejoined  bool    `json:"rejoined"`
	RejoinSec float64 `json:"rejoin_sec"`
	// Ops are the latencies of the transactions ("transaction", up to the
	// final reply) and connections ("connect").
	Ops map[string]stats.Summary `json:"ops"`
	// Check is the read-back of every acknowledged message.
	Check *CheckResult `json:"check,omitempty"`
	// Refusals are the first distinct refusals the senders saw, with
	// counts (expected while the shard has no leader).
	Refusals []string `json:"refusals,omitempty"`
	// Errors are what kept the workload from completing a step.
	Errors []string `json:"errors,omitempty"`
}

// Failover runs the failover workload against a target of several
// nodes: Senders concurrent SMTP senders deliver small messages, half of
// them to users of the chosen user's shard and half to all users, for
// Before; then the node leading that shard is killed (SIGKILL) and the
// load goes on for After. Refused messages (4xx or a connection error)
// are retried after Backoff, through the next node after a connection
// error. Then every mailbox is read back through the surviving nodes and
// every acknowledged message must be there exactly once; finally the
// killed node is restarted and must rejoin.
func Failover(ctx context.Context, env Env, cl Cluster, cfg FailoverConfig) (*FailoverResult, error) {
	ids := cl.NodeIDs()
	switch {
	case len(env.nodes()) < 2 || len(ids) != len(env.nodes()):
		return nil, fmt.Errorf("failover: needs a target of several nodes, got %d endpoints and %d node ids", len(env.nodes()), len(ids))
	case cfg.Senders < 1:
		return nil, errors.New("failover: at least one sender is needed")
	case cfg.User < 0 || cfg.User >= len(env.Users):
		return nil, fmt.Errorf("failover: user %d of %d", cfg.User, len(env.Users))
	case cfg.Before <= 0 || cfg.After <= 0:
		return nil, errors.New("failover: the load must run before and after the kill")
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 50 * time.Millisecond
	}
	if cfg.PerConnection < 1 {
		cfg.PerConnection = 10
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	log := env.logger().With("workload", "failover")
	res := &FailoverResult{Senders: cfg.Senders, User: env.Users[cfg.User].Address}

	shards, err := userShards(ctx, env, cl)
	if err != nil {
		return nil, err
	}
	res.Shard = shards[cfg.User]
	var shardUsers []int
	for u, s := range shards {
		if s == res.Shard {
			shardUsers = append(shardUsers, u)
		}
	}
	res.ShardUsers = len(shardUsers)
	log.Info("chosen", "user", res.User, "shard", res.Shard, "users_on_shard", len(shardUsers))

	tally := newFailoverTally(shardUsers)
	gen := &probeGen{users: env.Users, shardUsers: shardUsers}
	rec := stats.NewRecorder()
	refusals := newErrorLog()
	load := newSenders(env, cfg, gen, tally, rec, refusals)
	start := time.Now()
	load.start(ctx)
	defer load.stop(ctx)

	// Steady state: Before, and at least one write to the shard.
	if err := waitUntil(ctx, start.Add(cfg.Before+failoverSteadyGrace), func() bool {
		return time.Since(start) >= cfg.Before && tally.shardAckedBefore() > 0
	}); err != nil {
		return nil, fmt.Errorf("failover: no message to shard %d was acknowledged within %v: %w (%s)",
			res.Shard, cfg.Before+failoverSteadyGrace, err, strings.Join(refusals.list(), "; "))
	}
	// The admin command may time out on a loaded machine: try again.
	var leader string
	var lookup error
	if err := waitUntil(ctx, time.Now().Add(failoverLeaderWait), func() bool {
		leader, lookup = cl.ShardLeader(ctx, res.Shard)
		return lookup == nil
	}); err != nil {
		return nil, fmt.Errorf("failover: leader of shard %d: %w", res.Shard, errors.Join(err, lookup))
	}
	killed := slices.Index(ids, leader)
	if killed < 0 {
		return nil, fmt.Errorf("failover: shard %d is led by %q, not a node of the target (%v)", res.Shard, leader, ids)
	}
	res.Killed = leader
	killAt := time.Now()
	tally.markKill(killAt)
	res.BeforeSec = killAt.Sub(start).Seconds()
	if err := cl.Kill(leader); err != nil {
		return nil, fmt.Errorf("failover: kill %s: %w", leader, err)
	}
	log.Info("killed the shard's leader", "node", leader, "shard", res.Shard, "after", killAt.Sub(start).Round(time.Millisecond))
	restarted := false
	defer func() {
		// An interrupted run stops the whole target anyway.
		if restarted || ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), failoverRejoinTimeout)
		defer cancel()
		if err := cl.Restart(rctx, leader); err != nil {
			log.Error("restart of the killed node failed", "node", leader, "err", err)
		}
	}()

	// After the kill: After, and until the shard acknowledges a write.
	if err := waitUntil(ctx, killAt.Add(cfg.After+failoverGrace), func() bool {
		_, ok := tally.firstAckAfterKill()
		return ok && time.Since(killAt) >= cfg.After
	}); err != nil && ctx.Err() != nil {
		return nil, err
	}
	load.stop(ctx)
	res.AfterSec = time.Since(killAt).Seconds()
	if res.NewLeader, err = newLeader(ctx, cl, res.Shard, leader); err != nil {
		res.Errors = append(res.Errors, err.Error())
	}

	t := tally.result()
	res.Sent, res.GaveUp = load.sent(), load.gaveUp()
	res.Attempts, res.Acked, res.Rejected = t.attempts, len(t.acked), t.rejected
	res.Refused4xx, res.RefusedConn, res.RefusedBefore = t.refused4xx, t.refusedConn, t.refusedBefore
	res.Refused = t.refused4xx + t.refusedConn
	res.UnknownOutcome = len(t.unknown)
	if first, ok := tally.firstAckAfterKill(); ok {
		res.Recovered, res.FailoverSec = true, first.Sub(killAt).Seconds()
	}
	res.Ops = rec.Summaries(time.Since(start))
	log.Info("load done", "sent", res.Sent, "acked", res.Acked, "refused", res.Refused, "recovered", res.Recovered,
		"failover", time.Duration(res.FailoverSec*float64(time.Second)).Round(time.Millisecond))

	// Read every mailbox back through the surviving nodes.
	probes := &corpus.Corpus{Messages: gen.all()}
	venv := env
	venv.Corpus = probes
	check, err := Verify(ctx, venv, t.acked, VerifyConfig{Workload: "failover", Via: t.via, Down: []int{killed}})
	if err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("verify: %v", err))
	} else {
		res.Check = check
		res.Found, res.Lost, res.Duplicates = check.Expected-check.Missing, check.Missing, check.Duplicates
		for _, tag := range check.DuplicateTags {
			if t.unknown[tag] {
				res.DuplicatesLostReply++
			}
		}
	}

	// Restart the killed node; it must rejoin.
	restarted = true
	t0 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, failoverRejoinTimeout)
	defer cancel()
	if err := cl.Restart(rctx, leader); err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("restart %s: %v", leader, err))
	} else {
		res.Rejoined, res.RejoinSec = true, time.Since(t0).Seconds()
	}
	res.Refusals = refusals.list()
	log.Info("done", "failover", time.Duration(res.FailoverSec*float64(time.Second)).Round(time.Millisecond),
		"refused", res.Refused, "acked", res.Acked, "found", res.Found, "lost", res.Lost, "duplicates", res.Duplicates,
		"rejoin", time.Duration(res.RejoinSec*float64(time.Second)).Round(time.Millisecond))
	return res, nil
}

// OK reports whether the failover kept every acknowledged message
// exactly once and intact.
func (r *FailoverResult) OK() bool {
	return r.Check != nil && r.Check.OK() && r.Lost == 0 && r.Duplicates == 0
}

// userShards returns every user's mail shard, a few lookups at a time.
func userShards(ctx context.Context, env Env, cl Cluster) ([]uint32, error) {
	shards := make([]uint32, len(env.Users))
	err := eachUser(len(env.Users), func(u int) error {
		s, err := cl.UserShard(ctx, env.Users[u].Address)
		if err != nil {
			return fmt.Errorf("failover: shard of %s: %w", env.Users[u].Address, err)
		}
		shards[u] = s
		return nil
	})
	return shards, err
}

// newLeader waits until a running node names another leader of shard
// than old, and returns it ("" when none is named in time).
func newLeader(ctx context.Context, cl Cluster, shard uint32, old string) (string, error) {
	var leader string
	err := waitUntil(ctx, time.Now().Add(failoverLeaderWait), func() bool {
		l, err := cl.ShardLeader(ctx, shard)
		if err != nil {
			return false
		}
		leader = l
		return l != "" && l != old
	})
	if err != nil {
		return "", fmt.Errorf("new leader of shard %d: not named within %v: %w", shard, failoverLeaderWait, err)
	}
	return leader, nil
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(ctx context.Context, deadline time.Time, cond func() bool) error {
	tick := time.NewTicker(failoverPoll)
	defer tick.Stop()
	for !cond() {
		if !time.Now().Before(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// outcome is how one attempt to deliver a message ended.
type outcome int

const (
	// acked: 250 at the end of data.
	acked outcome = iota
	// temporary: a 4xx reply; the sender retries.
	temporary
	// connection: the connection failed or broke; the sender retries
	// through the next node.
	connection
	// permanent: a 5xx reply; the sender gives the message up.
	permanent
)

// classify tells how an attempt ended from its error.
func classify(err error) outcome {
	if err == nil {
		return acked
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		switch {
		case se.Code >= 400 && se.Code < 500:
			return temporary
		case se.Code >= 500 && se.Code < 600:
			return permanent
		}
	}
	return connection
}

// attempt is one try to deliver a message.
type attempt struct {
	msg  *corpus.Message
	node int
	err  error
	// dataEnd is when the end of data was about to be sent (zero when
	// the transaction failed before).
	dataEnd time.Time
	// end is when the reply came or the attempt failed.
	end time.Time
}

// failoverTally counts what the senders saw. It is safe for concurrent
// use.
type failoverTally struct {
	mu      sync.Mutex
	onShard map[int]bool
	killAt  time.Time
	t       tallied
	// shardBefore counts the 250s to the shard before the kill; firstAck
	// is the first 250 to the shard for a transaction whose end of data
	// was sent after the kill.
	shardBefore int
	firstAck    time.Time
}

// tallied are the senders' counts.
type tallied struct {
	attempts                               int
	refused4xx, refusedConn, refusedBefore int
	rejected                               int
	acked                                  []*corpus.Message
	via                                    map[string]int
	unknown                                map[string]bool
}

func newFailoverTally(shardUsers []int) *failoverTally {
	t := &failoverTally{onShard: make(map[int]bool)}
	for _, u := range shardUsers {
		t.onShard[u] = true
	}
	t.t.via = make(map[string]int)
	t.t.unknown = make(map[string]bool)
	return t
}

// markKill records when the leader was killed.
func (t *failoverTally) markKill(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.killAt = at
}

// add counts one attempt and returns how it ended.
func (t *failoverTally) add(a attempt) outcome {
	o := classify(a.err)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.t.attempts++
	afterKill := !t.killAt.IsZero() && !a.end.Before(t.killAt)
	switch o {
	case acked:
		t.t.acked = append(t.t.acked, a.msg)
		t.t.via[a.msg.Tag] = a.node
		if !t.onShard[a.msg.Rcpt] {
			break
		}
		if !afterKill {
			t.shardBefore++
		}
		if !t.killAt.IsZero() && !a.dataEnd.Before(t.killAt) && (t.firstAck.IsZero() || a.end.Before(t.firstAck)) {
			t.firstAck = a.end
		}
	case temporary, connection:
		switch {
		case !afterKill:
			t.t.refusedBefore++
		case o == temporary:
			t.t.refused4xx++
		default:
			t.t.refusedConn++
		}
		if o == connection && !a.dataEnd.IsZero() {
			t.t.unknown[a.msg.Tag] = true
		}
	case permanent:
		t.t.rejected++
	}
	return o
}

func (t *failoverTally) shardAckedBefore() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.shardBefore
}

// firstAckAfterKill returns when the shard first acknowledged a message
// sent after the kill.
func (t *failoverTally) firstAckAfterKill() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.firstAck, !t.firstAck.IsZero()
}

// result returns a copy of the counts.
func (t *failoverTally) result() tallied {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.t
	r.acked = slices.Clone(t.t.acked)
	r.via = make(map[string]int, len(t.t.via))
	for k, v := range t.t.via {
		r.via[k] = v
	}
	r.unknown = make(map[string]bool, len(t.t.unknown))
	for k := range t.t.unknown {
		r.unknown[k] = true
	}
	return r
}

// probeGen makes the failover's messages: small, each with a unique tag
// and Message-ID, every other one to a user of the chosen shard. It is
// safe for concurrent use.
type probeGen struct {
	users      []targets.User
	shardUsers []int
	mu         sync.Mutex
	made       []*corpus.Message
}

// next returns the next message.
func (g *probeGen) next() *corpus.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	seq := len(g.made)
	rcpt := (seq / 2) % len(g.users)
	if seq%2 == 0 && len(g.shardUsers) > 0 {
		rcpt = g.shardUsers[(seq/2)%len(g.shardUsers)]
	}
	m := probe(seq, rcpt, g.users[rcpt].Address)
	g.made = append(g.made, m)
	return m
}

// all returns every message made so far.
func (g *probeGen) all() []corpus.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]corpus.Message, len(g.made))
	for i, m := range g.made {
		out[i] = *m
	}
	return out
}

// probe builds failover message seq for user rcpt (address to).
func probe(seq, rcpt int, to string) *corpus.Message {
	tag := fmt.Sprintf("failover-%d", seq)
	msgID := fmt.Sprintf("<failover.%d@mailbench.example.org>", seq)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\r\n", corpus.TagHeader, tag)
	fmt.Fprintf(&b, "Message-ID: %s\r\n", msgID)
	fmt.Fprintf(&b, "From: Failover probe <%s>\r\n", probeFrom)
	fmt.Fprintf(&b, "To: <%s>\r\n", to)
	fmt.Fprintf(&b, "Subject: failover probe %d\r\n", seq)
	b.WriteString("Date: Mon, 05 Jan 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	for i := range 24 {
		fmt.Fprintf(&b, "Probe %d, line %02d: written while a shard leader is killed; it must arrive exactly once.\r\n", seq, i)
	}
	data := []byte(b.String())
	return &corpus.Message{Index: seq, Rcpt: rcpt, From: probeFrom, Tag: tag, MessageID: msgID,
		Kind: corpus.KindText, Data: data, Sum: sha256.Sum256(data)}
}
