// Package imap is the IMAP frontend of a node: it adapts the go-imap/v2
// imapserver library onto protocols.Store and protocols.Account, serving
// IMAP4rev1 and IMAP4rev2 over STARTTLS and implicit TLS.
//
// What it owns:
//   - the front (front.go, relay.go): our command loop, which owns the
//     client connection, reads every command (imapwire), answers the ones
//     it owns (STARTTLS, ID, LOGOUT, refusals) and forwards the rest to the
//     library's server over an in-memory pipe, one command at a time.
//   - Server: the listener loop, connection tracking and the shared
//     BODYSTRUCTURE cache (a byte-bounded LRU keyed by blob id).
//   - session: one connection's state: the authenticated Account and the
//     selected mailbox's view.
//   - view: the per-session picture of the selected mailbox (the ordered
//     UIDs and the flags the client was last told). It is fed by
//     Account.Watch events, so sessions see each other's changes, and it
//     decides when EXISTS, RECENT, EXPUNGE, FLAGS and FETCH FLAGS updates
//     are written.
//
// Invariants:
//   - Commit before acknowledge: a command that changes mail answers OK
//     only after the Account method that committed the change returned
//     nil.
//   - Sequence numbers never move behind the client's back: a message
//     removed by another session stays in the view (invisible to FETCH and
//     SEARCH) until an EXPUNGE response may be sent (RFC 9051 section
//     7.5.1), and new messages are only addressable after their EXISTS.
//   - No FETCH response shows a keyword before a FLAGS response has
//     listed it in that session.
//   - A message is \Recent in exactly one session, the first to see it
//     (SELECT, or the update that announces it), wherever the sessions
//     are: a read-write view claims it through Account.ClaimRecent, a
//     compare-and-set in the store, or, for its own APPEND to the
//     mailbox, in the message's commit (Account.AppendClaimingRecent);
//     EXAMINE and STATUS only read the claim.
//   - Every password check goes through protocols.AuthGuard.Login, and
//     every failure answers the same NO [AUTHENTICATIONFAILED].
//   - Plaintext message bodies live only for the command that needs them;
//     only derived BODYSTRUCTUREs are cached across commands.
//   - Nothing read from the network can crash the process: literals and
//     commands are bounded by the front (imapwire.Limits) and by
//     Config.MaxMessageSize,
//     list patterns are matched without backtracking, and MIME structures deeper
//     or wider than fixed limits are not handed to the recursive library
//     parser.
//   - Logs carry no passwords and no message content; user addresses only
//     at debug level.
package imap
