// Package bench is the benchmark harness: it compares this project's
// mail server with established ones on the same machine, in the same run,
// with the same client code and the same message corpus, and records
// every figure so regressions show.
//
// A run (Run) generates the corpus (package corpus), measures the
// machine's physical limits (package limits), starts every target
// (package targets: single = one mailnode; cluster3 = three mailnode
// processes forming one cluster with three replicas per shard; dovecot =
// Dovecot + Postfix) in a temporary directory on loopback, runs the
// workloads (package workload) in a fixed order — smtp-ingest with its
// correctness check, storage, imap-mixed, pop3-drain, smtp-ingest-sizes
// (smtp-ingest once per fixed message size, each checked), and on cluster3
// failover (kill a shard's leader under SMTP load, then check that no
// acknowledged message was lost or duplicated) — each workload on every
// target in turn before the next, a target stopped between its turns so
// that only the one measured runs — and stops them. Package
// report turns the result into JSON, Markdown with ratios ours/peer, and
// SVG charts; WriteResults and WriteDocs write them. bench/cmd/mailbench
// is the command line.
//
// Invariants: nothing in production imports bench; every wait and every
// load loop is bounded in count and in time; only loopback addresses are
// used; a target is always stopped, whatever happened; speed never fails
// a run, but an acknowledged message that is missing, different or
// duplicated does.
package bench
