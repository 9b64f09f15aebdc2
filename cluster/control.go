package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	// changeTimeout bounds one membership change or leadership transfer.
	changeTimeout = 10 * time.Second
	// catchUpLag is how far behind the leader's commit index a non-voter
	// may be and still be promoted to voter.
	catchUpLag = 64
	// reportFresh is how recent a peer's report must be to act on it.
	reportFresh = 5 * time.Second
	// transferEvery limits leadership moves to a shard's home region.
	transferEvery = 10 * time.Second
)

// controlLoop keeps this node's replicas, the groups it leads and (on the
// meta leader) the placement in line with the cluster's records.
func (c *Cluster) controlLoop() {
	defer c.wg.Done()
	t := time.NewTicker(controlEvery)
	defer t.Stop()
	transfers := map[uint32]time.Time{}
	repairs := map[uint32]*replicaRepair{}
	for _, n := range c.corruptAtStart {
		// Found corrupt as the node started: rebuilt before it opens.
		repairs[n] = &replicaRepair{next: time.Now(), wait: repairFirst, closed: true, corrupt: true}
	}
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.kickCh:
		}
		c.repairReplicas(repairs, time.Now())
		c.publishRepairs(repairs)
		c.controlOnce(transfers, repairs)
	}
}

const (
	// repairFirst is how long a replica whose state file failed a write
	// waits before it is reopened the first time; every failed attempt
	// doubles the wait, up to repairMax, so a disk that stays full is
	// not hammered.
	repairFirst = time.Second
	repairMax   = time.Minute
	// repairForget is how long a reopened replica must stay sound before
	// its next failure starts again from repairFirst.
	repairForget = 5 * time.Minute
	// rebuildTimeout bounds one copy of another replica's state into a
	// replica whose state file is corrupt (a large shard's copy takes
	// its time over a slow link).
	rebuildTimeout = time.Hour
)

// replicaRepair is the state of a replica being reopened after a failed
// write to its state file.
type replicaRepair struct {
	next   time.Time     // the next attempt, not before
	wait   time.Duration // the wait after the next attempt
	closed bool          // closed, and its reopen failed
	opened time.Time     // when it was last reopened
	// corrupt: the state file is damaged (raftstore.ErrCorrupt), which
	// a replay cannot mend; the replica is reopened only once its state
	// has been rebuilt from another replica's copy.
	corrupt bool
	// rebuild, while a rebuild runs beside the control loop, receives
	// its outcome.
	rebuild chan error
}

// repairReplicas closes and reopens the replicas whose state file failed
// a write (disk full, I/O error; see raftstore.Shard.Broken): Raft counts
// the entries of that write applied, so only a reopen replays them from
// the log. Without it the replica (the meta shard's included) would
// refuse every write until the node restarted, even once the disk had
// room again. A mail replica that read a damaged entry of its Raft log
// (raftstore.Shard.LogDamaged) is closed and reopened the same way: the
// open finds the damage, and openReplica sets the log aside.
func (c *Cluster) repairReplicas(repairs map[uint32]*replicaRepair, now time.Time) {
	for _, s := range c.Shards() {
		n := s.ID()
		err := s.Broken()
		if err == nil && n != 0 {
			// The meta replica keeps running on it: without it the node
			// serves nothing, and its next start sets the log aside.
			err = s.LogDamaged()
		}
		r := repairs[n]
		if err == nil {
			if r != nil && now.Sub(r.opened) > repairForget {
				delete(repairs, n)
			}
			continue
		}
		if r == nil {
			r = &replicaRepair{next: now.Add(repairFirst), wait: repairFirst}
			repairs[n] = r
			switch {
			case errors.Is(err, raftstore.ErrCorrupt):
				// No disk to give time to: closed at once, so that a
				// leading replica hands its shard over now.
				r.next = now
				c.log.Error("replica's state file is corrupt; its state will be rebuilt from another replica", "shard", n, "err", err)
			case errors.Is(err, raftstore.ErrLogDamaged):
				// Reopened at once: opening finds the damage and sets the
				// log aside (openReplica), and the replica rejoins.
				r.next = now
				c.log.Error("replica's raft log is damaged; it is closed to be set aside", "shard", n, "err", err)
			default:
				c.log.Error("replica stopped applying; it will be reopened to replay its log", "shard", n, "err", err)
			}
		}
		r.corrupt = r.corrupt || errors.Is(err, raftstore.ErrCorrupt)
		if now.Before(r.next) {
			continue
		}
		// Its close reports the failed write again; nothing new.
		if err := c.closeReplica(n, false); err != nil {
			c.log.Info("replica closed for repair", "shard", n, "repair", r.state(), "err", err)
		}
		r.closed = true
	}
	for n, r := range repairs {
		if r.rebuild != nil {
			select {
			case err := <-r.rebuild:
				r.rebuild = nil
				if err != nil {
					c.log.Error("rebuild a corrupt replica's state", "shard", n, "err", err, "retry_in", max(r.next.Sub(now), 0))
					continue
				}
				r.corrupt = false
				r.next = now
			default:
				continue // still copying
			}
		}
		if !r.closed || now.Before(r.next) || c.replica(n) != nil {
			continue
		}
		r.next, r.wait = now.Add(r.wait), min(2*r.wait, repairMax)
		if r.corrupt {
			r.rebuild = make(chan error, 1)
			c.wg.Add(1)
			go func(done chan<- error) {
				defer c.wg.Done()
				done <- c.rebuildReplica(n)
			}(r.rebuild)
			continue
		}
		if !raftstore.HasRaftState(c.cfg.DataDir, n) {
			// Its log was set aside as damaged. A mail replica is opened
			// by manageReplicas once its group has made this node a
			// non-voter; the meta replica only as the node starts.
			if n == 0 {
				c.log.Error("the meta replica's raft log was set aside as damaged: restart this node, which rejoins it to the meta group as a new member")
				continue
			}
			delete(repairs, n)
			continue
		}
		if _, err := c.openReplica(n, false); err != nil {
			c.log.Error("reopen a replica", "shard", n, "err", err, "retry_in", r.next.Sub(now))
			continue
		}
		r.closed, r.opened = false, now
		c.log.Warn("replica reopened to replay its log", "shard", n)
	}
}

// rebuildReplica replaces the corrupt state file of this node's closed
// replica of shard n with a copy of another replica's state: the
// leader's first, then each other node the shard is placed on.
func (c *Cluster) rebuildReplica(n uint32) error {
	ctx, cancel := context.WithTimeout(context.Background(), rebuildTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var sources []stateSource
	for _, id := range c.rebuildSources(n) {
		sources = append(sources, stateSource{id: id, addr: c.addressOf(id, "")})
	}
	return c.copyState(ctx, n, sources)
}

// stateSource is a node to copy a replica's state from, and its cluster
// address.
type stateSource struct{ id, addr string }

// copyState replaces the state file of this node's closed replica of
// shard n with a copy of the first source's replica that gives a sound
// one.
func (c *Cluster) copyState(ctx context.Context, n uint32, sources []stateSource) error {
	dir := raftstore.ReplicaDir(c.cfg.DataDir, n)
	var errs []error
	for _, src := range sources {
		info, err := raftstore.RebuildState(ctx, dir, func(ctx context.Context, w io.Writer) (raftstore.StateInfo, error) {
			return c.rpc.state(ctx, src.addr, n, w)
		})
		if err == nil {
			c.log.Warn("corrupt replica's state rebuilt from another replica's copy; the damaged file is kept as state.db.corrupt",
				"shard", n, "from", src.id, "index", info.Index, "bytes", info.Size, "dir", dir)
			return nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", src.id, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("shard %d: no other replica to copy the state from", n)
	}
	return errors.Join(errs...)
}

// rebuildSources returns the nodes to copy shard n's state from, the
// leader first: any other node that keeps a replica of it.
func (c *Cluster) rebuildSources(n uint32) []string {
	var out []string
	add := func(id string) {
		if id != "" && id != c.cfg.NodeID && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	id, _ := c.leaderOf(n)
	add(id)
	v := c.currentView()
	if v == nil {
		return out
	}
	if n == 0 {
		for _, rec := range v.activeNodes() {
			add(rec.ID)
		}
		return out
	}
	for _, id := range v.placements[n].Replicas {
		add(id)
	}
	return out
}

// state is what a node reports about a replica closed for a repair:
// "rebuilding" while its corrupt state waits for or takes a copy of
// another replica's, "reopening" while it waits to be opened again.
func (r *replicaRepair) state() string {
	if r.corrupt {
		return "rebuilding"
	}
	return "reopening"
}

// publishRepairs records the replicas closed for a repair, for the
// node's report to the others and its status.
func (c *Cluster) publishRepairs(repairs map[uint32]*replicaRepair) {
	closed := map[uint32]string{}
	for n, r := range repairs {
		if r.closed {
			closed[n] = r.state()
		}
	}
	c.mu.Lock()
	c.repairing = closed
	c.mu.Unlock()
}

func (c *Cluster) controlOnce(transfers map[uint32]time.Time, repairs map[uint32]*replicaRepair) {
	if err := c.refreshView(); err != nil {
		c.log.Warn("read cluster records", "err", err)
		return
	}
	v := c.currentView()
	c.ensureSelfRecord(v)
	c.manageReplicas(v, repairs)
	for _, s := range c.Shards() {
		if s.IsLeader() {
			c.reconcileGroup(s, v, transfers)
		}
	}
	if m := c.meta(); m != nil && m.IsLeader() {
		c.place(v)
		c.expireTokens()
	}
}

// ensureSelfRecord keeps this node's record current (address, version,
// region, command level) after a restart with a new configuration or
// software.
func (c *Cluster) ensureSelfRecord(v *metaView) {
	rec, ok := v.nodes[c.cfg.NodeID]
	if !ok || rec.Removed {
		return // written by the join (or the new cluster's set-up)
	}
	if rec.Address == c.cfg.Advertise && rec.Version == c.cfg.Version && rec.Region == c.cfg.Region &&
		rec.Commands == c.cfg.CommandLevel {
		return
	}
	next := rec
	next.Address, next.Version, next.Region = c.cfg.Advertise, c.cfg.Version, c.cfg.Region
	next.Commands = c.cfg.CommandLevel
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.putNode(ctx, &rec, next); err != nil && !errors.Is(err, schema.ErrConflict) {
		c.log.Debug("update this node's record", "err", err)
	}
}

// manageReplicas opens the mail replicas placed on this node and deletes
// those placed elsewhere once their group no longer counts this node.
// Replicas under repair are left to repairReplicas and its back-off.
func (c *Cluster) manageReplicas(v *metaView, repairs map[uint32]*replicaRepair) {
	if rec, ok := v.nodes[c.cfg.NodeID]; ok && rec.Removed {
		// Removed: the others refuse this node, so its replicas can serve
		// nobody. Close them; the files stay for the operator to delete.
		for _, s := range c.Shards() {
			if s.ID() != 0 {
				if err := c.closeReplica(s.ID(), false); err != nil {
					c.log.Warn("close a replica of a removed node", "shard", s.ID(), "err", err)
				}
				c.log.Error("this node was removed from the cluster: it serves nothing; its data directory may be deleted", "shard", s.ID())
			}
		}
		return
	}
	for n := uint32(1); int(n) <= c.mailShardCount(); n++ {
		p, placed := v.placements[n]
		want := placed && p.has(c.cfg.NodeID)
		have := c.replica(n) != nil
		if r := repairs[n]; r != nil && r.closed {
			continue
		}
		switch {
		case want && !have:
			if c.withhold(n) {
				continue
			}
			if _, err := c.openReplica(n, false); err != nil {
				c.log.Error("open a replica placed here", "shard", n, "err", err)
			}
		case !want && have && placed && c.leftGroup(n):
			if err := c.closeReplica(n, true); err != nil {
				c.log.Error("delete a replica placed elsewhere", "shard", n, "err", err)
			}
		}
	}
}

// withhold reports whether this node must not open its replica of
// shard n yet. A replica without Raft state on disk starts as a new,
// empty member; if its group still counts this node as a voter (its
// directory was deleted or lost while the node was away), such a replica
// would vote for any candidate, and with one other vote could elect a
// leader that lacks acknowledged writes. So it opens only once the
// leader's configuration, in a fresh report, has this node as a
// non-voter or not at all; until then the node reports the shard as
// withheld, which makes the leader demote it (reconcileGroup). Once open,
// it catches up and is promoted as a new replica is.
func (c *Cluster) withhold(n uint32) bool {
	if raftstore.HasRaftState(c.cfg.DataDir, n) {
		c.setWithheld(n, false)
		return false
	}
	voter, known := c.listedAsVoter(n)
	if !known {
		return true // no fresh word from a leader yet: ask again next round
	}
	if voter && !c.isWithheld(n) {
		c.log.Error("this node's replica of a shard has no Raft state while its group counts the node as a voter (was its directory deleted?); it is opened once the group's leader has made it a non-voter", "shard", n)
	}
	c.setWithheld(n, voter)
	return voter
}

func (c *Cluster) isWithheld(n uint32) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.withheld[n]
}

func (c *Cluster) setWithheld(n uint32, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		if c.withheld == nil {
			c.withheld = map[uint32]bool{}
		}
		c.withheld[n] = true
	} else {
		delete(c.withheld, n)
	}
}

// listedAsVoter reports whether the configuration of shard n's leader,
// as the newest fresh report from a node leading it gives it, has this
// node as a voter; known is false without such a report.
func (c *Cluster) listedAsVoter(n uint32) (voter, known bool) {
	v := c.currentView()
	if v == nil {
		return false, false
	}
	var reports []PingResponse
	for id := range v.nodes {
		if p, ok := c.health.peer(id); ok && time.Since(p.lastSeen) <= reportFresh {
			reports = append(reports, p.report)
		}
	}
	return leaderCountsVoter(reports, n, c.cfg.NodeID)
}

// leaderCountsVoter returns whether the leader of shard n among reports,
// the one of the highest term, counts node id as a voter; known is false
// when none of them leads the shard.
func leaderCountsVoter(reports []PingResponse, n uint32, id string) (voter, known bool) {
	var leader raftstore.Status
	for _, r := range reports {
		for _, st := range r.Shards {
			if st.Shard == n && st.Leads() && st.Term >= leader.Term {
				leader, known = st, true
			}
		}
	}
	for _, srv := range leader.Servers {
		if srv.ID == id {
			voter = srv.Voter
		}
	}
	return voter, known
}

// withheldBy reports whether node id, in a fresh report, keeps its
// replica of shard n closed for want of Raft state (see withhold).
func (c *Cluster) withheldBy(id string, n uint32) bool {
	p, ok := c.health.peer(id)
	if !ok || time.Since(p.lastSeen) > reportFresh {
		return false
	}
	return slices.Contains(p.report.Withheld, n)
}

// leftGroup reports whether the leader of shard n has confirmed, in a
// fresh report, that this node is no longer a member of the group.
func (c *Cluster) leftGroup(n uint32) bool {
	s := c.replica(n)
	if s == nil || s.IsLeader() {
		return false
	}
	id, _ := s.Leader()
	if id == "" {
		id, _ = c.leaderOf(n)
	}
	if id == "" || id == c.cfg.NodeID {
		return false
	}
	p, ok := c.health.peer(id)
	if !ok || time.Since(p.lastSeen) > reportFresh {
		return false
	}
	for _, st := range p.report.Shards {
		if st.Shard != n || st.State != "leader" {
			continue
		}
		for _, srv := range st.Servers {
			if srv.ID == c.cfg.NodeID {
				return false
			}
		}
		return true
	}
	return false
}

// desiredMembers returns who should be in shard n's group and whether as
// a voter.
func (c *Cluster) desiredMembers(n uint32, v *metaView) map[string]bool {
	out := map[string]bool{}
	if n == 0 {
		nodes := v.activeNodes()
		// Voters: up to MaxMetaVoters, spread over regions, oldest first,
		// preferring nodes that answer.
		var voters []NodeRecord
		regions := map[string]int{}
		pick := func(pass int) {
			for _, rec := range nodes {
				if len(voters) == MaxMetaVoters {
					return
				}
				if out[rec.ID] {
					continue
				}
				dead := c.dead(rec.ID)
				if (pass == 0 && (dead || regions[rec.Region] > 0)) || (pass == 1 && dead) {
					continue
				}
				out[rec.ID] = true
				regions[rec.Region]++
				voters = append(voters, rec)
			}
		}
		pick(0)
		pick(1)
		pick(2)
		for _, rec := range nodes {
			if !out[rec.ID] {
				out[rec.ID] = false
			}
		}
		return out
	}
	for _, id := range v.placements[n].Replicas {
		out[id] = true
	}
	return out
}

// reconcileGroup brings the group this node leads in line with its
// desired members: new members join as non-voters and are promoted once
// caught up; members that should go leave only after every desired voter
// votes; a leader that should not be one hands over first. A mail shard's
// leadership moves to its home region when a caught-up voter is there.
func (c *Cluster) reconcileGroup(s *raftstore.Shard, v *metaView, transfers map[uint32]time.Time) {
	n := s.ID()
	if n != 0 {
		if _, placed := v.placements[n]; !placed {
			return
		}
	}
	desired := c.desiredMembers(n, v)
	if len(desired) == 0 {
		return
	}
	servers, err := s.Servers()
	if err != nil {
		return
	}
	current := map[string]raftstore.Server{}
	for _, srv := range servers {
		current[srv.ID] = srv
	}
	ctx, cancel := context.WithTimeout(context.Background(), changeTimeout)
	defer cancel()
	status := s.Status()
	changed := false
	for id, voter := range desired {
		rec, ok := v.nodes[id]
		if !ok || rec.Removed {
			continue
		}
		cur, in := current[id]
		switch {
		case !in:
			err = s.AddNonvoter(ctx, id, rec.Address)
			changed = true
		case cur.Address != rec.Address:
			if cur.Voter {
				err = s.AddVoter(ctx, id, rec.Address)
			} else {
				err = s.AddNonvoter(ctx, id, rec.Address)
			}
			changed = true
		case cur.Voter && id != c.cfg.NodeID && c.withheldBy(id, n):
			// The node lost its replica's Raft state; as a voter, the
			// new empty replica would vote. It rejoins as a non-voter.
			err = s.DemoteVoter(ctx, id)
			changed, voter = true, false
		case voter && !cur.Voter && c.caughtUp(id, n, status.CommitIndex):
			err = s.AddVoter(ctx, id, rec.Address)
			changed = true
		case !voter && cur.Voter && id != c.cfg.NodeID:
			err = s.DemoteVoter(ctx, id)
			changed = true
		default:
			continue
		}
		if err != nil {
			c.log.Warn("change group membership", "shard", n, "member", id, "err", err)
			return
		}
		c.log.Info("group membership changed", "shard", n, "member", id, "voter", voter)
	}
	if changed {
		return // one step at a time: the next round sees the new configuration
	}
	for id, voter := range desired {
		if cur, in := current[id]; voter && (!in || !cur.Voter) {
			if v.nodes[id].Removed {
				continue
			}
			return // a desired voter is not voting yet: keep everyone
		}
	}
	for id := range current {
		if _, keep := desired[id]; keep {
			continue
		}
		if id == c.cfg.NodeID {
			if err := s.TransferLeadership(ctx, "", ""); err != nil {
				c.log.Warn("hand over a group this node leaves", "shard", n, "err", err)
			}
			return
		}
		if err := s.RemoveServer(ctx, id); err != nil {
			c.log.Warn("remove a group member", "shard", n, "member", id, "err", err)
			return
		}
		c.log.Info("group member removed", "shard", n, "member", id)
		return
	}
	if n != 0 {
		c.moveLeaderHome(ctx, s, v, current, status, transfers)
	}
}

// caughtUp reports whether a node's replica of shard n has applied close
// to commit, by its latest fresh report. The report is measured against
// this node's commit index when the ping went out, if it led n then: a
// report is up to a ping interval old, and a shard under steady load
// commits more than catchUpLag entries in that time, so comparing with
// the commit index of now would keep a replica that keeps up from ever
// counting as caught up.
func (c *Cluster) caughtUp(id string, n uint32, commit uint64) bool {
	p, ok := c.health.peer(id)
	if !ok || time.Since(p.lastSeen) > reportFresh {
		return false
	}
	if then, ok := p.commitsAtPing[n]; ok && then < commit {
		commit = then
	}
	for _, st := range p.report.Shards {
		if st.Shard == n {
			return st.AppliedIndex+catchUpLag >= commit
		}
	}
	return false
}

// leaderCommits returns the commit index of each group this node leads.
func (c *Cluster) leaderCommits() map[uint32]uint64 {
	out := map[uint32]uint64{}
	for _, s := range c.Shards() {
		if s.IsLeader() {
			out[s.ID()] = s.CommitIndex()
		}
	}
	return out
}

// moveLeaderHome hands a mail shard's leadership to a caught-up voter in
// its home region when this node is elsewhere.
func (c *Cluster) moveLeaderHome(ctx context.Context, s *raftstore.Shard, v *metaView, current map[string]raftstore.Server,
	status raftstore.Status, transfers map[uint32]time.Time) {
	n := s.ID()
	home := v.placements[n].Home
	if home == "" || home == c.cfg.Region || time.Since(transfers[n]) < transferEvery {
		return
	}
	ids := make([]string, 0, len(current))
	for id := range current {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	elected := time.Now().Add(-s.LedFor())
	for _, id := range ids {
		srv := current[id]
		rec := v.nodes[id]
		if !srv.Voter || rec.Region != home || rec.Removed || !c.caughtUp(id, n, status.CommitIndex) {
			continue
		}
		p, ok := c.health.peer(id)
		if !ok || p.report.Leaving {
			continue // stopping: it would only hand the leadership back
		}
		if !p.lastSeen.After(elected) || !c.health.upNow(id) {
			// Not heard from since this replica was elected (the home node
			// that led until it died or stopped, most often), or dead or
			// stopped a moment ago: a transfer would only hold the writes.
			continue
		}
		transfers[n] = time.Now()
		if err := s.TransferLeadership(ctx, id, srv.Address); err != nil {
			c.log.Warn("move leadership to the home region", "shard", n, "to", id, "err", err)
			return
		}
		c.log.Info("leadership moved to the home region", "shard", n, "to", id, "region", home)
		return
	}
}

// dead reports whether a node has been unreachable for DeadAfter, as far
// as this node can tell (a node is never judged before this one has
// pinged for that long).
func (c *Cluster) dead(id string) bool {
	if id == c.cfg.NodeID {
		return false
	}
	return c.health.unreachableFor(id) > c.cfg.DeadAfter
}
