package mailstore

import (
	"context"
	"errors"
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
			rec, err := a.openSearchRecord(part[i], sealed)
			if damagedCopy(err) {
				q := raftstore.Query{Kind: raftstore.QuerySearchRecords, Blobs: []schema.ID{part[i]}}
				failed := &raftstore.QueryResult{Chunks: [][]byte{sealed}}
				err = a.fromGoodCopy(ctx, q, failed, err, func(res *raftstore.QueryResult) error {
					if len(res.Chunks) != 1 || len(res.Chunks[0]) == 0 {
						return errors.New("no search record")
					}
					var err error
					rec, err = a.openSearchRecord(part[i], res.Chunks[0])
					return err
				})
			}
			if err != nil {
				return nil, fmt.Errorf("open search record: %w", err)
			}
			out = append(out, rec)
		}
	}
	return out, ctx.Err()
}

// openSearchRecord opens the sealed search record of one of the user's
// blobs.
func (a *Account) openSearchRecord(blob schema.ID, sealed []byte) ([]byte, error) {
	return a.s.sealer.Open(a.keys.Ring(), seal.KindSearchRecord, a.user[:], blob[:], sealed)
}
