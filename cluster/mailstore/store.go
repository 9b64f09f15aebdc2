package mailstore

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Cluster is what the mail store needs of the cluster: commands and named
// reads routed to a shard's leader wherever it is, and change events of a
// user's mail from whichever replica serves them. *cluster.Cluster
// satisfies it.
type Cluster interface {
	// Apply commits p on mail shard n under a fresh request id.
	Apply(ctx context.Context, n uint32, p schema.Payload) (*schema.Result, error)
	// ApplyRequest commits p under reqID: a retry with the same id is
	// applied once.
	ApplyRequest(ctx context.Context, n uint32, reqID schema.ID, p schema.Payload) (*schema.Result, error)
	// Query runs a named read on a replica of shard n that has applied at
	// least minIndex (the leader unless told otherwise); a read of a
	// blob's contents may come from any replica that holds the blob.
	Query(ctx context.Context, n uint32, q raftstore.Query, minIndex uint64) (*raftstore.QueryResult, error)
	// Watch hands fn the change events of user on shard n applied after
	// index from, in log order, until cancel; a ChangeResync event stands
	// for any it cannot deliver. fn must not block. wait returns once
	// every event up to an index has been handed to fn.
	Watch(n uint32, user schema.ID, from uint64, fn func([]raftstore.Event)) (wait func(ctx context.Context, index uint64) error, cancel func())
	// QueryCopies hands fn the answer of each replica of shard n, this
	// node's first, until fn returns false: the copies to read when one
	// does not open. An immutable query (raftstore.Query.Immutable) is
	// answered by the replicas that hold what it names, any other by
	// each replica once it has applied minIndex.
	QueryCopies(ctx context.Context, n uint32, q raftstore.Query, minIndex uint64, fn func(node string, res *raftstore.QueryResult) bool) error
	// Shards returns this node's replicas (a scrub reads them).
	Shards() []*raftstore.Shard
	// LeadsShard reports whether this node leads mail shard n.
	LeadsShard(n uint32) bool
	// MailShards returns the number of mail shards.
	MailShards() int
	// CommandLevel returns the level of the command forms every node of
	// the cluster applies (schema.Level); the store proposes none above it.
	CommandLevel() int
}

// Config configures a Store.
type Config struct {
	Logger *slog.Logger
	// SpoolRetry is how long a spooled message waits before this node
	// retries the copies that failed; 0 means 30 seconds.
	SpoolRetry time.Duration
	// MaildropLease is how long a POP3 maildrop lock lasts without
	// renewal (a dead holder's lock is free again after it); 0 means
	// DefaultMaildropLease.
	MaildropLease time.Duration
	// SRSDomain is the domain of the SRS addresses that forwarded mail
	// goes out from; "" means the alias's own domain.
	SRSDomain string
	// OverQuota, if set, is told about every change refused because it
	// would take a user over their quota: op is "deliver", "append" or
	// "copy" (for the node's metrics; it must not block).
	OverQuota func(op string)
	// SearchIndexer, if set, builds a message's search record (the IMAP
	// frontend's, imap.BuildSearchRecord) when this node proposes it; the
	// record is sealed with the user's key and stored with the message
	// in the same command. Nil stores none: messages are then searched by
	// reading them. It must not fail; nil means no record.
	SearchIndexer func(msg []byte) []byte
}

// Store is the mail store the frontends consume: it satisfies
// protocols.Backend with *Account.
type Store struct {
	c      Cluster
	dir    *directory.Directory
	sealer *seal.Sealer
	log    *slog.Logger
	cfg    Config

	// watchMu guards watching: every open watcher on this node, by user,
	// so that one session's writes can tell the others' watchers how far
	// to catch up (noteWrite, Account.Refresh).
	watchMu  sync.Mutex
	watching map[schema.ID]map[*watcher]struct{}

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns the mail store over a cluster and its directory, and starts
// the spool worker that finishes deliveries a failure interrupted.
func New(c Cluster, dir *directory.Directory, cfg Config) *Store {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SpoolRetry <= 0 {
		cfg.SpoolRetry = 30 * time.Second
	}
	if cfg.MaildropLease <= 0 {
		cfg.MaildropLease = DefaultMaildropLease
	}
	s := &Store{c: c, dir: dir, sealer: dir.Sealer(), log: cfg.Logger.With("component", "mailstore"), cfg: cfg,
		watching: map[schema.ID]map[*watcher]struct{}{}, stop: make(chan struct{})}
	s.wg.Add(1)
	go s.spoolWorker()
	return s
}

// Close stops the spool worker.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
	})
}

// Authenticate checks a login (the account password or an app password,
// under the user's MFA policy; see directory.Directory.Authenticate) and
// returns the user's mail store.
func (s *Store) Authenticate(ctx context.Context, cred schema.Credentials) (*Account, error) {
	u, err := s.dir.Authenticate(ctx, cred)
	if err != nil {
		return nil, err
	}
	return s.newAccount(u), nil
}

// LookupRecipient reports whether address is a local mailbox.
func (s *Store) LookupRecipient(ctx context.Context, address string) error {
	return s.dir.LookupRecipient(ctx, address)
}
