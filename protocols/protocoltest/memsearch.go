package protocoltest

import (
	"bytes"
	"context"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// SetSearchIndexer makes the store keep, like the production store
// given mailstore.Config.SearchIndexer, the search record fn builds for
// every message stored from now on; messages stored before have none.
// Nil stops it.
func (s *MemStore) SetSearchIndexer(fn func(msg []byte) []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexer = fn
}

// SearchRecords returns the search records of blobs, in order, nil for a
// blob without one or gone.
func (a *MemAccount) SearchRecords(ctx context.Context, blobs []schema.ID) ([][]byte, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	out := make([][]byte, len(blobs))
	for i, id := range blobs {
		if b := a.u.blobs[id]; b != nil && b.record != nil {
			out[i] = bytes.Clone(b.record)
		}
	}
	return out, ctx.Err()
}
