// Package directory owns the cluster's directory in the meta shard:
// domains (with their key mode and region), users (argon2id password
// hashes, wrapped keys, the mail shard that holds their mailboxes) and the
// key hierarchy that protects them.
//
// Invariants:
//   - Key hierarchy: the master key wraps domain keys and the cluster data
//     key; domain keys wrap per-user keys. A domain's key mode says which
//     key a user's data uses: "user" (its own), "domain" or "shared".
//     Deleting a user in "user" mode destroys its only key.
//   - Domain and user records are sealed under a key derived from the
//     master key, and names are looked up by keyed hash: no address or
//     domain name is stored in the clear.
//   - Logins are checked against this node's meta replica; writes go to
//     the meta leader through the cluster, which applies them here before
//     they return, so a node always sees its own directory changes.
package directory
