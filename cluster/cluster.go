package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/cluster/transport"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// controlEvery is the period of the control loop (replicas, membership,
// leadership, placement); changes also kick it at once.
const controlEvery = 500 * time.Millisecond

const (
	// stagedChunkTTL is how long a chunk of a large message may wait for
	// the Append that commits it.
	stagedChunkTTL = time.Hour
	housekeepEvery = 10 * time.Minute
)

// Cluster is this node's part of the cluster.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	sealer *seal.Sealer
	keys   clusterKeys
	trans  *transport.Transport
	rpc    *rpcClient
	srv    []*http.Server

	mu       sync.RWMutex
	replicas map[uint32]*replica
	// repairing holds the replicas closed for a repair, and which
	// (replicaRepair.state), for the node's report (control loop writes).
	repairing map[uint32]string
	// withheld holds the mail replicas placed here that have no Raft
	// state on disk while their group counts this node as a voter: not
	// opened until the group's leader has made this node a non-voter
	// (control loop writes; see manageReplicas).
	withheld map[uint32]bool
	leaders  map[uint32]leaderHint
	view     *metaView
	watches  map[*subscription]struct{}
	// removedAt is when this node first saw each removed node as removed
	// (zero once it has been cut off).
	removedAt map[string]time.Time

	health *health
	// broadcast carries per-node state to every other node (broadcast.go).
	broadcast *broadcaster
	kickCh    chan struct{}
	// mailShards caches the cluster's mail shard count once the meta
	// replica has it, so that it is known while that replica is closed
	// for a repair.
	mailShards atomic.Int64
	// membersKept is what this node last wrote to its members file
	// (rememberMembers), under membersMu.
	membersMu   sync.Mutex
	membersKept []byte
	// corruptAtStart lists the mail replicas whose state file was found
	// corrupt as the node started, for the control loop to rebuild.
	corruptAtStart []uint32
	// lastRebalance is when placement last moved a replica to spread load
	// (control loop only).
	lastRebalance time.Time

	stop      chan struct{}
	wg        sync.WaitGroup
	closing   chan struct{}
	closeOnce sync.Once
	// aborting: Abort stops the replicas as a crash would (their
	// uncommitted applies dropped).
	aborting atomic.Bool
	// blobReads counts reads of a blob's contents served by this node's
	// replica ([0]) and sent to the shard's leader ([1]); see BlobReads.
	blobReads [2]atomic.Uint64
	closeErr  error
}

// replica is a shard replica this node keeps.
type replica struct {
	shard *raftstore.Shard
	layer *transport.RaftLayer
}

// Open starts this node's part of the cluster. A data directory without a
// cluster identity becomes the first node of a new cluster (a node that
// joins gets its identity from Join first). Open returns once the meta
// replica is open; mail replicas open as placement puts them here.
func Open(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	sealer, err := seal.New()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "cluster"),
		sealer:    sealer,
		keys:      deriveClusterKeys(cfg.MasterKey),
		replicas:  map[uint32]*replica{},
		leaders:   map[uint32]leaderHint{},
		watches:   map[*subscription]struct{}{},
		removedAt: map[string]time.Time{},
		kickCh:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
		closing:   make(chan struct{}),
	}
	c.broadcast = newBroadcaster(c)
	if err := c.open(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	return c, nil
}

func (c *Cluster) open(ctx context.Context) error {
	var bound net.Listener
	if _, port, _ := net.SplitHostPort(c.cfg.Advertise); port == "0" {
		// Bind first, then advertise the port the system chose. The
		// socket is kept for the transport: closed and bound again, the
		// port could be taken by another program in between.
		ln, err := net.Listen("tcp", c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("cluster port %s: %w", c.cfg.Listen, err)
		}
		bound = ln
		c.cfg.Listen = ln.Addr().String()
		c.cfg.Advertise = c.cfg.Listen
	}
	closeBound := func() {
		if bound != nil {
			bound.Close()
		}
	}
	if !HasIdentity(c.cfg.DataDir) {
		if err := c.refuseLostIdentity(); err != nil {
			closeBound()
			return err
		}
		if err := createCluster(c.cfg, schema.NewID().String()); err != nil {
			closeBound()
			return err
		}
		c.log.Info("new cluster created", "region", c.cfg.Region, "address", c.cfg.Advertise)
	}
	id, err := loadIdentity(c.cfg.DataDir)
	if err != nil {
		closeBound()
		return err
	}
	if id.NodeID != c.cfg.NodeID {
		closeBound()
		return fmt.Errorf("cluster certificate is for node %q, but this node is %q", id.NodeID, c.cfg.NodeID)
	}
	c.trans, err = transport.Listen(transport.Config{
		Listen:    c.cfg.Listen,
		Listener:  bound,
		Advertise: c.cfg.Advertise,
		Identity:  id,
		Allow:     c.allowPeer,
		Logger:    c.cfg.Logger,
	})
	if err != nil {
		return err
	}
	c.rpc = newRPCClient(c.trans)
	c.health = newHealth(c)
	c.startServers()

	bootstrapID, err := readOptional(identityPath(c.cfg.DataDir, bootstrapFile))
	if err != nil {
		return err
	}
	bootstrap := bootstrapID != nil
	if !bootstrap && !raftstore.HasRaftState(c.cfg.DataDir, 0) {
		if err := c.awaitMetaNonvoter(ctx); err != nil {
			return err
		}
	}
	meta, err := c.openReplica(0, bootstrap)
	if err != nil && !bootstrap && errors.Is(err, raftstore.ErrLogDamaged) && !raftstore.HasRaftState(c.cfg.DataDir, 0) {
		// Set aside: opened once the meta group has made this node a
		// non-voter, as if shards/0 had been lost.
		if err = c.awaitMetaNonvoter(ctx); err == nil {
			meta, err = c.openReplica(0, false)
		}
	}
	if err != nil && !bootstrap && errors.Is(err, raftstore.ErrCorrupt) {
		meta, err = c.rebuildMetaAtStart(ctx, err)
	}
	if err != nil {
		return err
	}
	if bootstrap {
		if err := meta.WaitForLeader(ctx); err != nil {
			return err
		}
		if err := c.setUpNewCluster(ctx, string(bootstrapID)); err != nil {
			return fmt.Errorf("set up the new cluster: %w", err)
		}
	}
	err = c.refreshView()
	if err != nil && !bootstrap && errors.Is(err, raftstore.ErrCorrupt) {
		// The damage was past what opening the file reads.
		if _, err = c.rebuildMetaAtStart(ctx, err); err == nil {
			err = c.refreshView()
		}
	}
	if err != nil {
		return err
	}
	if level := c.currentView().commandLevel; level > c.cfg.CommandLevel {
		// A downgrade: the logs may hold forms this node cannot apply,
		// and applying around them would diverge the replicas.
		return fmt.Errorf("the cluster's nodes apply command level %d, this node only %d: run the newer version on it", level, c.cfg.CommandLevel)
	}
	// Replicas kept on disk open now; the control loop adds and removes
	// the others. One without its Raft state (its log deleted) is left to
	// the control loop too, which opens it once its group no longer
	// counts this node as a voter (withhold).
	onDisk, err := raftstore.Replicas(c.cfg.DataDir)
	if err != nil {
		return err
	}
	for _, n := range onDisk {
		if n == 0 || c.replica(n) != nil || !raftstore.HasRaftState(c.cfg.DataDir, n) {
			continue
		}
		if _, err := c.openReplica(n, false); err != nil {
			if errors.Is(err, raftstore.ErrLogDamaged) {
				continue // set aside: the control loop withholds it
			}
			if !errors.Is(err, raftstore.ErrCorrupt) {
				return err
			}
			// The other replicas serve; the control loop rebuilds this
			// one from a copy of theirs.
			c.log.Error("replica's state file is corrupt; its state will be rebuilt from another replica", "shard", n, "err", err)
			c.corruptAtStart = append(c.corruptAtStart, n)
		}
	}
	c.wg.Add(4)
	go c.controlLoop()
	go c.health.run()
	go c.housekeep()
	go c.broadcast.run()
	return nil
}

// refuseLostIdentity refuses to make a new cluster of a data directory
// whose meta replica belongs to a cluster of other nodes too: its
// cluster identity (the CA and this node's certificate) was lost, not
// never made. A new cluster would give it a CA the other members refuse,
// and a bootstrap marker with it, while its replicas still count those
// members. A data directory from before clustering, or restored from a
// backup, names only this node, if anything, and becomes a new cluster.
func (c *Cluster) refuseLostIdentity() error {
	servers, err := raftstore.StoredServers(raftstore.ReplicaDir(c.cfg.DataDir, 0))
	if err != nil {
		return nil // no Raft state, or no members known: as before
	}
	var others []string
	for _, srv := range servers {
		if srv.ID != c.cfg.NodeID {
			others = append(others, srv.ID)
		}
	}
	if len(others) == 0 {
		return nil
	}
	return fmt.Errorf("the data directory's shards belong to a cluster with %s, but its cluster identity (%s) is missing: "+
		"put that folder back from a copy of this node, or remove this node from the cluster (mailnode cluster remove %s on another member) "+
		"and start it with a new data directory and node id", strings.Join(others, ", "), filepath.Join(c.cfg.DataDir, identityDir), c.cfg.NodeID)
}

// metaCopyPatience is how long a node whose meta replica's state file is
// damaged at start keeps asking the other members for a copy: after a
// restart of the whole cluster they may come up later than this node.
const metaCopyPatience = 5 * time.Minute

// rebuildMetaAtStart replaces the damaged state file of this node's meta
// replica (found corrupt as the node starts: cause) with a copy of
// another member's, and opens the replica again. The records of the
// other nodes are in that file, so the members come from the group's
// configuration in the replica's Raft log or snapshot; the log, term and
// vote stay as they are, and the replica catches up like any follower.
func (c *Cluster) rebuildMetaAtStart(ctx context.Context, cause error) (*raftstore.Shard, error) {
	c.log.Error("meta replica's state file is corrupt; it will be rebuilt from another node's copy before the node starts", "err", cause)
	if c.replica(0) != nil {
		if err := c.closeReplica(0, false); err != nil {
			c.log.Warn("close the corrupt meta replica", "err", err)
		}
	}
	servers, err := raftstore.StoredServers(raftstore.ReplicaDir(c.cfg.DataDir, 0))
	if err != nil {
		return nil, fmt.Errorf("%w; and its members are unknown: %w", cause, err)
	}
	var sources []stateSource
	for _, srv := range servers {
		if srv.ID != c.cfg.NodeID {
			sources = append(sources, stateSource{id: srv.ID, addr: srv.Address})
		}
	}
	if len(sources) == 0 {
		return nil, fmt.Errorf("%w; and no other member keeps a copy", cause)
	}
	deadline := time.Now().Add(metaCopyPatience)
	for {
		err := c.copyState(ctx, 0, sources)
		if err == nil {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("%w; and no member gave a copy: %w", cause, err)
		}
		c.log.Warn("no copy of the meta state yet; asking again", "err", err)
		select {
		case <-ctx.Done():
		case <-c.stop:
			return nil, fmt.Errorf("%w; stopped before a member gave a copy", cause)
		case <-time.After(2 * time.Second):
		}
	}
	return c.openReplica(0, false)
}

// awaitMetaNonvoter holds the opening of a meta replica that has no Raft
// state on disk until the meta group's leader does not count this node
// as a voter. A joining node has no replica yet and is added as a
// non-voter. But a member whose shards/0 was deleted or lost would open
// an empty replica that the group still counts as a voter, and that
// replica would vote for any candidate: with one more vote it could
// elect a leader that lacks committed records. The node reports the
// shard as withheld meanwhile, which makes the leader demote it
// (reconcileGroup); the replica then catches up and is promoted as a new
// member's is. The other members' addresses come from the members file,
// or else from a mail replica's Raft state, since the meta state that
// names them is gone; a node with neither (a joining one) has nothing to
// ask and opens as before.
func (c *Cluster) awaitMetaNonvoter(ctx context.Context) error {
	onDisk, err := raftstore.Replicas(c.cfg.DataDir)
	if err != nil {
		return err
	}
	addrs, err := c.keptMembers()
	if err != nil {
		return err
	}
	for _, n := range onDisk {
		if len(addrs) > 0 {
			// Enough to find the meta leader. A mail replica's log is
			// read back to its last configuration entry, which may
			// take a while with large mail in it.
			break
		}
		if n == 0 || !raftstore.HasRaftState(c.cfg.DataDir, n) {
			continue
		}
		servers, err := raftstore.StoredServers(raftstore.ReplicaDir(c.cfg.DataDir, n))
		if err != nil {
			c.log.Warn("read a mail replica's members", "shard", n, "err", err)
			continue
		}
		for _, srv := range servers {
			if srv.ID != c.cfg.NodeID && !slices.Contains(addrs, srv.Address) {
				addrs = append(addrs, srv.Address)
			}
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	c.setWithheld(0, true)
	defer c.setWithheld(0, false)
	logged := false
	deadline := time.Now().Add(metaCopyPatience)
	for {
		voter, known := c.metaLeaderCountsVoter(ctx, addrs)
		if known && !voter {
			return nil
		}
		if known && !logged {
			logged = true
			c.log.Error("this node's meta replica has no Raft state while the meta group counts the node as a voter (was shards/0 deleted?); it is opened once the group's leader has made it a non-voter")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("meta replica without Raft state: the meta group's leader did not make this node a non-voter within %v (known leader: %v)", metaCopyPatience, known)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stop:
			return errors.New("meta replica without Raft state: stopped while waiting to be made a non-voter")
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// memberAddr is a member node's id and cluster address, as the members
// file keeps them.
type memberAddr struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// rememberMembers keeps the other active members' cluster addresses in
// the identity folder's members file, rewritten when they change. A node
// that has lost its meta replica's Raft state finds them there to ask
// whether it may open a new one (awaitMetaNonvoter), even when no mail
// replica of it is left to name them.
func (c *Cluster) rememberMembers(v *metaView) {
	var list []memberAddr
	for _, rec := range v.activeNodes() {
		if rec.ID != c.cfg.NodeID && rec.Address != "" {
			list = append(list, memberAddr{ID: rec.ID, Address: rec.Address})
		}
	}
	if len(list) == 0 {
		return // a joining node's first, empty view, or a node alone
	}
	b, err := json.Marshal(list)
	if err != nil {
		return
	}
	c.membersMu.Lock()
	defer c.membersMu.Unlock()
	if bytes.Equal(b, c.membersKept) {
		return
	}
	if err := writeFileSync(identityPath(c.cfg.DataDir, membersFile), b); err != nil {
		c.log.Warn("keep the members' addresses", "err", err)
		return
	}
	c.membersKept = b
}

// keptMembers returns the cluster addresses of the members file (none
// before the node first read its view).
func (c *Cluster) keptMembers() ([]string, error) {
	b, err := readOptional(identityPath(c.cfg.DataDir, membersFile))
	if err != nil || b == nil {
		return nil, err
	}
	var list []memberAddr
	if err := json.Unmarshal(b, &list); err != nil {
		c.log.Warn("members file unreadable; ignored", "err", err)
		return nil, nil
	}
	var out []string
	for _, m := range list {
		if m.ID != c.cfg.NodeID && !slices.Contains(out, m.Address) {
			out = append(out, m.Address)
		}
	}
	return out, nil
}

// metaLeaderCountsVoter asks the nodes at addrs for their reports and
// returns whether the meta group's leader among them counts this node as
// a voter (leaderCountsVoter).
func (c *Cluster) metaLeaderCountsVoter(ctx context.Context, addrs []string) (voter, known bool) {
	var reports []PingResponse
	for _, addr := range addrs {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := c.rpc.ping(pctx, addr)
		cancel()
		if err == nil {
			reports = append(reports, resp)
		}
	}
	return leaderCountsVoter(reports, 0, c.cfg.NodeID)
}

// setUpNewCluster makes this node the first and only member of a new
// cluster in its meta shard: the cluster's id and shard count (kept if the
// meta shard already has them: a data directory from before clustering,
// or a restored backup), this node's CA, this node, and a placement of
// every mail shard on this node. Other nodes a restored meta shard still
// names are forgotten: they belonged to the old cluster. Every write
// may be repeated, so a set-up interrupted by a crash resumes.
func (c *Cluster) setUpNewCluster(ctx context.Context, clusterID string) error {
	keep := func(key string, v []byte) error {
		err := c.swapSetting(ctx, key, nil, v)
		if errors.Is(err, schema.ErrConflict) {
			return nil
		}
		return err
	}
	put := func(key string, v []byte) error {
		_, err := c.Apply(ctx, 0, &schema.PutSetting{Key: key, Value: v})
		return err
	}
	if err := keep(settingClusterID, []byte(clusterID)); err != nil {
		return err
	}
	if err := keep(settingMailShards, mailShardsValue(c.cfg.MailShards)); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(identityPath(c.cfg.DataDir, caFile))
	if err != nil {
		return err
	}
	if caKey, err := readOptional(identityPath(c.cfg.DataDir, pendingCAKey)); err != nil {
		return err
	} else if caKey != nil {
		sealed, err := c.sealCAKey(caKey)
		if err != nil {
			return err
		}
		if err := put(settingCAKey, sealed); err != nil {
			return err
		}
		if err := put(settingCACert, caPEM); err != nil {
			return err
		}
	}
	v, err := readMeta(c.meta())
	if err != nil {
		return err
	}
	for id := range v.nodes {
		if id != c.cfg.NodeID {
			// A node of the old cluster: its certificate is from the old
			// CA, so its id may join the new cluster afresh.
			if err := put(nodeKey(id), nil); err != nil {
				return err
			}
		}
	}
	self := NodeRecord{ID: c.cfg.NodeID, Region: c.cfg.Region, Address: c.cfg.Advertise, Version: c.cfg.Version,
		Commands: c.cfg.CommandLevel, Joined: time.Now().UTC()}
	if err := put(nodeKey(self.ID), encodeJSON(self)); err != nil {
		return err
	}
	n := c.mailShardCount()
	for i := 1; i <= n; i++ {
		p := Placement{Shard: uint32(i), Home: c.cfg.Region, Replicas: []string{c.cfg.NodeID}}
		if err := put(placementKey(p.Shard), encodeJSON(p)); err != nil {
			return err
		}
	}
	// The mail shards start as one-voter groups here (or keep the state a
	// restore installed).
	for i := 1; i <= n; i++ {
		if c.replica(uint32(i)) == nil {
			if _, err := c.openReplica(uint32(i), true); err != nil {
				return err
			}
		}
	}
	for _, name := range []string{pendingCAKey, bootstrapFile} {
		if err := os.Remove(identityPath(c.cfg.DataDir, name)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// mailShardCount returns the number of mail shards: the cluster's
// record, or the configured value until the meta replica has it.
func (c *Cluster) mailShardCount() int {
	if n := c.mailShards.Load(); n > 0 {
		return int(n) // a cluster's count never changes once recorded
	}
	b := c.metaSetting(settingMailShards)
	if len(b) == 4 {
		n := int(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		c.mailShards.Store(int64(n))
		return n
	}
	return c.cfg.MailShards
}

// MailShards returns the number of mail shards.
func (c *Cluster) MailShards() int { return c.mailShardCount() }

// NodeID returns this node's id.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// Region returns this node's region.
func (c *Cluster) Region() string { return c.cfg.Region }

// Addr returns the cluster port's bound address.
func (c *Cluster) Addr() string { return c.trans.Addr().String() }

// Transport returns the cluster port, for tests that inject faults.
func (c *Cluster) Transport() *transport.Transport { return c.trans }

// openReplica opens this node's replica of shard n. bootstrap makes a
// fresh replica the only voter of a new group; otherwise a fresh replica
// waits to be added by the group's leader.
//
// A replica whose Raft log is damaged (raftstore.ErrLogDamaged) no longer
// holds what it acknowledged, so it may not vote with it: when its group
// has other voters, its log is set aside and the error returned, which
// leaves the replica without Raft state, to be opened once its group has
// made this node a non-voter (withhold, awaitMetaNonvoter). A sole voter
// has no one to refill it from and opens with the damage logged.
func (c *Cluster) openReplica(n uint32, bootstrap bool) (*raftstore.Shard, error) {
	s, err := c.openReplicaLog(n, bootstrap, false)
	if err == nil || !errors.Is(err, raftstore.ErrLogDamaged) {
		return s, err
	}
	if !c.othersHold(n) {
		return c.openReplicaLog(n, bootstrap, true)
	}
	if aerr := raftstore.SetAsideLog(c.cfg.DataDir, n); aerr != nil {
		return nil, fmt.Errorf("%w; %w", err, aerr)
	}
	c.log.Error("replica's raft log is damaged; set aside as wal.damaged, the replica rejoins its group as a new member", "shard", n, "err", err)
	return nil, err
}

// othersHold reports whether another node may hold a replica of shard n
// to refill this node's from: a voter of the group other than this node
// in the replica's stored configuration or, when that cannot be read (the
// damage may be in it), another node in the shard's placement (a mail
// shard) or among the members last written down (the meta shard).
func (c *Cluster) othersHold(n uint32) bool {
	servers, err := raftstore.StoredServers(raftstore.ReplicaDir(c.cfg.DataDir, n))
	if err == nil {
		for _, srv := range servers {
			if srv.Voter && srv.ID != c.cfg.NodeID {
				return true
			}
		}
		return false
	}
	if n == 0 {
		addrs, err := c.keptMembers()
		return err != nil || len(addrs) > 0
	}
	if v := c.currentView(); v != nil {
		if p, ok := v.placements[n]; ok {
			return len(p.Replicas) > 1 || !p.has(c.cfg.NodeID)
		}
	}
	return true // unknown: never vote with a damaged log
}

// openReplicaLog opens the replica as openReplica does; keepDamaged opens
// it even when its log is damaged.
func (c *Cluster) openReplicaLog(n uint32, bootstrap, keepDamaged bool) (*raftstore.Shard, error) {
	layer, err := c.trans.RaftLayer(n)
	if err != nil {
		return nil, err
	}
	s, err := raftstore.Open(raftstore.Config{
		Shard:          n,
		Dir:            raftstore.ReplicaDir(c.cfg.DataDir, n),
		NodeID:         c.cfg.NodeID,
		Address:        c.cfg.Advertise,
		Stream:         layer,
		Bootstrap:      bootstrap,
		KeepDamagedLog: keepDamaged,
		// A mail shard's leader answers once the entry is synced on a
		// quorum of logs and applied (see raftstore.Config); the meta
		// shard is written rarely, and its leader's state file holds
		// each change (placements, members) before it answers.
		GroupLeaderCommits: n != 0,
		Timing:             c.cfg.Timing,
		Logger:             c.cfg.Logger,
	})
	if err != nil {
		layer.Close()
		return nil, err
	}
	c.mu.Lock()
	c.replicas[n] = &replica{shard: s, layer: layer}
	c.mu.Unlock()
	c.log.Info("replica opened", "shard", n)
	c.resubscribe(n)
	return s, nil
}

// closeReplica closes (and with remove, deletes) this node's replica of
// shard n.
func (c *Cluster) closeReplica(n uint32, remove bool) error {
	c.mu.Lock()
	r := c.replicas[n]
	delete(c.replicas, n)
	c.mu.Unlock()
	if r == nil {
		return nil
	}
	c.resubscribe(n)
	// The layer first: Raft dials waiting for an unreachable peer end at
	// once, so the group's shutdown does not wait for them.
	r.layer.Close()
	var err error
	if c.aborting.Load() {
		err = r.shard.Abort()
	} else {
		err = r.shard.Close()
	}
	if remove && err == nil {
		err = raftstore.RemoveReplica(c.cfg.DataDir, n)
	}
	c.log.Info("replica closed", "shard", n, "removed", remove)
	return err
}

// replica returns this node's replica of shard n, or nil.
func (c *Cluster) replica(n uint32) *raftstore.Shard {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if r := c.replicas[n]; r != nil {
		return r.shard
	}
	return nil
}

func (c *Cluster) meta() *raftstore.Shard { return c.replica(0) }

// Shards returns this node's replicas, meta first, for metrics.
func (c *Cluster) Shards() []*raftstore.Shard {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*raftstore.Shard, 0, len(c.replicas))
	if r := c.replicas[0]; r != nil {
		out = append(out, r.shard)
	}
	for n := uint32(1); int(n) <= maxMailShards && len(out) < len(c.replicas); n++ {
		if r := c.replicas[n]; r != nil {
			out = append(out, r.shard)
		}
	}
	return out
}

// ViewMeta reads this node's meta replica, committing its pending group
// first (raftstore.Shard.View): for reads that take their time.
func (c *Cluster) ViewMeta(fn func(*raftstore.Reader) error) error {
	m := c.meta()
	if m == nil {
		return fmt.Errorf("meta replica not open: %w", schema.ErrUnavailable)
	}
	return m.View(fn)
}

// ReadMeta looks something up in this node's meta replica without
// committing its pending group (raftstore.Shard.Read): fn must be short.
func (c *Cluster) ReadMeta(fn func(*raftstore.Reader) error) error {
	m := c.meta()
	if m == nil {
		return fmt.Errorf("meta replica not open: %w", schema.ErrUnavailable)
	}
	return m.Read(fn)
}

// MetaIndex returns the index of the last entry this node's meta replica
// applied, 0 while it is not open.
func (c *Cluster) MetaIndex() uint64 {
	m := c.meta()
	if m == nil {
		return 0
	}
	return m.PublishedIndex()
}

// LeadsShard reports whether this node leads shard n.
func (c *Cluster) LeadsShard(n uint32) bool {
	s := c.replica(n)
	return s != nil && s.IsLeader()
}

// Ready reports whether the node can serve: no replica's write to the
// disk hangs, its meta replica follows a leader, and a leader is known
// for every mail shard.
func (c *Cluster) Ready(ctx context.Context) error {
	m := c.meta()
	if m == nil {
		return fmt.Errorf("meta replica not open: %w", schema.ErrUnavailable)
	}
	for _, s := range c.Shards() {
		if err := s.Stuck(); err != nil {
			return fmt.Errorf("disk: %w: %w", err, schema.ErrUnavailable)
		}
	}
	if id, _ := m.Leader(); id == "" {
		return fmt.Errorf("meta shard has no leader: %w", schema.ErrUnavailable)
	}
	if len(m.Status().Servers) == 0 {
		return fmt.Errorf("this node is not a member of the meta shard yet: %w", schema.ErrUnavailable)
	}
	if v := c.currentView(); v != nil && v.nodes[c.cfg.NodeID].Removed {
		return fmt.Errorf("this node was removed from the cluster: %w", schema.ErrUnavailable)
	}
	for n := uint32(1); int(n) <= c.mailShardCount(); n++ {
		if id, _ := c.leaderOf(n); id == "" {
			return fmt.Errorf("shard %d has no known leader: %w", n, schema.ErrUnavailable)
		}
	}
	return ctx.Err()
}

// kick makes the control loop run now.
func (c *Cluster) kick() {
	select {
	case c.kickCh <- struct{}{}:
	default:
	}
}

// Close leaves gracefully: every shard this node leads hands leadership
// to another voter first (so writes continue at once elsewhere), then the
// servers, the replicas and the cluster port stop. It is idempotent.
func (c *Cluster) Close() error { return c.shutdown(true) }

// Abort stops the node without handing leadership over, as a crash would
// as far as the other nodes can tell, and leaves its replicas' state
// files as a crash would: applied entries not committed there yet are
// dropped, for the logs to replay at the next start (tests use it; a real
// crash is a kill -9). It is idempotent, and so is Close after it.
func (c *Cluster) Abort() error {
	c.aborting.Store(true) // replicas drop what a crash would lose
	if c.trans != nil {
		c.trans.Isolate(true) // drop every connection at once
	}
	return c.shutdown(false)
}

func (c *Cluster) shutdown(handOver bool) error {
	c.closeOnce.Do(func() {
		close(c.closing)
		if handOver {
			c.handOverLeadership()
		}
		close(c.stop)
		c.wg.Wait()
		var errs []error
		for _, s := range c.srv {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := s.Shutdown(ctx); err != nil {
				s.Close()
			}
			cancel()
		}
		c.mu.Lock()
		subs := make([]*subscription, 0, len(c.watches))
		for s := range c.watches {
			subs = append(subs, s)
		}
		c.mu.Unlock()
		for _, s := range subs {
			s.cancel()
		}
		c.mu.RLock()
		ns := make([]uint32, 0, len(c.replicas))
		for n := range c.replicas {
			ns = append(ns, n)
		}
		c.mu.RUnlock()
		for _, n := range ns {
			if err := c.closeReplica(n, false); err != nil {
				errs = append(errs, err)
			}
		}
		if c.trans != nil {
			errs = append(errs, c.trans.Close())
		}
		if c.rpc != nil {
			c.rpc.close()
		}
		c.sealer.Close()
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// handOverLeadership transfers the leadership of every group this node
// leads to another voter, in parallel, bounded in time.
func (c *Cluster) handOverLeadership() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range c.Shards() {
		if !s.IsLeader() {
			continue
		}
		voters := 0
		for _, srv := range s.Status().Servers {
			if srv.Voter && srv.ID != c.cfg.NodeID {
				voters++
			}
		}
		if voters == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.TransferLeadership(ctx, "", ""); err != nil {
				c.log.Warn("hand leadership over before stopping", "shard", s.ID(), "err", err)
			}
		}()
	}
	wg.Wait()
}

// removalGrace is how long a removed node may still talk to this one, so
// that it learns of its removal from the meta shard before it is cut off.
const removalGrace = 3 * time.Second

// allowPeer refuses removed nodes on the cluster port.
func (c *Cluster) allowPeer(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.view == nil || !c.view.nodes[id].Removed {
		return true
	}
	at, seen := c.removedAt[id]
	return seen && !at.IsZero() && time.Since(at) <= removalGrace
}

// refreshView rereads the cluster's records from the meta replica.
func (c *Cluster) refreshView() error {
	m := c.meta()
	if m == nil {
		return fmt.Errorf("meta replica not open: %w", schema.ErrUnavailable)
	}
	v, err := readMeta(m)
	if err != nil {
		return err
	}
	now := time.Now()
	var cut []string
	c.mu.Lock()
	first := c.view == nil
	c.view = v
	for id, rec := range v.nodes {
		if !rec.Removed || id == c.cfg.NodeID {
			continue
		}
		at, seen := c.removedAt[id]
		if !seen && first {
			c.removedAt[id] = time.Time{} // removed before this node started
		} else if !seen {
			c.removedAt[id] = now
		} else if !at.IsZero() && now.Sub(at) > removalGrace {
			cut = append(cut, id)
			c.removedAt[id] = time.Time{} // cut once
		}
	}
	c.mu.Unlock()
	c.rememberMembers(v)
	// A removed node loses the connections it already has, not only new
	// ones, once it has had a moment to learn of its removal.
	for _, id := range cut {
		if c.trans != nil {
			c.trans.Disconnect(id)
		}
	}
	return nil
}

// CommandLevel returns the level of the command forms every member node
// applies, as this node's meta replica records it (schema.Level): a
// proposer writes no form above it, so a node on older software never
// meets an entry it cannot decode during a rolling upgrade.
func (c *Cluster) CommandLevel() int {
	v := c.currentView()
	if v == nil {
		return schema.LevelBase
	}
	return min(v.commandLevel, c.cfg.CommandLevel)
}

func (c *Cluster) currentView() *metaView {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.view
}

// housekeep expires, on the shards this node leads, staged chunks that
// never became part of a message (temporary data is not kept).
func (c *Cluster) housekeep() {
	defer c.wg.Done()
	t := time.NewTicker(housekeepEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for _, s := range c.Shards() {
			if s.ID() == 0 || !s.IsLeader() {
				continue
			}
			before := s.LeaderTime().Add(-stagedChunkTTL).UnixNano()
			if _, err := c.Apply(ctx, s.ID(), &schema.ExpireStaged{Before: before}); err != nil {
				c.log.Warn("expire staged chunks", "shard", s.ID(), "err", err)
			}
		}
		cancel()
	}
}
