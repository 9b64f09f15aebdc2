// Package workload holds the benchmark's workloads. Each drives a
// started target through real client libraries (go-smtp, go-imap/v2
// imapclient, the harness's POP3 client) and returns raw figures:
//
//   - smtp-ingest (Ingest): concurrent SMTP clients deliver the corpus;
//     messages/s and the latency of each transaction up to the final 250;
//     then Verify fetches every acknowledged message back over IMAP and
//     compares it by SHA-256 (a mismatch fails the run);
//     smtp-ingest-sizes runs Ingest and Verify once per fixed message
//     size, on mailboxes that already hold mail (InboxCounts, Before);
//   - imap-mixed (IMAP): concurrent sessions doing what mail clients do;
//     operations/s and latency per command;
//   - pop3-drain (POP3): download and delete whole maildrops;
//   - storage (Storage): disk bytes per delivered byte after compaction;
//   - failover (Failover, targets of several nodes only): kill the leader
//     of a shard under SMTP load; the time until the shard acknowledges a
//     write again, the writes refused meanwhile (retried), then every
//     acknowledged message must be read back exactly once.
//
// On a target of several nodes (Env.Nodes) the workers spread over the
// nodes round-robin, and Verify reads each message through another node
// than the one that acknowledged it.
//
// Invariants: the same code and the same corpus drive every target; every
// loop is bounded in count and in time and stops by itself; only
// loopback addresses are dialled; concurrent workers never share a user,
// so IMAP sessions and POP3 maildrop locks do not contend with each other.
package workload
