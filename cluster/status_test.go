package cluster

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore"
)

// TestStatusWithoutALeaderKeepsTheVoters: while a shard has no leader
// (an election, a leadership transfer), its voters are the newest
// configuration a replica reports, not nobody.
func TestStatusWithoutALeaderKeepsTheVoters(t *testing.T) {
	voters := []raftstore.Server{{ID: "n1", Voter: true}, {ID: "n2", Voter: true}, {ID: "n3", Voter: true}}
	older := []raftstore.Server{{ID: "n1", Voter: true}, {ID: "n2", Voter: true}, {ID: "n3", Voter: false}}
	v := &metaView{placements: map[uint32]Placement{3: {Shard: 3, Home: "n3", Replicas: []string{"n1", "n2", "n3"}}}}
	report := func(st raftstore.Status) PingResponse {
		st.Shard = 3
		return PingResponse{Shards: []raftstore.Status{st}}
	}
	for name, c := range map[string]struct {
		reports map[string]PingResponse
		leader  string
		voters  map[string]bool
	}{
		"no leader: the newest configuration": {
			reports: map[string]PingResponse{
				"n1": report(raftstore.Status{State: "candidate", Term: 6, LastIndex: 33, Servers: voters}),
				"n2": report(raftstore.Status{State: "follower", Term: 5, LastIndex: 40, Servers: older}),
				"n3": report(raftstore.Status{State: "follower", Term: 6, LastIndex: 31, Servers: older}),
			},
			voters: map[string]bool{"n1": true, "n2": true, "n3": true},
		},
		"a leader: its configuration": {
			reports: map[string]PingResponse{
				"n1": report(raftstore.Status{State: "follower", Term: 7, LastIndex: 50, Servers: voters}),
				"n2": report(raftstore.Status{State: "leader", Term: 7, LastIndex: 50, Servers: older}),
			},
			leader: "n2",
			voters: map[string]bool{"n1": true, "n2": true, "n3": false},
		},
	} {
		t.Run(name, func(t *testing.T) {
			ss := shardStatus(3, v, c.reports)
			if ss.Leader != c.leader {
				t.Fatalf("leader %q, want %q", ss.Leader, c.leader)
			}
			if len(ss.Replicas) != len(c.voters) {
				t.Fatalf("replicas %+v", ss.Replicas)
			}
			for _, r := range ss.Replicas {
				if r.Voter != c.voters[r.Node] {
					t.Errorf("replica on %s: voter %v, want %v", r.Node, r.Voter, c.voters[r.Node])
				}
			}
		})
	}
}

// TestStatusShowsAReplicaUnderRepair: a replica its node has closed for
// a repair is reported as what the repair does, not as unknown.
func TestStatusShowsAReplicaUnderRepair(t *testing.T) {
	voters := []raftstore.Server{{ID: "n1", Voter: true}, {ID: "n2", Voter: true}, {ID: "n3", Voter: true}}
	v := &metaView{placements: map[uint32]Placement{3: {Shard: 3, Replicas: []string{"n1", "n2", "n3"}}}}
	reports := map[string]PingResponse{
		"n1": {Shards: []raftstore.Status{{Shard: 3, State: "leader", Term: 2, Servers: voters}}},
		"n2": {Repairing: map[uint32]string{3: "rebuilding"}},
		"n3": {Repairing: map[uint32]string{4: "reopening"}, Withheld: []uint32{3}},
	}
	want := map[string]string{"n1": "leader", "n2": "rebuilding", "n3": "withheld"}
	for _, r := range shardStatus(3, v, reports).Replicas {
		if r.State != want[r.Node] {
			t.Errorf("replica on %s: state %q, want %q", r.Node, r.State, want[r.Node])
		}
	}
}

// TestStatusCountsDamage: a replica's reads of damaged log entries and
// its repaired pieces of messages, from its node's report, reach the
// shard's status (and so `mailnode cluster status`).
func TestStatusCountsDamage(t *testing.T) {
	voters := []raftstore.Server{{ID: "n1", Voter: true}, {ID: "n2", Voter: true}}
	v := &metaView{placements: map[uint32]Placement{3: {Shard: 3, Replicas: []string{"n1", "n2"}}}}
	reports := map[string]PingResponse{
		"n1": {Shards: []raftstore.Status{{Shard: 3, State: "leader", Term: 2, Servers: voters, DamagedReads: 2}}},
		"n2": {Shards: []raftstore.Status{{Shard: 3, State: "follower", Term: 2, Servers: voters, Repaired: 5}}},
	}
	wantReads := map[string]uint64{"n1": 2, "n2": 0}
	wantRepaired := map[string]uint64{"n1": 0, "n2": 5}
	for _, r := range shardStatus(3, v, reports).Replicas {
		if r.DamagedReads != wantReads[r.Node] || r.Repaired != wantRepaired[r.Node] {
			t.Errorf("replica on %s: %d damaged reads and %d repaired, want %d and %d",
				r.Node, r.DamagedReads, r.Repaired, wantReads[r.Node], wantRepaired[r.Node])
		}
	}
}
