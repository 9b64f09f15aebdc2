// Package targets starts and stops the mail servers the benchmark
// compares, each in its own directory on loopback ports:
//
//   - single: one mailnode process with the real settings (fsync on,
//     encryption on), configured through its TOML file and admin CLI;
//   - cluster3: three mailnode processes with the same settings forming
//     one cluster (three replicas of every shard, one region per node);
//     node 1 bootstraps it, nodes 2 and 3 join it with a token, and Start
//     returns once every shard has a leader and three voters. It also
//     kills and restarts nodes for the failover workload;
//   - dovecot: Dovecot (IMAP, POP3, LMTP) and Postfix (SMTP) from Debian's
//     packages, with private configuration files, fsync on every write,
//     installed with apt-get when missing and allowed.
//
// Invariants: every listener binds 127.0.0.1; every wait is bounded;
// Stop ends every process a target started (its process group) and is
// idempotent; every target serves the same certificate, which clients
// verify; users get the same argon2id password hashing on every target.
package targets
