package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
)

const (
	pingEvery   = time.Second
	pingTimeout = 2 * time.Second
	// slowPing is how long a ping may go unanswered (or twice the node's
	// last round trip, if more) before the node no longer counts as up
	// now (upNow): a running node answers within a round trip even under
	// load, one that is stopped or cut off answers nothing.
	slowPing = 300 * time.Millisecond
)

// health pings every other member once a second. What it learns drives
// placement (a node unreachable for DeadAfter is replaced), leader hints
// for shards this node keeps no replica of, catch-up checks before a
// replica is promoted, and cluster status.
type health struct {
	c       *Cluster
	started time.Time
	// ping asks the node at addr for its report: the cluster port's RPC
	// (tests put another in).
	ping func(ctx context.Context, addr string) (PingResponse, error)
	// pings are the pings under way; run waits for them as it ends.
	pings sync.WaitGroup

	mu      sync.Mutex
	peers   map[string]*peerHealth
	pinging map[string]time.Time // nodes with a ping under way, and since when
}

type peerHealth struct {
	lastSeen time.Time
	lastErr  string
	report   PingResponse
	// commitsAtPing are the commit indexes of the groups this node led
	// when it sent the ping the report answers: the applied indexes in
	// the report are at least that recent, so a replica that keeps up
	// under load is not judged by entries committed after it answered.
	commitsAtPing map[uint32]uint64
	// clock is what its last answer said of its clock (clockOffset).
	clock clockOffset
	// clockWarned is set while a warning that its clock differs stands.
	clockWarned bool
}

// clockOffset is how far a node's clock is ahead of this node's
// (negative: behind), read from the time in its answer to a ping against
// the middle of the ping's round trip, so to within half of it. Raft,
// read leases and lease commands do not depend on it (they time on the
// monotonic clock, or on one leader's clock); what does is what carries a
// node's wall clock: the INTERNALDATE of mail it takes, DKIM signatures'
// times, TOTP codes checked there.
type clockOffset struct {
	Offset time.Duration
	RTT    time.Duration
	Known  bool
}

// clockWarnAbove is the clock offset past which a node logs a warning,
// beyond the measurement's own uncertainty; the warning stands until the
// offset is under half of it.
const clockWarnAbove = time.Second

// measureClock reads a peer's clock offset from its report's time and
// the ping's send and receive times.
func measureClock(reported, sent, received time.Time) clockOffset {
	if reported.IsZero() {
		return clockOffset{} // software that reports no time
	}
	rtt := received.Sub(sent)
	// reported has no monotonic reading, so this compares wall clocks.
	return clockOffset{Offset: reported.Sub(sent.Add(rtt / 2)), RTT: rtt, Known: true}
}

func newHealth(c *Cluster) *health {
	h := &health{c: c, started: time.Now(), peers: map[string]*peerHealth{}, pinging: map[string]time.Time{}}
	h.ping = func(ctx context.Context, addr string) (PingResponse, error) { return c.rpc.ping(ctx, addr) }
	return h
}

// unreachableFor returns how long a node has not answered, counting from
// this node's start at the earliest.
func (h *health) unreachableFor(id string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	since := h.started
	if p := h.peers[id]; p != nil && p.lastSeen.After(since) {
		since = p.lastSeen
	}
	return time.Since(since)
}

func (h *health) run() {
	defer h.c.wg.Done()
	defer h.pings.Wait()
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		h.round()
		select {
		case <-h.c.stop:
			return
		case <-t.C:
		}
	}
}

// round pings every member that has no ping under way, in parallel, and
// does not wait for the answers: a member that answers nothing (a
// stalled VM, a host whose packets are dropped) holds its own ping for
// pingTimeout, not the next round's pings of the others, which would
// otherwise be a second apart no more but two.
func (h *health) round() {
	v := h.c.currentView()
	if v == nil {
		return
	}
	// Read once for the round, before any ping goes out; every peer's
	// record keeps the same map, which nothing changes afterwards.
	commits := h.c.leaderCommits()
	for _, n := range v.activeNodes() {
		if n.ID == h.c.cfg.NodeID || !h.startPing(n.ID) {
			continue
		}
		h.pings.Add(1)
		go func() {
			defer h.pings.Done()
			ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
			defer cancel()
			sent := time.Now()
			resp, err := h.ping(ctx, n.Address)
			clock := measureClock(resp.Time, sent, time.Now())
			h.record(n.ID, resp, err, commits, clock)
			h.mu.Lock()
			delete(h.pinging, n.ID)
			h.mu.Unlock()
		}()
	}
}

// startPing marks a ping of node id under way, unless one already is.
func (h *health) startPing(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, busy := h.pinging[id]; busy {
		return false
	}
	h.pinging[id] = time.Now()
	return true
}

func (h *health) record(id string, resp PingResponse, err error, commits map[uint32]uint64, clock clockOffset) {
	h.mu.Lock()
	p := h.peers[id]
	if p == nil {
		p = &peerHealth{}
		h.peers[id] = p
	}
	if err != nil {
		p.lastErr = err.Error()
		h.mu.Unlock()
		return
	}
	p.lastSeen, p.lastErr, p.report, p.commitsAtPing, p.clock = time.Now(), "", resp, commits, clock
	warn, agree := p.judgeClock()
	h.mu.Unlock()
	if warn {
		h.c.log.Warn("another node's clock differs from this node's; keep every node's clock synchronised (NTP)",
			"node", id, "offset", clock.Offset.Round(time.Millisecond), "uncertainty", (clock.RTT / 2).Round(time.Millisecond))
	}
	if agree {
		h.c.log.Info("another node's clock agrees with this node's again", "node", id, "offset", clock.Offset.Round(time.Millisecond))
	}
	for _, st := range resp.Shards {
		if st.Leads() {
			h.c.learnLeader(st.Shard, resp.NodeID, resp.Address, st.Term)
		}
	}
}

// judgeClock updates the standing clock warning from the last offset and
// reports whether it was just raised or just lifted.
func (p *peerHealth) judgeClock() (warn, agree bool) {
	if !p.clock.Known {
		return false, false
	}
	off := p.clock.Offset.Abs()
	switch {
	case !p.clockWarned && off-p.clock.RTT/2 > clockWarnAbove:
		p.clockWarned = true
		return true, false
	case p.clockWarned && off+p.clock.RTT/2 < clockWarnAbove/2:
		p.clockWarned = false
		return false, true
	}
	return false, false
}

// alive reports whether a node answered within d (this node is always
// alive to itself).
func (h *health) alive(id string, d time.Duration) bool {
	if id == h.c.cfg.NodeID {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[id]
	return p != nil && time.Since(p.lastSeen) < d
}

// seenOnce reports whether a node has answered since this node started.
func (h *health) seenOnce(id string) bool {
	if id == h.c.cfg.NodeID {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[id]
	return p != nil && !p.lastSeen.IsZero()
}

// shardStatus returns what a node last reported about its replica of a
// shard.
func (h *health) shardStatus(id string, n uint32) (raftstore.Status, bool) {
	if id == h.c.cfg.NodeID {
		if s := h.c.replica(n); s != nil {
			return s.Status(), true
		}
		return raftstore.Status{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[id]
	if p == nil {
		return raftstore.Status{}, false
	}
	for _, st := range p.report.Shards {
		if st.Shard == n {
			return st, true
		}
	}
	return raftstore.Status{}, false
}

// upNow reports whether node id answered this node's latest ping, less
// than two ping intervals ago, and has no ping unanswered for longer than
// slowPing (or twice its last round trip): whether it runs now, as far as
// pings can tell. A leader asks this before handing a group to the node.
// A report stays fresh enough for other uses (reportFresh) for seconds
// after its node died or stopped, and a transfer to such a node holds
// the group's writes for an election timeout: right after a failover,
// the new leader would hand the group back to the dead home node.
func (h *health) upNow(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[id]
	if p == nil || p.lastErr != "" || time.Since(p.lastSeen) > 2*pingEvery {
		return false
	}
	if since, busy := h.pinging[id]; busy && time.Since(since) > max(slowPing, 2*p.clock.RTT) {
		return false
	}
	return true
}

// peer returns what this node knows of another's health.
func (h *health) peer(id string) (peerHealth, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[id]
	if p == nil {
		return peerHealth{}, false
	}
	return *p, true
}
