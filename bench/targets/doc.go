// Package targets starts and stops the mail servers the benchmark
// compares, each in its own directory on loopback ports:
//
//   - single: one mailnode process with the real settings (fsync on,
//     encryption on), configured through its TOML file and admin CLI;
//   - dovecot: Dovecot (IMAP, POP3, LMTP) and Postfix (SMTP) from Debian's
//     packages, with private configuration files, fsync on every write,
//     installed with apt-get when missing and allowed.
//
// cluster3 (three mailnode processes, replication factor 3) plugs in as
// one more Target when clustering lands.
//
// Invariants: every listener binds 127.0.0.1; every wait is bounded;
// Stop ends every process a target started (its process group) and is
// idempotent; every target serves the same certificate, which clients
// verify; users get the same argon2id password hashing on every target.
package targets
