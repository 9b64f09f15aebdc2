package imap

import (
	"container/list"
	"sync"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// bodyStructureCache is an LRU of computed BODYSTRUCTUREs keyed by blob
// id, bounded by an estimate of the bytes it holds. Blobs are immutable, so
// an entry never goes stale; copies of a message share their blob and so
// their entry. Cached structures are shared and must not be modified.
type bodyStructureCache struct {
	max int64

	mu    sync.Mutex
	used  int64
	order *list.List // front: most recently used
	items map[schema.ID]*list.Element
}

type bsEntry struct {
	blob schema.ID
	bs   imap.BodyStructure
	size int64
}

// newBodyStructureCache returns a cache of at most max bytes; max <= 0
// disables caching.
func newBodyStructureCache(max int64) *bodyStructureCache {
	return &bodyStructureCache{max: max, order: list.New(), items: make(map[schema.ID]*list.Element)}
}

func (c *bodyStructureCache) get(blob schema.ID) (imap.BodyStructure, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[blob]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*bsEntry).bs, true
}

func (c *bodyStructureCache) put(blob schema.ID, bs imap.BodyStructure) {
	size := bodyStructureSize(bs) + 64
	if c.max <= 0 || size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[blob]; ok {
		c.order.MoveToFront(el)
		return
	}
	for c.used+size > c.max {
		back := c.order.Back()
		e := back.Value.(*bsEntry)
		c.order.Remove(back)
		delete(c.items, e.blob)
		c.used -= e.size
	}
	c.items[blob] = c.order.PushFront(&bsEntry{blob: blob, bs: bs, size: size})
	c.used += size
}

// stats returns the number of entries and the bytes accounted, for tests.
func (c *bodyStructureCache) stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.used
}

// bodyStructureSize estimates the memory a body structure holds.
func bodyStructureSize(bs imap.BodyStructure) int64 {
	const node = 160 // struct headers, pointers and slice headers
	params := func(m map[string]string) int64 {
		var n int64
		for k, v := range m {
			n += int64(len(k)+len(v)) + 48
		}
		return n
	}
	disp := func(d *imap.BodyStructureDisposition) int64 {
		if d == nil {
			return 0
		}
		return int64(len(d.Value)) + params(d.Params) + 48
	}
	strs := func(l []string) int64 {
		var n int64
		for _, s := range l {
			n += int64(len(s)) + 16
		}
		return n
	}
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		n := int64(node + len(bs.Type) + len(bs.Subtype) + len(bs.ID) + len(bs.Description) + len(bs.Encoding))
		n += params(bs.Params)
		if bs.Extended != nil {
			n += disp(bs.Extended.Disposition) + strs(bs.Extended.Language) + int64(len(bs.Extended.Location))
		}
		if m := bs.MessageRFC822; m != nil {
			n += node + envelopeSize(m.Envelope) + bodyStructureSize(m.BodyStructure)
		}
		return n
	case *imap.BodyStructureMultiPart:
		n := int64(node + len(bs.Subtype))
		for _, c := range bs.Children {
			n += bodyStructureSize(c)
		}
		if bs.Extended != nil {
			n += params(bs.Extended.Params) + disp(bs.Extended.Disposition) + strs(bs.Extended.Language) + int64(len(bs.Extended.Location))
		}
		return n
	}
	return node
}

func envelopeSize(e *imap.Envelope) int64 {
	if e == nil {
		return 0
	}
	n := int64(256 + len(e.Subject) + len(e.MessageID))
	for _, id := range e.InReplyTo {
		n += int64(len(id)) + 16
	}
	for _, l := range [][]imap.Address{e.From, e.Sender, e.ReplyTo, e.To, e.Cc, e.Bcc} {
		for _, a := range l {
			n += int64(len(a.Name)+len(a.Mailbox)+len(a.Host)) + 48
		}
	}
	return n
}
