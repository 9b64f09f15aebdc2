// Package protocoltest holds the test helpers every frontend's tests share:
// TLS configurations for a loopback server and its clients and an
// in-memory mail store (MemStore, wrapped for tests by Env) with the
// semantics of the production store: the sentinel errors, UID, MODSEQ
// and UIDVALIDITY allocation, mailbox hierarchy rules and change events
// the frontends rely on.
//
// Invariants of MemStore:
//   - Every call is atomic under one mutex, and events caused by a write
//     are queued on every watcher before the write returns.
//   - Everything returned is a copy: callers cannot change stored state.
//
// The package imports only protocols and raftstore/schema, never the
// storage engine, so frontend tests do not depend on it. Nothing in
// production imports it.
package protocoltest
