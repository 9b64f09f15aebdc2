package mailstore

import (
	"context"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// searchRecordsPerQuery is how many blobs' search records one query
// reads.
const searchRecordsPerQuery = 1000

// SearchRecords returns the opened search records of blobs, in order,
// nil for a blob stored without one (before search records existed, or
// by a node without an indexer) or gone. A mailbox is read in queries of
// a thousand records, a few round trips however large it is.
func (a *Account) SearchRecords(ctx context.Context, blobs []schema.ID) ([][]byte, error) {
	out := make([][]byte, 0, len(blobs))
	for len(blobs) > 0 {
		part := blobs[:min(len(blobs), searchRecordsPerQuery)]
		blobs = blobs[len(part):]
		res, err := a.query(ctx, raftstore.Query{Kind: raftstore.QuerySearchRecords, Blobs: part})
		if err != nil {
			return nil, fmt.Errorf("read search records: %w", err)
		}
		if len(res.Chunks) != len(part) {
			return nil, fmt.Errorf("read search records: %d answers for %d blobs", len(res.Chunks), len(part))
		}
		for i, sealed := range res.Chunks {
			if len(sealed) == 0 {
				out = append(out, nil)
				continue
			}
			rec, err := a.s.sealer.Open(a.keys.Ring(), seal.KindSearchRecord, a.user[:], part[i][:], sealed)
			if err != nil {
				return nil, fmt.Errorf("open search record: %w", err)
			}
			out = append(out, rec)
		}
	}
	return out, ctx.Err()
}
