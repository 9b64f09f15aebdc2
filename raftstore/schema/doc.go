// Package schema defines the mail data model shared by every layer: the
// identifiers, mailbox and message types, the change events, the sentinel
// errors callers branch on, and the binary codec of the commands that a
// shard's Raft log carries and of the records its state file holds.
//
// The package is pure: it imports neither raft nor bbolt, so the protocol
// frontends may use its types without depending on the storage engine.
//
// Invariant: every field that holds user data (names, flags, dates,
// addresses, message bytes) is carried as a sealed []byte produced by the
// seal package. Only opaque identifiers, counters and sizes are in the clear.
package schema
