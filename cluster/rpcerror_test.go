package cluster_test

import (
	"context"
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
	const mailShard = 1 // mail shards are numbered from 1, after the meta shard
	leader := c.WaitLeader(mailShard, 30*time.Second)
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
