package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	// metaApplyWait bounds how long a meta write waits for this node's
	// replica to apply it (so the node reads its own directory changes).
	metaApplyWait = 5 * time.Second
	// readWait bounds how long a replica waits to reach a reader's index.
	readWait   = 5 * time.Second
	minBackoff = 10 * time.Millisecond
	maxBackoff = 250 * time.Millisecond
)

// leaderHint is where this node last saw a shard's leader.
type leaderHint struct {
	id, addr string
	term     uint64
}

// errNoLeader means no leader is known for a shard right now.
var errNoLeader = errors.New("no known leader")

// notLeaderError is a replica's answer that it does not lead, with the
// leader it knows, if any.
type notLeaderError struct{ id, addr string }

func (e *notLeaderError) Error() string {
	if e.id == "" {
		return "not the leader, and no leader known"
	}
	return "not the leader; the leader is " + e.id
}

// leaderOf returns the leader of shard n as this node knows it: from its
// own replica if it has one, else from the hints of pings and answers.
func (c *Cluster) leaderOf(n uint32) (id, addr string) {
	if s := c.replica(n); s != nil {
		if id, addr := s.Leader(); id != "" {
			return id, c.addressOf(id, addr)
		}
	}
	c.mu.RLock()
	h := c.leaders[n]
	c.mu.RUnlock()
	return h.id, c.addressOf(h.id, h.addr)
}

// addressOf returns a node's cluster address from its record, which is
// what it advertises, falling back to the address Raft reported.
func (c *Cluster) addressOf(id, reported string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.view != nil {
		if rec, ok := c.view.nodes[id]; ok && rec.Address != "" {
			return rec.Address
		}
	}
	return reported
}

// learnLeader records a hint about a shard's leader; a hint from a newer
// term wins, and an explicit redirect always does (term 0).
func (c *Cluster) learnLeader(n uint32, id, addr string, term uint64) {
	if id == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.leaders[n]; term != 0 && h.term > term {
		return
	}
	c.leaders[n] = leaderHint{id: id, addr: addr, term: term}
}

func (c *Cluster) forgetLeader(n uint32, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leaders[n].id == id {
		delete(c.leaders, n)
	}
}

// route runs op against the leader of shard n, following redirects and
// retrying through elections, dead peers and lost connections until it
// succeeds, fails for a reason a retry cannot change, or the route
// timeout ends (then schema.ErrUnavailable).
func (c *Cluster) route(ctx context.Context, n uint32, op func(ctx context.Context, local *raftstore.Shard, addr string) error) error {
	backoff := minBackoff
	var last error
	var giveUp time.Time // set at the first failure: the time to find a leader is bounded, not the operation
	redirects := 0
	for {
		id, addr := c.leaderOf(n)
		var err error
		switch {
		case id == "":
			err = errNoLeader
		case id == c.cfg.NodeID:
			if s := c.replica(n); s != nil {
				err = op(ctx, s, "")
			} else {
				err = errNoLeader
				c.forgetLeader(n, id)
			}
		default:
			err = c.callLeader(ctx, n, id, func(ctx context.Context) error { return op(ctx, nil, addr) })
		}
		if err == nil || !retryable(err) {
			return err
		}
		last = err
		var nl *notLeaderError
		if errors.As(err, &nl) && nl.id != "" && nl.id != id {
			c.learnLeader(n, nl.id, nl.addr, 0)
			if redirects++; redirects <= 3 {
				continue // a redirect: go there at once
			}
		}
		if id != "" && id != c.cfg.NodeID {
			c.forgetLeader(n, id)
		}
		if giveUp.IsZero() {
			giveUp = time.Now().Add(c.cfg.RouteTimeout)
		}
		if time.Now().After(giveUp) {
			return fmt.Errorf("shard %d: %w: %v", n, schema.ErrUnavailable, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("shard %d: %w: %v (%v)", n, schema.ErrUnavailable, last, ctx.Err())
		case <-c.closing:
			return fmt.Errorf("shard %d: node stopping: %w", n, schema.ErrUnavailable)
		case <-time.After(backoff):
		}
		c.probeLeader(n)
		backoff = min(backoff*2, maxBackoff)
	}
}

// leaderCheckEvery is how often a call to another node's leader that has
// not returned looks whether this node has learnt of another leader.
const leaderCheckEvery = 100 * time.Millisecond

// callLeader runs call, a request to node id as the leader of shard n,
// and ends it (errLeaderMoved, which route retries) once this node knows
// another node leads n. A leader that stops without closing its
// connections (a stalled VM, a process stopped with SIGSTOP, a host cut
// off without a reset) answers nothing and refuses nothing: without this,
// a write sent to it waited for the caller's whole deadline while the
// others had elected a new leader within a second. The retry carries the
// same request id, so the FSM applies a command once even when the old
// leader had got it committed. A call that returns within
// leaderCheckEvery, as nearly all do, costs one timer.
func (c *Cluster) callLeader(ctx context.Context, n uint32, id string, call func(ctx context.Context) error) error {
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	var t *time.Timer
	done := false
	mu.Lock()
	t = time.AfterFunc(leaderCheckEvery, func() {
		if now, _ := c.leaderOf(n); now != "" && now != id {
			cancel(errLeaderMoved)
			return
		}
		mu.Lock()
		if !done {
			t.Reset(leaderCheckEvery)
		}
		mu.Unlock()
	})
	mu.Unlock()
	err := call(cctx)
	mu.Lock()
	done = true
	t.Stop()
	mu.Unlock()
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(cctx), errLeaderMoved) {
		return fmt.Errorf("leader %s: %w", id, errLeaderMoved)
	}
	return err
}

// retryable reports whether an operation may succeed against another or a
// later leader. Data-model answers (no such mailbox...) are final.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var rerr *remoteError
	if errors.As(err, &rerr) {
		return rerr.temporary
	}
	if schema.CodeOf(err) != schema.CodeInvalid || errors.Is(err, schema.ErrInvalid) {
		return false // a sentinel of the data model
	}
	return true // not leader, no leader, closed replica, lost connection
}

// Apply commits p on shard n (0 is the meta shard) under a fresh request
// id; see ApplyRequest.
func (c *Cluster) Apply(ctx context.Context, n uint32, p schema.Payload) (*schema.Result, error) {
	return c.ApplyRequest(ctx, n, schema.NewRequestID(), p)
}

// ApplyRequest commits p on shard n under reqID, through the shard's
// leader wherever it is, and returns once it is applied. Retries (after a
// leader change, a lost answer or a dead peer) reuse reqID, so the FSM
// applies the command once. A meta write also waits until this node's
// meta replica has applied it.
func (c *Cluster) ApplyRequest(ctx context.Context, n uint32, reqID schema.ID, p schema.Payload) (*schema.Result, error) {
	if need, have := schema.Level(p), c.CommandLevel(); need > have {
		return nil, fmt.Errorf("%s on shard %d needs command level %d; the cluster's nodes apply %d: %w",
			p.Op(), n, need, have, schema.ErrUnavailable)
	}
	cmd := schema.Command{ReqID: reqID, Time: time.Now().UnixNano(), Payload: p}
	var res *schema.Result
	err := c.route(ctx, n, func(ctx context.Context, local *raftstore.Shard, addr string) error {
		var err error
		if local != nil {
			res, err = local.Apply(ctx, cmd)
			if errors.Is(err, raftstore.ErrNotLeader) {
				id, addr := local.Leader()
				return &notLeaderError{id: id, addr: addr}
			}
			return err
		}
		res, err = c.rpc.apply(ctx, addr, n, cmd)
		return err
	})
	if res != nil && res.Code != schema.CodeOK {
		return res, res.Err()
	}
	if err != nil {
		return res, fmt.Errorf("%s on shard %d: %w", p.Op(), n, err)
	}
	if n == 0 {
		if m := c.meta(); m != nil {
			wctx, cancel := context.WithTimeout(ctx, metaApplyWait)
			if werr := m.WaitApplied(wctx, res.Index); werr != nil {
				c.log.Warn("meta write committed but not applied here yet", "err", werr)
			}
			cancel()
		}
	}
	return res, nil
}

// Query runs a named read of shard n on its leader, once the leader has
// applied at least minIndex (the caller's own last write or read), so a
// session reads its own writes after any leader change. A read of a
// blob's contents (raftstore.Query.Immutable) is served by this node's
// replica when it holds the blob, whatever its role: nothing it could
// read there differs from the leader's, and the message body stays on
// this node instead of crossing the cluster port.
func (c *Cluster) Query(ctx context.Context, n uint32, q raftstore.Query, minIndex uint64) (*raftstore.QueryResult, error) {
	if q.Immutable() {
		if s := c.replica(n); s != nil {
			if res, held, err := s.QueryHeld(q); err == nil && held {
				c.blobReads[0].Add(1)
				return res, nil
			}
		}
		c.blobReads[1].Add(1)
	}
	var res *raftstore.QueryResult
	err := c.route(ctx, n, func(ctx context.Context, local *raftstore.Shard, addr string) error {
		var err error
		if local != nil {
			res, err = queryLocal(ctx, local, q, minIndex)
			return err
		}
		res, err = c.rpc.query(ctx, addr, n, q, minIndex)
		return err
	})
	if res != nil && res.Code != schema.CodeOK {
		return res, res.Err()
	}
	if err != nil {
		return res, fmt.Errorf("read shard %d: %w", n, err)
	}
	return res, nil
}

// QueryCopies runs q on each replica of shard n, this node's first, and
// hands fn every answer with that replica's node, until fn returns false.
// Each answer is the bytes that replica's own disk handed back: a store
// whose copy of a message or record does not open under its user's key
// looks for one that does this way. An immutable query
// (raftstore.Query.Immutable) is answered by the replicas that hold what
// it names; any other by each replica once it has applied minIndex
// (waiting up to readWait), so that every copy is at least as new as
// the one read at minIndex. Replicas that cannot answer are passed over;
// the error is the last such failure when no replica answered.
func (c *Cluster) QueryCopies(ctx context.Context, n uint32, q raftstore.Query, minIndex uint64, fn func(node string, res *raftstore.QueryResult) bool) error {
	nodes := []string{c.cfg.NodeID}
	if v := c.currentView(); v != nil {
		for _, id := range v.placements[n].Replicas {
			if id != c.cfg.NodeID {
				nodes = append(nodes, id)
			}
		}
	}
	var last error
	answered := false
	for _, id := range nodes {
		var res *raftstore.QueryResult
		var err error
		if id == c.cfg.NodeID {
			s := c.replica(n)
			if s == nil {
				continue
			}
			var held bool
			if res, held, err = queryCopy(ctx, s, q, minIndex); err == nil && !held {
				continue
			}
		} else {
			qctx, cancel := context.WithTimeout(ctx, c.cfg.RouteTimeout)
			res, err = c.rpc.queryHeld(qctx, c.addressOf(id, ""), n, q, minIndex)
			cancel()
			if errors.Is(err, errNotHeld) {
				continue
			}
		}
		if err == nil && res.Code != schema.CodeOK {
			err = res.Err()
		}
		if err != nil {
			last = fmt.Errorf("copy of shard %d on %s: %w", n, id, err)
			continue
		}
		answered = true
		if !fn(id, res) {
			return nil
		}
	}
	if !answered && last != nil {
		return last
	}
	return ctx.Err()
}

// queryCopy answers q from replica s whatever its role: an immutable
// query when s holds what it names (held), any other once s has applied
// minIndex (see QueryCopies).
func queryCopy(ctx context.Context, s *raftstore.Shard, q raftstore.Query, minIndex uint64) (res *raftstore.QueryResult, held bool, err error) {
	if q.Immutable() {
		return s.QueryHeld(q)
	}
	wctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	if err := s.WaitApplied(wctx, minIndex); err != nil {
		return nil, false, err
	}
	res, err = s.Query(q)
	if res != nil && res.Code != schema.CodeOK {
		// A data-model answer (the mailbox deleted since) travels in
		// the result, as a held answer does.
		err = nil
	}
	return res, err == nil, err
}

// BlobReads counts the reads of a message's contents (header, body,
// search record) that this node served from its own replica and those
// it sent to the shard's leader, for metrics. On a node that keeps a
// replica of the users' shards, a share sent to the leader that stays
// high means the replica lags behind.
func (c *Cluster) BlobReads() (replica, leader uint64) {
	return c.blobReads[0].Load(), c.blobReads[1].Load()
}

// queryLocal serves a read on this node's replica, which must lead and
// must have applied minIndex.
func queryLocal(ctx context.Context, s *raftstore.Shard, q raftstore.Query, minIndex uint64) (*raftstore.QueryResult, error) {
	if !s.IsLeader() {
		id, addr := s.Leader()
		return nil, &notLeaderError{id: id, addr: addr}
	}
	wctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	if err := s.ReadyToRead(wctx); err != nil {
		if errors.Is(err, raftstore.ErrNotLeader) {
			id, addr := s.Leader()
			return nil, &notLeaderError{id: id, addr: addr}
		}
		return nil, err
	}
	if err := s.WaitApplied(wctx, minIndex); err != nil {
		return nil, err
	}
	return s.Query(q)
}

// CatchUpMeta brings this node's meta replica up to what the meta leader has
// applied, for a lookup that must see a record written a moment ago
// through another node. It finds the leader as any operation does
// (through an election, if one is under way).
func (c *Cluster) CatchUpMeta(ctx context.Context) error {
	if err := c.catchUp(ctx, 0); err != nil {
		return fmt.Errorf("catch up with the meta leader: %w", err)
	}
	return nil
}

// catchUp waits until this node's replica of shard n has applied
// everything its leader had applied when asked, so a read of the local
// state sees every write acknowledged before the call.
func (c *Cluster) catchUp(ctx context.Context, n uint32) error {
	s := c.replica(n)
	if s == nil {
		return fmt.Errorf("no replica of shard %d here: %w", n, schema.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RouteTimeout)
	defer cancel()
	var index uint64
	err := c.route(ctx, n, func(ctx context.Context, local *raftstore.Shard, addr string) error {
		if local != nil {
			if err := local.ReadyToRead(ctx); err != nil {
				if errors.Is(err, raftstore.ErrNotLeader) {
					id, addr := local.Leader()
					return &notLeaderError{id: id, addr: addr}
				}
				return err
			}
			index = local.PublishedIndex()
			return nil
		}
		var err error
		index, err = c.rpc.readIndex(ctx, addr, n)
		return err
	})
	if err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, readWait)
	defer wcancel()
	return s.WaitApplied(wctx, index)
}

// probeLeader asks the nodes that keep shard n who leads it, when this
// node has no replica of its own to know from.
func (c *Cluster) probeLeader(n uint32) {
	if c.replica(n) != nil {
		return
	}
	v := c.currentView()
	if v == nil {
		return
	}
	p, ok := v.placements[n]
	if !ok {
		return
	}
	for _, id := range p.Replicas {
		if st, ok := c.health.shardStatus(id, n); ok && st.LeaderID != "" {
			c.learnLeader(n, st.LeaderID, st.LeaderAddress, st.Term)
			return
		}
	}
}
