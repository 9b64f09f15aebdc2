// Package admin is the node's administration interface: HTTP with JSON
// bodies over a unix socket in the data directory (DataDir/admin.sock,
// mode 0600), and the client the mailnode CLI uses to reach it. Access
// control is the file system's: only the user who owns the data directory
// can connect.
//
// Invariants:
//   - Passwords travel only in request bodies, and secrets the node
//     generates (app passwords, TOTP keys, recovery codes) only in
//     response bodies, once; neither side logs bodies, and request paths
//     (which hold addresses and app password names) are logged at debug
//     level only.
//   - Every error the store returns reaches the client with a stable code,
//     and the client turns the code back into the schema sentinel, so
//     callers branch with errors.Is on either side of the socket.
//   - A request is bounded in size and time.
package admin
