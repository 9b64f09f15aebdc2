// Package node is the composition root of a mailnode process: its
// configuration (TOML, Default, Validate), the data directory and the
// secrets in it, start-up and shutdown, the admin socket, the HTTP
// endpoints (/metrics, /healthz, /readyz, and the client autoconfiguration
// documents of protocols/autoconfig), the HTTPS listener with the admin
// API and the web page (https.go, package adminweb) and the command line.
//
// Invariants:
//   - Start-up order: data directory (locked, initialized on first use) ->
//     master key and TLS certificate -> store (cluster.Open, then every
//     shard ready) -> frontends -> admin socket -> HTTP -> HTTPS. Shutdown runs the
//     other way round: frontends first, so no client is acknowledged by a
//     store that is closing, then admin, HTTP and HTTPS, then the store,
//     then the lock.
//   - One admin handler (Node.adminAPI) serves the admin socket, /api/ of
//     the HTTPS listener (behind admin tokens) and the web page, so the
//     three cannot disagree; the plain HTTP listener never serves /api/
//     or /admin/. Admin tokens, passwords and session ids are never
//     logged.
//   - One process per data directory (an exclusive lock on
//     DataDir/node.lock). The directory is mode 0700; the master key,
//     passphrase salt, TLS key, node state and admin socket are 0600.
//   - The master key is created once, at init, and never overwritten; a
//     MAC recorded at init (DataDir/node.json) refuses a different key
//     later. The node id and the mail shard count are fixed at init too.
//   - The backup key pair is made once, when the cluster has no backup
//     public key (a new data directory): the public key goes into the
//     meta shard, the identity to DataDir/backup.identity (0600) for the
//     operator to move offline. Backups never carry the master key.
//   - The frontends' certificate is picked at each handshake (tls.go):
//     reloading the files (SIGHUP, or a change seen by the check every
//     tls.reload_interval) or an ACME renewal serves the new one to new
//     connections; a pair that does not load, does not match or has
//     expired never replaces the one in use. While a node runs it handles
//     SIGHUP (each node with its own signal channel).
//   - No package-level mutable state: several nodes can run in one test
//     process, each with its own logger and Prometheus registry.
//   - Passwords, keys and message content are never logged; addresses
//     only at debug level.
//
// Only the mailnode binary (node/cmd/mailnode) and tests import this
// package.
package node
