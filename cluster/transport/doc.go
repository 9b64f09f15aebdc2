// Package transport owns a node's cluster port: one TCP listener with
// mutual TLS under the cluster's certificate authority, multiplexing every
// Raft group of the node, the internal RPC service and the join handshake
// by a small header sent inside TLS.
//
// Invariants:
//   - Every stream but a join is refused unless the peer presents a
//     certificate issued by the cluster CA for a node that is not removed.
//     A join stream carries no client certificate; the join protocol
//     authenticates it with a one-time token instead (package cluster).
//   - Raft addresses are node cluster addresses; the Raft group travels in
//     the stream header, so one address serves every group.
//   - Faults (blocking a peer, isolating the node) are injected here, at
//     the only place traffic crosses, and close live connections.
package transport
