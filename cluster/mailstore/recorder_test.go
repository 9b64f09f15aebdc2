package mailstore_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/mailcluster/mailcluster/cluster"
	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/mailstore"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// recorder is the real cluster, counting for each watcher (in the order
// they were opened) how often a write waited for it, and the reads of
// message records.
type recorder struct {
	*cluster.Cluster
	mu       sync.Mutex
	waited   []int
	msgReads int
}

func (r *recorder) Query(ctx context.Context, n uint32, q raftstore.Query, minIndex uint64) (*raftstore.QueryResult, error) {
	if q.Kind == raftstore.QueryMessages {
		r.mu.Lock()
		r.msgReads++
		r.mu.Unlock()
	}
	return r.Cluster.Query(ctx, n, q, minIndex)
}

// reads returns the reads of message records since the last call.
func (r *recorder) reads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.msgReads
	r.msgReads = 0
	return n
}

// newRecordedAccount logs a new user in through a mail store over the
// recorder of node 0 of a one-node cluster.
func newRecordedAccount(t *testing.T, addr string) (*recorder, *mailstore.Account) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, MailShards: 1})
	n := c.Nodes[0]
	c.AddUser(addr, pw)
	rec := &recorder{Cluster: n.Cluster()}
	s := mailstore.New(rec, n.Directory(), mailstore.Config{})
	t.Cleanup(s.Close)
	a, err := s.Authenticate(ctx(t), schema.Credentials{Username: addr, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return rec, a
}

func (r *recorder) Watch(n uint32, user schema.ID, from uint64, fn func([]raftstore.Event)) (func(context.Context, uint64) error, func()) {
	wait, cancel := r.Cluster.Watch(n, user, from, fn)
	r.mu.Lock()
	i := len(r.waited)
	r.waited = append(r.waited, 0)
	r.mu.Unlock()
	return func(ctx context.Context, index uint64) error {
		r.mu.Lock()
		r.waited[i]++
		r.mu.Unlock()
		return wait(ctx, index)
	}, cancel
}

// take returns the counts since the last call and starts again.
func (r *recorder) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.waited)
	clear(r.waited)
	return out
}
