package imap

import (
	"bytes"
	"container/list"
	"context"
	"sync"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// recordBatch is how many records one read asks the account for.
const recordBatch = 1000

// recordCache is an LRU of opened search records keyed by blob id,
// bounded by the bytes they hold, shared by the sessions of a server
// like the BODYSTRUCTURE cache: blobs are immutable and their ids random
// and never reused, so an entry never goes stale, and a session only
// asks for the blobs of its own mailboxes. A record built from a message
// read for a search (one stored before records existed) is kept here
// too, so the next search of that message reads nothing.
//
// A search scans a whole mailbox, which in plain LRU order would evict
// its own records when the mailbox holds more than the cache: every scan
// would then miss on every message. So a search pass never evicts what
// it used itself (entries carry the pass that used them last): when
// only such entries are left, a new record is not kept, and the next
// pass finds the part of the mailbox that fit.
type recordCache struct {
	max int64

	mu    sync.Mutex
	used  int64
	pass  uint64     // the last pass number handed out
	order *list.List // front: most recently used
	items map[schema.ID]*list.Element
}

type recordEntry struct {
	blob schema.ID
	rec  *searchRecord
	pass uint64 // the pass that used it last
}

// newPass returns a number for one search pass.
func (c *recordCache) newPass() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pass++
	return c.pass
}

// newRecordCache returns a cache of at most max bytes; max <= 0 disables
// it.
func newRecordCache(max int64) *recordCache {
	return &recordCache{max: max, order: list.New(), items: make(map[schema.ID]*list.Element)}
}

// get returns a blob's record for a pass (0: none in particular).
func (c *recordCache) get(blob schema.ID, pass uint64) *searchRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[blob]
	if !ok {
		return nil
	}
	c.order.MoveToFront(el)
	e := el.Value.(*recordEntry)
	e.pass = max(e.pass, pass)
	return e.rec
}

// put stores a record for a pass (0: none in particular), replacing the
// blob's previous one, unless room could only be made by evicting
// records the same pass used.
func (c *recordCache) put(blob schema.ID, rec *searchRecord, pass uint64) {
	size := rec.size()
	if c.max <= 0 || size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[blob]; ok {
		c.used -= el.Value.(*recordEntry).rec.size()
		c.order.Remove(el)
		delete(c.items, blob)
	}
	for c.used+size > c.max {
		back := c.order.Back()
		e := back.Value.(*recordEntry)
		if pass != 0 && e.pass == pass {
			return // the pass's own records stay
		}
		c.order.Remove(back)
		delete(c.items, e.blob)
		c.used -= e.rec.size()
	}
	c.items[blob] = c.order.PushFront(&recordEntry{blob: blob, rec: rec, pass: pass})
	c.used += size
}

// stats returns the number of entries and the bytes accounted, for tests.
func (c *recordCache) stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.used
}

// recordSet gives one search pass the records of a view's messages:
// from the cache, else read from the account a batch at a time (the
// message asked for and the live ones after it), once per pass.
type recordSet struct {
	s    *session
	pass uint64 // the cache's number for this pass
	msgs []*viewMsg
	recs []*searchRecord
	read []bool // asked the account already
}

func newRecordSet(s *session, msgs []*viewMsg) *recordSet {
	return &recordSet{s: s, pass: s.srv.recCache.newPass(), msgs: msgs, recs: make([]*searchRecord, len(msgs)), read: make([]bool, len(msgs))}
}

// get returns message i's record, nil when it has none.
func (rs *recordSet) get(i int) *searchRecord {
	if rs == nil {
		return nil
	}
	if r := rs.recs[i]; r != nil {
		return r
	}
	cache := rs.s.srv.recCache
	var unasked map[int]*searchRecord // header-only records FETCH kept
	if r := cache.get(rs.msgs[i].info.Blob, rs.pass); r != nil {
		if !r.unasked || rs.read[i] {
			rs.recs[i] = r
			return r
		}
		unasked = map[int]*searchRecord{i: r}
	}
	if rs.read[i] {
		return nil
	}
	acct := rs.s.acct
	var idx []int
	var blobs []schema.ID
	for k := i; k < len(rs.msgs) && len(blobs) < recordBatch; k++ {
		if rs.read[k] || rs.recs[k] != nil || rs.msgs[k].expunged {
			continue
		}
		if r := cache.get(rs.msgs[k].info.Blob, rs.pass); r != nil {
			if !r.unasked {
				rs.recs[k] = r
				continue
			}
			if unasked == nil {
				unasked = make(map[int]*searchRecord)
			}
			unasked[k] = r
		}
		rs.read[k] = true
		idx = append(idx, k)
		blobs = append(blobs, rs.msgs[k].info.Blob)
	}
	rs.read[i] = true
	if len(blobs) == 0 {
		return rs.recs[i]
	}
	ctx, cancel := rs.s.opContext()
	raw, err := acct.SearchRecords(ctx, blobs)
	cancel()
	if err != nil || len(raw) != len(blobs) {
		// Records only save reads: without them the messages are read.
		rs.s.srv.log.Debug("read search records", "err", err)
		for k, h := range unasked {
			rs.recs[k] = h
		}
		return rs.recs[i]
	}
	for j, b := range raw {
		if r := openSearchRecord(b); r != nil {
			rs.recs[idx[j]] = r
			cache.put(blobs[j], r, rs.pass)
		} else if h := unasked[idx[j]]; h != nil {
			// The store keeps none: the header FETCH read stands, and
			// the account need not be asked again.
			r := &searchRecord{header: h.header, noWords: true, headerOnly: true}
			rs.recs[idx[j]] = r
			cache.put(blobs[j], r, rs.pass)
		}
	}
	return rs.recs[i]
}

// headerRecord returns a record holding a message's header section
// (what Account.Header returns) from the record cache, else read from
// the account and kept in the cache as a header-only record: a client
// lists the same page of headers again and again, and reading one costs
// a query, an AEAD open and a zstd frame, and parsing its ENVELOPE
// again (the record keeps it). Such a record is marked unasked, so that
// a search still reads the record the store keeps for the blob (with
// its words).
func (s *session) headerRecord(ctx context.Context, blob schema.ID) (*searchRecord, error) {
	if r := s.srv.recCache.get(blob, 0); r != nil {
		return r, nil
	}
	h, err := s.acct.Header(ctx, blob)
	if err != nil {
		return nil, err
	}
	r := &searchRecord{header: bytes.Clone(h), noWords: true, headerOnly: true, unasked: true}
	if s.srv.recCache.max > 0 {
		s.srv.recCache.put(blob, r, 0)
	}
	return r, nil
}

// learnHeader keeps a header-only record of message i, read because it
// had no record.
func (rs *recordSet) learnHeader(i int, header []byte) {
	if rs == nil || rs.recs[i] != nil {
		return
	}
	r := &searchRecord{header: bytes.Clone(header), noWords: true, headerOnly: true}
	rs.recs[i] = r
	rs.s.srv.recCache.put(rs.msgs[i].info.Blob, r, rs.pass)
}

// learn keeps the record of message i built from its bytes, read because
// it had none (or none with words).
func (rs *recordSet) learn(i int, msg []byte) {
	if rs == nil || rs.s.srv.recCache.max <= 0 {
		return // kept nowhere: the pass has the message itself
	}
	if r := openSearchRecord(BuildSearchRecord(msg)); r != nil {
		rs.recs[i] = r
		rs.s.srv.recCache.put(rs.msgs[i].info.Blob, r, rs.pass)
	}
}
