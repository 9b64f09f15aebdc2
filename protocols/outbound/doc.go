// Package outbound delivers the messages of the outbound queue to the
// internet: MX lookup (A/AAAA fallback, null MX), STARTTLS whenever the
// remote offers it, the envelope pipelined (RFC 2920) when the remote
// offers PIPELINING, per-recipient results, conversion of 8-bit messages
// to 7-bit for servers without 8BITMIME, retries with backoff until the
// expiry, and delivery status notifications (RFC 3464) to the sender's
// INBOX.
//
// Invariants:
//   - Only entries of mail shards this node leads are worked on (the
//     Queue hands out no others), so one node at a time delivers a
//     shard's queue; a new leader picks the queue up where it stands.
//   - Before an attempt the entry is claimed by compare-and-set (its next
//     attempt moved past the attempt's time limit), and every
//     destination's results are committed to the queue before the next
//     destination, so a node failure repeats at most the transaction
//     that was in flight.
//   - Each kind of report is stored once per entry and set of
//     recipients (request ids derived from them).
//
// The package imports no raft or bbolt: it sees the queue through the
// Queue interface, which cluster/mailstore satisfies.
package outbound
