// Package pop3 is the POP3 frontend: a server for RFC 1939 (USER/PASS,
// STAT, LIST, UIDL, TOP, RETR, DELE, RSET, NOOP, QUIT), RFC 2449 (CAPA,
// extended response codes, PIPELINING), RFC 2595 (STLS), RFC 5034 (SASL
// PLAIN through go-sasl) and implicit TLS, over protocols.Store.
//
// The maildrop is the user's INBOX. At login the session locks it and
// takes one snapshot; message numbers refer to that snapshot for the whole
// session, whatever IMAP or delivery do meanwhile.
//
// Invariants:
//   - Deletions happen only in the UPDATE state: DELE marks, RSET unmarks,
//     and QUIT in the TRANSACTION state expunges the marked messages in
//     one store call. "+OK" to that QUIT is sent only after the call
//     returned nil, that is after the expunge was committed. A dropped
//     connection, an idle timeout or a server shutdown deletes nothing.
//   - One POP3 session per user per Server (the RFC 1939 exclusive
//     maildrop lock); a second login gets "-ERR [IN-USE]".
//   - Every password check goes through protocols.AuthGuard, and unknown
//     users and wrong passwords get the same answer. Plaintext credentials
//     are refused before TLS when TLS is configured.
//   - Input is bounded: command lines (255 octets, 8 KiB for AUTH and SASL
//     responses), bad commands and failed logins per connection, idle,
//     write and TLS handshake timeouts.
//     Bad input gets "-ERR" and never ends the process.
//   - Logs carry a connection id, the client IP, command names and
//     results; never passwords, SASL payloads or message content, and
//     user addresses only at debug level.
package pop3
