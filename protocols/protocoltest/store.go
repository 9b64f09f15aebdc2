package protocoltest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/protocols"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// Env is a real single-node mail store: meta and mail shards as one-voter
// Raft groups over bbolt in a temporary directory, with encryption.
type Env struct {
	Store   protocols.Store
	Cluster *cluster.Cluster
	Dir     string
}

// NewStore opens a store in t.TempDir(); t.Cleanup closes it.
func NewStore(t testing.TB) *Env {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cluster.Open(ctx, cluster.Config{
		DataDir:    dir,
		NodeID:     "test-node",
		MailShards: 2,
		MasterKey:  seal.NewKey(0).Secret,
		Timing:     raftstore.Timing{HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &Env{Store: protocols.StoreOf[*cluster.Account](c), Cluster: c, Dir: dir}
}

// AddUser creates a user, and its domain if needed. Passwords must have
// at least 8 characters.
func (e *Env) AddUser(t testing.TB, address, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	domain := address[strings.LastIndexByte(address, '@')+1:]
	if err := e.Cluster.AddDomain(ctx, domain, cluster.KeyModeUser); err != nil && !errors.Is(err, schema.ErrDomainExists) {
		t.Fatalf("add domain %s: %v", domain, err)
	}
	if err := e.Cluster.AddUser(ctx, address, password); err != nil {
		t.Fatalf("add user %s: %v", address, err)
	}
}

// Login authenticates and returns the account; t.Cleanup closes it.
func (e *Env) Login(t testing.TB, address, password string) protocols.Account {
	t.Helper()
	acct, err := e.Store.Authenticate(context.Background(), address, password)
	if err != nil {
		t.Fatalf("login %s: %v", address, err)
	}
	t.Cleanup(func() { acct.Close() })
	return acct
}
