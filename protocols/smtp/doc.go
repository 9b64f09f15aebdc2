// Package smtp owns the node's SMTP frontends: the MX server that accepts
// mail for local users from other servers (port 25), and the submission
// server where a node's own users send mail (587 with STARTTLS, 465 with
// implicit TLS). It adapts github.com/emersion/go-smtp onto the mail store
// interface protocols.Store; it never sees raft or bbolt.
//
// Invariants:
//   - Commit before acknowledge: DATA and BDAT LAST are answered 250 only
//     after Store.Deliver returned nil (and, where they apply,
//     Outbound.Submit, Outbound.SaveSent and Forwarder.Forward), that is
//     after the message is committed through Raft. Any other outcome gets a 4xx or 5xx reply, so
//     a sender never believes a lost message was accepted.
//   - Everything read from the network is bounded: command lines
//     (Config.MaxLineLength), messages (Config.MaxMessageBytes, enforced
//     while reading), the header section (Config.MaxHeaderBytes), recipients
//     (Config.MaxRecipients), and time (read, write, data and store
//     timeouts). The header section is parsed before a message is accepted,
//     and a malformed one is refused with 554 5.6.0.
//   - Passwords are checked only through protocols.AuthGuard, only after
//     TLS (unless Config.AllowInsecureAuth, for tests), and an unknown user
//     and a wrong password get the same reply. The Account opened by a login
//     is closed as soon as its address is known: SMTP needs nothing else.
//   - A submission client may only use its own address (or a +sub-address
//     of it) as envelope sender, and may only send to local recipients
//     until outbound delivery exists.
//   - Mail judged junk (DMARC quarantine, the filter's junk verdict) is
//     never forwarded out of the cluster (withholdForwards); a forwarded
//     copy keeps the transaction's REQUIRETLS.
//   - Logs carry the connection id, remote IP, outcomes and sizes; addresses
//     appear only at debug level; passwords and message content never.
//   - Close stops the listeners, closes every connection and returns only
//     when no session call (and so no store call) is still running.
package smtp
