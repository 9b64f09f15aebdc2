package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Defaults of a new cluster.
const (
	// DefaultMailShards is the number of mail shards of a new cluster.
	DefaultMailShards = 8
	// DefaultReplicas is how many replicas each mail shard has (or every
	// node, when there are fewer).
	DefaultReplicas = 3
	// MaxMetaVoters is how many nodes vote in the meta shard; the others
	// keep non-voting replicas.
	MaxMetaVoters = 5
	// DefaultRegion is the region of a node that names none.
	DefaultRegion = "default"
	maxMailShards = 1024
)

// WANTiming is the default Raft timing: timeouts that hold across
// regions (round trips of a few hundred milliseconds).
func WANTiming() raftstore.Timing {
	return raftstore.Timing{
		HeartbeatTimeout:   1500 * time.Millisecond,
		ElectionTimeout:    1500 * time.Millisecond,
		LeaderLeaseTimeout: 1000 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
	}
}

// LANTiming is the faster profile for nodes on one network (the local
// three-node cluster, tests): failover within about a second.
func LANTiming() raftstore.Timing {
	return raftstore.Timing{
		HeartbeatTimeout:   400 * time.Millisecond,
		ElectionTimeout:    400 * time.Millisecond,
		LeaderLeaseTimeout: 300 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
	}
}

// Config describes this node's part of the cluster.
type Config struct {
	// DataDir holds the node's replicas (raftstore.ReplicaDir) and its
	// cluster identity (DataDir/cluster).
	DataDir string
	// NodeID is this node's stable id; it is the common name of its
	// cluster certificate.
	NodeID string
	// Region names where the node runs (for example "eu"); shards are
	// homed in regions and domains may be pinned to one.
	Region string
	// Listen is the cluster port's bind address (host:port).
	Listen string
	// Advertise is the address other nodes dial; "" means Listen (whose
	// port, if 0, becomes the one bound: tests do that).
	Advertise string
	// MailShards is the number of mail shards: fixed when the cluster is
	// created (0 means DefaultMailShards); a joining node learns it.
	MailShards int
	// Replicas is how many replicas each mail shard has; 0 means
	// DefaultReplicas.
	Replicas int
	// MasterKey is the root of the key hierarchy, the same on every node.
	MasterKey [32]byte
	// Timing sets the Raft timeouts; zero fields take WANTiming's.
	Timing raftstore.Timing
	// BootstrapToken, if set, is a join token every node of the cluster
	// accepts again and again (for automated deployments such as docker
	// compose); one-time tokens from IssueToken are the safer default.
	BootstrapToken string
	// DeadAfter is how long a node may be unreachable before the shards it
	// held get a replica elsewhere; 0 means 5 minutes.
	DeadAfter time.Duration
	// RouteTimeout bounds how long an operation waits for its shard to
	// have a reachable leader before it fails with
	// schema.ErrUnavailable; 0 means 10 seconds.
	RouteTimeout time.Duration
	// Version is this node's software version, shown in cluster status.
	Version string
	// CommandLevel is the command level this node reports and proposes
	// at most (schema.Level); 0 means schema.CommandLevel, what this
	// software applies. A lower level holds the whole cluster at it, so
	// that software of that level can still run on any node; tests use
	// it to play nodes of older software.
	CommandLevel int
	Logger       *slog.Logger
}

// softwareLevel is the command level a node runs at when asked for
// level: this software's own (schema.CommandLevel) unless a lower one
// above zero is asked for.
func softwareLevel(level int) int {
	if level <= 0 || level > schema.CommandLevel {
		return schema.CommandLevel
	}
	return level
}

func (c *Config) withDefaults() error {
	if c.NodeID == "" || c.DataDir == "" {
		return errors.New("node id and data dir are required")
	}
	if c.Listen == "" {
		return errors.New("the cluster port's listen address is required")
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	host, port, err := net.SplitHostPort(c.Advertise)
	if err != nil || (port == "0" && c.Advertise != c.Listen) {
		return fmt.Errorf("advertised cluster address %q: want host:port with a fixed port", c.Advertise)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("advertised cluster address %q: other nodes cannot dial an unspecified host; set the address they reach this node at", c.Advertise)
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	c.CommandLevel = softwareLevel(c.CommandLevel)
	if c.MailShards <= 0 {
		c.MailShards = DefaultMailShards
	}
	if c.MailShards > maxMailShards {
		return fmt.Errorf("%d mail shards is more than %d", c.MailShards, maxMailShards)
	}
	if c.Replicas <= 0 {
		c.Replicas = DefaultReplicas
	}
	def := WANTiming()
	if c.Timing.HeartbeatTimeout == 0 {
		c.Timing.HeartbeatTimeout = def.HeartbeatTimeout
	}
	if c.Timing.ElectionTimeout == 0 {
		c.Timing.ElectionTimeout = def.ElectionTimeout
	}
	if c.Timing.LeaderLeaseTimeout == 0 {
		c.Timing.LeaderLeaseTimeout = min(def.LeaderLeaseTimeout, c.Timing.HeartbeatTimeout)
	}
	if c.Timing.CommitTimeout == 0 {
		c.Timing.CommitTimeout = def.CommitTimeout
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = 5 * time.Minute
	}
	if c.RouteTimeout <= 0 {
		c.RouteTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
