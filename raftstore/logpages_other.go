//go:build !linux

package raftstore

// dropCachedPages does nothing where the page cache cannot be advised.
func dropCachedPages(string) error { return nil }
