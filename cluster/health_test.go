package cluster

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore"
)

// TestCaughtUpAgainstCommitAtPing: a replica's report is judged against
// the leader's commit index when the ping went out, so a replica that
// keeps up with a loaded shard counts as caught up although the leader
// has committed more than catchUpLag entries since; one that is behind
// what was committed then does not.
func TestCaughtUpAgainstCommitAtPing(t *testing.T) {
	c := &Cluster{}
	c.health = newHealth(c)
	report := func(applied, commitAtPing uint64) {
		resp := PingResponse{NodeID: "n5", Shards: []raftstore.Status{{Shard: 1, State: "follower", AppliedIndex: applied}}}
		var commits map[uint32]uint64
		if commitAtPing > 0 {
			commits = map[uint32]uint64{1: commitAtPing}
		}
		c.health.record("n5", resp, nil, commits)
	}

	// Answered at 4,600 when the leader had committed 4,620; it has
	// committed 4,739 since.
	report(4600, 4620)
	if !c.caughtUp("n5", 1, 4739) {
		t.Error("a replica within catchUpLag of the commit index at the ping is not caught up")
	}
	report(4600, 4700)
	if c.caughtUp("n5", 1, 4739) {
		t.Error("a replica 100 entries behind the commit index at the ping counts as caught up")
	}
	// Without a commit index at the ping (this node did not lead then),
	// the one of now decides.
	report(4600, 0)
	if c.caughtUp("n5", 1, 4739) {
		t.Error("a replica 139 entries behind counts as caught up")
	}
	if !c.caughtUp("n5", 1, 4650) {
		t.Error("a replica 50 entries behind is not caught up")
	}
	if c.caughtUp("n5", 2, 10) {
		t.Error("a replica the report does not list counts as caught up")
	}
}
