// Package raftstore owns one shard: a hashicorp/raft group whose log lives
// in hashicorp/raft-wal segment files (wal/, see openRaftLog), whose stable
// store is a bbolt file (raft.db, raft-boltdb/v2's layout, see logStore)
// and whose state machine is a bbolt file holding the mail data model
// (meta records in shard 0, mailboxes and messages in mail shards).
//
// Invariants:
//   - State changes only through Apply of a committed Raft entry; Apply
//     returns after the entry is committed (fsynced on a quorum) and applied.
//   - The FSM is deterministic: it uses the time carried in the command,
//     never its own clock, and allocates UIDs, UIDVALIDITY and MODSEQ itself.
//   - A request id is applied at most once: the FSM keeps a bounded table of
//     applied request ids and answers a retry with the first result.
//   - The FSM stores its applied index in the same bbolt transaction as the
//     data, so entries replayed after a restart are skipped exactly.
//   - The shard never sees plaintext: user data arrives sealed (package
//     seal) and is stored as it came.
//   - Change events of a command are handed to subscribers once it is
//     applied: after its transaction commits where every batch commits,
//     at once where commits are grouped.
//   - A follower commits what it applied in groups (fsm.ApplyBatch), and
//     so does a leader with Config.GroupLeaderCommits (mail shards); any
//     other leader commits every batch before answering. A group commits before a snapshot or
//     a copy of the state (View), so the log holds whatever the state
//     file lacks; queries read inside the pending group (fsm.read), so a
//     read sees every applied entry without waiting for the commit.
package raftstore
