// Package protocols owns what the SMTP, IMAP and POP3 frontends share: the
// mail-store interface they consume (Store and Account), the protocol error
// type, TLS settings, SASL helpers, the limits that protect a node from
// abusive clients (failed-login throttling, connection caps, deadlines for
// the TLS handshake and the login), and the small observer interfaces
// (observe.go, AuthObserver) through which the node counts what the
// frontends do, without this tree importing a metrics library. The
// SessionRegistry (sessions.go) keeps a node's open authenticated
// sessions so the node can end them, and LoginRecorder hands every
// decided login to the node's login history.
//
// Invariants:
//   - Frontends reach mail only through Store and Account. They never import
//     raft or bbolt, so the same frontend serves a local shard or a routed
//     cluster.
//   - A frontend acknowledges (SMTP 250, IMAP OK, POP3 +OK after QUIT) only
//     after the Store call that committed the change returned nil.
//   - Credentials are never logged, and failed logins look the same whether
//     or not the user exists.
//   - Every authenticated session registers with AuthGuard.TrackSession
//     right after its login and unregisters when it ends or logs out;
//     ending it closes its connection, and the session cleans up on its
//     own read error.
package protocols
