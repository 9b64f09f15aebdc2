package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/raftstore"
)

// TestRemoteReadFailureIsAnError: a read that fails on the leader for a
// reason other than the data reaches the node that asked as an error.
// Here the leader does not know the kind of query; in service it is a
// commit of the state file that hangs, or a replica closed or broken.
// Such a failure went back as an empty answer: a mailbox record that
// then failed to open ("seal: malformed value"), or a message read as
// gone, which made a flag change in TestChaos answer that its message
// no longer existed.
func TestRemoteReadFailureIsAnError(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{MailShards: 1})
	var mailShard uint32
	for _, s := range c.Nodes[0].Cluster().Shards() {
		if s.ID() != 0 {
			mailShard = s.ID()
		}
	}
	var leader *clustertest.Node
	c.Eventually(30*time.Second, "the mail shard has a leader", func() error {
		if leader = c.Leader(mailShard); leader == nil {
			return errors.New("no leader")
		}
		return nil
	})
	unknown := raftstore.Query{Kind: 200}
	for _, n := range c.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		res, err := n.Cluster().Query(ctx, mailShard, unknown, 0)
		cancel()
		if err == nil {
			t.Errorf("%s (leader: %v): a read the leader failed answered %+v", n.ID, n == leader, res)
		}
	}
}
