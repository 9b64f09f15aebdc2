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
//   - Domain and user records, aliases and catch-alls are sealed under a
//     key derived from the master key, and names are looked up by keyed
//     hash: no address or domain name is stored in the clear.
//   - A recipient reaches a user, an alias's users (aliases naming
//     aliases followed MaxAliasDepth levels at most), a plus-address's
//     base, or the domain's catch-all, in that order. An alias never
//     shadows a user and a user is never created over an alias. A miss
//     on this node's replica is confirmed with the meta leader before
//     the next step, so an address added through another node a moment
//     ago is found, never taken for an unknown one.
//   - Logins are checked against this node's meta replica; writes go to
//     the meta leader through the cluster, which applies them here before
//     they return, so a node always sees its own directory changes.
//   - Everything that decides a login (password hash, app passwords with
//     their scopes, the MFA enrolment) is in the sealed user record, and
//     cached verifications are tied to the exact record: any change to
//     it, on any node, takes effect without waiting for a cache. The
//     domain's MFA requirement and an attempt's protocol are checked on
//     every login, cached or not.
//   - App passwords, recovery codes and TOTP keys are generated here and
//     handed out once; only argon2id hashes (and the sealed TOTP key)
//     are stored, and none of them is ever logged.
//   - A login writes nothing on its path: the last use of an app
//     password is written from a goroutine, at most once an hour.
package directory
