package directory

import (
	"fmt"
	"sync"

	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// domainInfoEntries bounds the opened domain records kept (a cluster
// serving more domains opens the rest as before).
const domainInfoEntries = 4096

// domainInfos keeps the opened sealed part of domain records, so that a
// recipient's lookup (several per message) does not open its domain's
// record each time. An entry is tied to the exact sealed bytes it was
// opened from: a changed record is sealed anew and misses, so an entry
// never outlives the record it came from. It holds a domain's name and
// key mode, no key.
type domainInfos struct {
	mu      sync.Mutex
	entries map[schema.ID]domainInfoEntry
}

type domainInfoEntry struct {
	sealed string
	info   domainInfo
}

func (c *domainInfos) get(rec schema.DomainRecord) (domainInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[rec.ID]
	if !ok || e.sealed != string(rec.Sealed) {
		return domainInfo{}, false
	}
	return e.info, true
}

func (c *domainInfos) put(rec schema.DomainRecord, info domainInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= domainInfoEntries {
		c.entries = map[schema.ID]domainInfoEntry{}
	}
	c.entries[rec.ID] = domainInfoEntry{sealed: string(rec.Sealed), info: info}
}

// openDomainInfo returns the sealed part of a domain record.
func (d *Directory) openDomainInfo(rec schema.DomainRecord) (domainInfo, error) {
	if info, ok := d.domains.get(rec); ok {
		return info, nil
	}
	var info domainInfo
	if err := d.openJSON(d.keys.meta, seal.KindDomainInfo, rec.ID, rec.Sealed, &info); err != nil {
		return info, fmt.Errorf("open domain record: %w", err)
	}
	d.domains.put(rec, info)
	return info, nil
}
