package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// DefaultMailShards is the number of mail shards of a new cluster.
const DefaultMailShards = 8

const (
	settingMailShards = "mail_shards"
	// stagedChunkTTL is how long a chunk of a large message may wait for
	// the Append that commits it.
	stagedChunkTTL = time.Hour
	housekeepEvery = 10 * time.Minute
)

// Config describes this node's part of the cluster.
type Config struct {
	// DataDir holds the shards, under DataDir/shards/<n>.
	DataDir string
	// NodeID is this node's stable id.
	NodeID string
	// MailShards is the number of mail shards, fixed when the cluster is
	// created; 0 means DefaultMailShards. A different value for an
	// existing cluster is ignored with a warning.
	MailShards int
	// MasterKey is the root of the key hierarchy.
	MasterKey [seal.KeySize]byte
	Logger    *slog.Logger
	// Timing overrides the Raft timeouts (zero fields take defaults).
	Timing raftstore.Timing
	// PasswordConcurrency bounds concurrent argon2id computations; 0
	// means 4.
	PasswordConcurrency int
}

// Cluster is this node's view of the cluster: the meta shard, the mail
// shards, the keys and the directory.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	keys   *rootKeys
	sealer *seal.Sealer
	hash   *hasher
	auth   *authCache

	meta   *raftstore.Shard
	shards []*raftstore.Shard // mail shards 1..S at index 0..S-1

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open opens this node's shards, bootstrapping one-voter groups for a new
// single-node cluster, and waits until every shard has a leader.
func Open(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.NodeID == "" || cfg.DataDir == "" {
		return nil, fmt.Errorf("open cluster: node id and data dir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PasswordConcurrency <= 0 {
		cfg.PasswordConcurrency = 4
	}
	sealer, err := seal.New()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "cluster"),
		keys:   newRootKeys(cfg.MasterKey),
		sealer: sealer,
		hash:   newHasher(cfg.PasswordConcurrency),
		auth:   newAuthCache(),
		stop:   make(chan struct{}),
	}
	if err := c.open(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	c.wg.Add(1)
	go c.housekeep()
	return c, nil
}

func (c *Cluster) openShard(n uint32) (*raftstore.Shard, error) {
	return raftstore.Open(raftstore.Config{
		Shard:     n,
		Dir:       filepath.Join(c.cfg.DataDir, "shards", strconv.Itoa(int(n))),
		NodeID:    c.cfg.NodeID,
		Bootstrap: true,
		Timing:    c.cfg.Timing,
		Logger:    c.cfg.Logger,
	})
}

func (c *Cluster) open(ctx context.Context) error {
	meta, err := c.openShard(0)
	if err != nil {
		return err
	}
	c.meta = meta
	if err := meta.WaitForLeader(ctx); err != nil {
		return err
	}
	n, err := c.mailShardCount(ctx)
	if err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		s, err := c.openShard(uint32(i))
		if err != nil {
			return err
		}
		c.shards = append(c.shards, s)
	}
	for _, s := range c.shards {
		if err := s.WaitForLeader(ctx); err != nil {
			return err
		}
	}
	return c.ensureClusterKey(ctx)
}

// mailShardCount returns the shard count recorded at creation, recording
// the configured one for a new cluster.
func (c *Cluster) mailShardCount(ctx context.Context) (int, error) {
	var stored []byte
	if err := c.meta.View(func(r *raftstore.Reader) error { stored = r.Setting(settingMailShards); return nil }); err != nil {
		return 0, err
	}
	want := c.cfg.MailShards
	if want <= 0 {
		want = DefaultMailShards
	}
	if len(stored) == 4 {
		n := int(binary.BigEndian.Uint32(stored))
		if c.cfg.MailShards != 0 && n != c.cfg.MailShards {
			c.log.Warn("mail shard count is fixed at creation; ignoring the configured value", "cluster", n, "configured", c.cfg.MailShards)
		}
		return n, nil
	}
	if want > 1024 {
		return 0, fmt.Errorf("%d mail shards is more than 1024", want)
	}
	_, err := c.meta.Apply(ctx, c.command(&schema.PutSetting{Key: settingMailShards, Value: binary.BigEndian.AppendUint32(nil, uint32(want))}))
	return want, err
}

// ensureClusterKey creates the cluster data key (used by domains in
// "shared" mode) when the cluster is created.
func (c *Cluster) ensureClusterKey(ctx context.Context) error {
	var wrapped []byte
	if err := c.meta.View(func(r *raftstore.Reader) error { wrapped = r.Setting(settingClusterKey); return nil }); err != nil {
		return err
	}
	if wrapped != nil {
		_, err := c.clusterKey()
		return err
	}
	sealed, err := c.sealer.Seal(c.keys.master, seal.KindClusterKey, nil, []byte(settingClusterKey), encodeKeys([]seal.Key{seal.NewKey(1)}))
	if err != nil {
		return err
	}
	_, err = c.meta.Apply(ctx, c.command(&schema.PutSetting{Key: settingClusterKey, Value: sealed}))
	return err
}

func (c *Cluster) clusterKey() ([]seal.Key, error) {
	var wrapped []byte
	if err := c.meta.View(func(r *raftstore.Reader) error { wrapped = r.Setting(settingClusterKey); return nil }); err != nil {
		return nil, err
	}
	plain, err := c.sealer.Open(c.keys.master, seal.KindClusterKey, nil, []byte(settingClusterKey), wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap cluster data key (wrong master key?): %w", err)
	}
	return decodeKeys(plain)
}

// command wraps a payload with a fresh request id and the current time.
func (c *Cluster) command(p schema.Payload) schema.Command {
	return schema.Command{ReqID: schema.NewID(), Time: time.Now().UnixNano(), Payload: p}
}

// mailShard returns the replica of mail shard n (1-based).
func (c *Cluster) mailShard(n uint32) (*raftstore.Shard, error) {
	if n == 0 || int(n) > len(c.shards) {
		return nil, fmt.Errorf("mail shard %d does not exist: %w", n, schema.ErrUnavailable)
	}
	return c.shards[n-1], nil
}

// placeUser picks the mail shard of a new user.
func (c *Cluster) placeUser(id schema.ID) uint32 {
	return binary.BigEndian.Uint32(id[:4])%uint32(len(c.shards)) + 1
}

// Shards returns every shard replica of this node, meta first, for
// backups and metrics.
func (c *Cluster) Shards() []*raftstore.Shard {
	return append([]*raftstore.Shard{c.meta}, c.shards...)
}

// Ready reports whether every shard has a leader.
func (c *Cluster) Ready(ctx context.Context) error {
	for _, s := range c.Shards() {
		if s == nil {
			return fmt.Errorf("cluster not open: %w", schema.ErrUnavailable)
		}
		leader, _ := s.Raft().LeaderWithID()
		if leader == "" {
			return fmt.Errorf("shard %d has no leader: %w", s.ID(), schema.ErrUnavailable)
		}
	}
	return ctx.Err()
}

// housekeep expires staged chunks that never became part of a message.
func (c *Cluster) housekeep() {
	defer c.wg.Done()
	t := time.NewTicker(housekeepEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.expireStaged()
		}
	}
}

func (c *Cluster) expireStaged() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := time.Now().Add(-stagedChunkTTL).UnixNano()
	for _, s := range c.shards {
		if !s.IsLeader() {
			continue
		}
		if _, err := s.Apply(ctx, c.command(&schema.ExpireStaged{Before: before})); err != nil {
			c.log.Warn("expire staged chunks", "shard", s.ID(), "err", err)
		}
	}
}

// Close stops housekeeping and closes every shard.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.wg.Wait()
		var errs []error
		for _, s := range c.shards {
			errs = append(errs, s.Close())
		}
		if c.meta != nil {
			errs = append(errs, c.meta.Close())
		}
		c.sealer.Close()
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}
