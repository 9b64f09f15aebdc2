package imap

import (
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestBodyStructureCache(t *testing.T) {
	leaf := func(desc string) imap.BodyStructure {
		return &imap.BodyStructureSinglePart{Type: "text", Subtype: "plain", Description: desc, Extended: &imap.BodyStructureSinglePartExt{}}
	}
	one := bodyStructureSize(leaf("x")) + 64
	c := newBodyStructureCache(3 * one)
	ids := []schema.ID{schema.NewID(), schema.NewID(), schema.NewID(), schema.NewID()}
	for _, id := range ids[:3] {
		c.put(id, leaf("x"))
	}
	if n, used := c.stats(); n != 3 || used != 3*one {
		t.Fatalf("after 3 puts: %d entries, %d bytes", n, used)
	}
	// Touch the oldest so the second becomes least recently used.
	if _, ok := c.get(ids[0]); !ok {
		t.Fatal("missing entry")
	}
	c.put(ids[3], leaf("x"))
	if _, ok := c.get(ids[1]); ok {
		t.Error("least recently used entry not evicted")
	}
	for _, id := range []schema.ID{ids[0], ids[2], ids[3]} {
		if _, ok := c.get(id); !ok {
			t.Errorf("entry evicted wrongly")
		}
	}
	// An entry larger than the whole cache is not kept.
	huge := leaf(string(make([]byte, 4*one)))
	c.put(schema.NewID(), huge)
	if n, used := c.stats(); n != 3 || used > 3*one {
		t.Errorf("after oversized put: %d entries, %d bytes", n, used)
	}
	// A disabled cache keeps nothing.
	off := newBodyStructureCache(-1)
	off.put(ids[0], leaf("x"))
	if _, ok := off.get(ids[0]); ok {
		t.Error("disabled cache returned an entry")
	}
}
