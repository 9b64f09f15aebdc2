package imap

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestRecordCacheBoundAndScans checks the cache's byte bound, its LRU
// order between passes, and that a pass larger than the cache keeps
// what fitted instead of evicting its own records.
func TestRecordCacheBoundAndScans(t *testing.T) {
	rec := &searchRecord{header: make([]byte, 100)}
	per := rec.size()
	c := newRecordCache(4 * per)
	blobs := make([]schema.ID, 8)
	for i := range blobs {
		blobs[i] = schema.NewID()
	}
	// Outside a pass: plain LRU.
	for _, b := range blobs[:5] {
		c.put(b, rec, 0)
	}
	if n, used := c.stats(); n != 4 || used != 4*per {
		t.Fatalf("%d entries, %d bytes; want 4, %d", n, used, 4*per)
	}
	if c.get(blobs[0], 0) != nil || c.get(blobs[4], 0) == nil {
		t.Fatal("not the least recently used evicted")
	}
	// A pass over all eight: the first four it meets or reads stay.
	pass := c.newPass()
	for _, b := range blobs {
		if c.get(b, pass) == nil {
			c.put(b, rec, pass)
		}
	}
	kept := 0
	for _, b := range blobs {
		if c.get(b, 0) != nil {
			kept++
		}
	}
	if n, _ := c.stats(); n != 4 || kept != 4 {
		t.Fatalf("%d entries, %d found after a scan; want 4", n, kept)
	}
	// The next pass finds the same four again.
	pass = c.newPass()
	hits := 0
	for _, b := range blobs {
		if c.get(b, pass) != nil {
			hits++
		} else {
			c.put(b, rec, pass)
		}
	}
	if hits != 4 {
		t.Fatalf("second scan hit %d, want 4", hits)
	}
}
