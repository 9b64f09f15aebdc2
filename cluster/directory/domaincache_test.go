package directory

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestDomainInfosAreTiedToTheSealedRecord(t *testing.T) {
	var c domainInfos
	rec := schema.DomainRecord{ID: schema.NewID(), Sealed: []byte("sealed-1")}
	if _, ok := c.get(rec); ok {
		t.Fatal("hit in an empty cache")
	}
	c.put(rec, domainInfo{Name: "example.test", Mode: KeyModeDomain})
	if info, ok := c.get(rec); !ok || info.Name != "example.test" || info.Mode != KeyModeDomain {
		t.Fatalf("after put: %+v, %v", info, ok)
	}
	resealed := rec
	resealed.Sealed = []byte("sealed-2")
	if _, ok := c.get(resealed); ok {
		t.Fatal("an entry opened from other sealed bytes was served")
	}
	other := schema.DomainRecord{ID: schema.NewID(), Sealed: rec.Sealed}
	if _, ok := c.get(other); ok {
		t.Fatal("an entry of another domain was served")
	}
	for i := 0; i < domainInfoEntries+10; i++ {
		c.put(schema.DomainRecord{ID: schema.NewID(), Sealed: []byte("x")}, domainInfo{})
	}
	if n := len(c.entries); n > domainInfoEntries {
		t.Fatalf("%d entries, bound %d", n, domainInfoEntries)
	}
}
