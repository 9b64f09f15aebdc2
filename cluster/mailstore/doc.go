// Package mailstore owns the mail store the frontends consume: accounts,
// mailboxes, messages, flags, delivery and change events, sealed with
// each user's key and committed through the cluster to the leader of the
// user's mail shard. Store satisfies protocols.Backend and Account
// protocols.Account.
//
// Invariants:
//   - Everything a user owns is sealed with that user's data key on this
//     node before it is proposed; only opaque ids, counters and sizes
//     travel or rest in the clear.
//   - Mail-changing calls return only after their Raft entry is committed
//     and applied, so a frontend may acknowledge as soon as they return.
//   - An account reads at or after every index it has written or read, and
//     a write returns only after the account's watchers were handed its
//     events (wherever the shard's leader is), so a session sees its own
//     writes; the user's other sessions on the node see them at their
//     next command, and those through other nodes at their next poll
//     (Account.Refresh).
//   - A message for recipients on several shards is committed once to a
//     spool before delivery is acknowledged, and each recipient's copy is
//     committed under a request id derived from the spool entry, so a
//     failure between recipients neither loses nor duplicates a copy.
//   - State beyond mailboxes and messages (names kept subscribed after
//     their mailbox was deleted, the highest UID claimed as \Recent in
//     each mailbox) lives in user values changed by
//     compare-and-set (schema.SwapUserValue), so concurrent sessions on
//     any node never lose each other's changes; an Append may raise the
//     \Recent claim in its own commit (schema.Append.ClaimRecent).
//   - No command form goes out above the cluster's command level
//     (Cluster.CommandLevel): a replica of older software must be able to
//     apply every entry.
package mailstore
