// Package e2e holds the end-to-end acceptance tests of the mailnode
// binary (issue #2: a node that really serves mail). It has no
// production code: its tests build ./node/cmd/mailnode once, start it as
// a separate process on loopback ports with a temporary data directory,
// administer it with its own CLI, and drive it with real client
// libraries only: net/smtp and go-smtp for SMTP, go-imap/v2's imapclient
// for IMAP, Python's standard poplib for POP3 (testdata/pop3client.py),
// and raw TCP for what a library cannot express.
//
// Invariants the tests hold themselves to:
//   - Clients trust exactly the certificate the node generated at init
//     (DIR/tls/cert.pem) for the node's hostname; nothing skips
//     verification.
//   - No fixed sleeps: readiness, IDLE updates, shutdowns and freed
//     connection slots are polled or awaited with deadlines, and every
//     loop is bounded.
//   - A node's log is written outside its data directory, so the canary
//     scan can cover both, and every node is stopped (or killed) by the
//     test that started it.
//
// Set MAILNODE_E2E_BIN to test a prebuilt binary instead of building
// one. The POP3 tests need python3; they are skipped without it unless
// MAILCLUSTER_REQUIRE_PYTHON is set, in which case they fail. The
// stock-client test (stockclients_test.go) runs mbsync (isync),
// fetchmail and neomutt (in tmux) against a node probed with hostile
// input; each is skipped when missing unless
// MAILCLUSTER_REQUIRE_STOCKCLIENTS is set.
package e2e
