package directory

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestRouteCacheHoldsForOneMetaIndex(t *testing.T) {
	var c routeCache
	ada := &User{ID: schema.NewID(), Address: "ada@example.test", Shard: 3}
	if _, ok := c.get(7, "ada@example.test"); ok {
		t.Fatal("hit in an empty cache")
	}
	c.put(7, "ada@example.test", []*User{ada})
	got, ok := c.get(7, "ada@example.test")
	if !ok || len(got) != 1 || got[0].ID != ada.ID || got[0].Shard != 3 {
		t.Fatalf("after put: %+v, %v", got, ok)
	}
	// What a caller gets is its own: changing it changes no later answer.
	got[0].AppPassword = "phone"
	ada.Shard = 4
	if again, _ := c.get(7, "ada@example.test"); again[0].AppPassword != "" || again[0].Shard != 3 {
		t.Fatalf("a caller's change leaked into the cache: %+v", again[0])
	}
	if _, ok := c.get(8, "ada@example.test"); ok {
		t.Fatal("an entry read at index 7 was served at index 8")
	}
	if _, ok := c.get(7, "bob@example.test"); ok {
		t.Fatal("an address never resolved was served")
	}
	// A read that started before the entries' index is not kept, and the
	// newer entries stay.
	c.put(9, "bob@example.test", []*User{{ID: schema.NewID()}})
	c.put(8, "ada@example.test", []*User{ada})
	if _, ok := c.get(8, "ada@example.test"); ok {
		t.Fatal("a read older than the cache's index was kept")
	}
	if _, ok := c.get(9, "bob@example.test"); !ok {
		t.Fatal("an older read dropped the newer entries")
	}
	// Index 0 (the meta replica not open) is never cached.
	c.put(0, "cyd@example.test", []*User{ada})
	if _, ok := c.get(0, "cyd@example.test"); ok {
		t.Fatal("served at index 0")
	}
	for i := 0; i < routeEntries+10; i++ {
		c.put(9, string(rune('a'+i%26))+schema.NewID().String()+"@example.test", []*User{ada})
	}
	if n := len(c.entries); n > routeEntries {
		t.Fatalf("%d entries, bound %d", n, routeEntries)
	}
}
