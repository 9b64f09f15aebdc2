// Package cluster owns the shards of a node and everything that spans
// them: the meta directory (domains, users, password hashes, wrapped keys,
// user-to-shard placement), the key hierarchy, and the mail store the
// frontends consume (Cluster and Account satisfy protocols.Backend and
// protocols.Account).
//
// Invariants:
//   - Everything a user owns is sealed with that user's data key before it
//     is proposed to Raft; only opaque ids, counters and sizes travel or
//     rest in the clear. Domain and user records are sealed under a key
//     derived from the master key, and names are looked up by keyed hash.
//   - Key hierarchy: the master key wraps domain keys and the cluster data
//     key; domain keys wrap per-user keys. A domain's key mode says which
//     key a user's data uses: "user" (its own), "domain" or "shared".
//     Deleting a user in "user" mode destroys its only key.
//   - Mail-changing calls return only after their Raft entry is committed
//     and applied, so a frontend may acknowledge as soon as they return.
//   - Only this package knows which shard holds a user and where that
//     shard's leader is. On a single node every shard is local.
package cluster
