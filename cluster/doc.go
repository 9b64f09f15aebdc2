// Package cluster owns a node's part of the cluster: the cluster port
// (through package transport), membership (nodes, regions, join tokens,
// removal), placement of the mail shards (home regions, replicas,
// leaders), the replicas this node keeps, and the router that takes an
// operation to the leader of its shard wherever that is. The directory
// (package directory) and the mail store (package mailstore) sit on top
// of it through small interfaces they declare; Cluster satisfies them.
//
// Invariants:
//   - Shard 0 is the meta shard: every node keeps a replica (voters on up
//     to five nodes, non-voters elsewhere), so logins are checked locally.
//     Mail shards 1..S have R replicas each, placed by the meta leader.
//   - A command is proposed under one request id and retried with that
//     same id against whichever replica leads next, until its context
//     ends; the FSM applies it once.
//   - Membership changes add a replica as a non-voter and promote it only
//     once it has caught up, and remove a replica only after its
//     replacement votes, so a shard never loses its quorum to a repair.
//   - A replica's files are deleted only after the group's leader no
//     longer counts it as a member.
//   - Only this package knows where a shard's leader is; the layout of
//     replicas on disk is raftstore's (raftstore.ReplicaDir).
package cluster
