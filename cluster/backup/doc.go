// Package backup owns the cluster's encrypted, geo-distributed backups:
// backup targets (file:// directories and s3:// buckets, each labelled
// with a region), backup manifests, encryption to the cluster's backup
// public key, the scheduler, restore drills, retention and progress
// reporting.
//
// A backup is one consistent hot copy of every shard of this node (meta
// first), taken with raftstore.Shard.WriteState while writes continue,
// compressed with zstd and encrypted with age to a hybrid post-quantum
// recipient (ML-KEM-768 + X25519). On every target it is laid out as
//
//	<id>/shard-<n>.age   one object per shard
//	<id>/file-<name>.age small data-directory files (node state, key salt)
//	<id>/manifest.json   written last: the backup is complete on that target
//	<id>/verify.json     the newest verification result, if any
//	<id>/drill.json      the newest restore drill result, if any
//
// where <id> is the UTC creation time and a random suffix, so ids sort by
// age.
//
// Invariants:
//   - No plaintext leaves the process: shard copies are compressed and
//     encrypted in a pipeline before the first byte reaches a temporary
//     file, and only those encrypted files are uploaded. The one
//     exception is the copy of the shard holding the key store (the meta
//     shard, with Config.KeyStore): it is rebuilt without the key store
//     in the run's temporary directory (mode 0600, removed after), and
//     holds the same sealed records as the replica's own state file.
//   - The key store is never part of a backup: each target keeps only its
//     current copy, KeyStoreObject at its root (keystore.go). Manifests and
//     verification records hold ids, counts, sizes and hashes only.
//   - The cluster holds only the public key (a meta-shard setting). The
//     identity that decrypts is needed only to verify, drill and restore.
//   - A backup is complete only when its manifest is on every configured
//     target. Shard objects go first and the manifest last; a file target
//     publishes an object by renaming a fully written temporary file and
//     an S3 PUT is atomic, so an interrupted run never leaves a manifest
//     behind. Partial backups older than the newest complete one are
//     deleted by the next run or by retention. Deleting a backup removes
//     its manifest first, so it stops counting as complete at once.
//   - Only objects under directories named like backup ids are ever
//     listed or deleted; anything else on a target is left alone.
//   - One backup, verification, restore or retention pass runs at a time
//     per Runner.
package backup
