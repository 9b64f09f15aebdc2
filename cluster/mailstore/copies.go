package mailstore

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// A message's sealed pieces (its chunks, its search record) are the same
// bytes on every replica of its shard: a blob never changes once
// appended. A copy that does not open under its user's key was handed
// back by a disk with other bytes than were written, and bbolt, which
// checks no checksum of the values it stores, does not notice. The store
// then reads the other replicas' copies, answers from one that opens,
// and has every piece that differs from it put back on all replicas
// (schema.RepairBlob), so the damaged replica mends without a rebuild.

// repairWait bounds the commit of the repairs found by one read.
const repairWait = 10 * time.Second

// damagedCopy reports whether err is what opening a sealed value whose
// bytes changed gives: a failed authentication, or a header that no
// longer reads (its format or key id damaged).
func damagedCopy(err error) bool {
	return errors.Is(err, seal.ErrAuth) || errors.Is(err, seal.ErrMalformed) || errors.Is(err, seal.ErrNoKey)
}

// queryOpen runs an immutable query (raftstore.Query.Immutable) and
// hands the answer to open. When open finds the copy damaged, the other
// replicas' copies are tried (fromGoodCopy).
func (a *Account) queryOpen(ctx context.Context, q raftstore.Query, open func(*raftstore.QueryResult) error) error {
	res, err := a.query(ctx, q)
	if err != nil {
		return err
	}
	if err = open(res); err == nil || !damagedCopy(err) {
		return err
	}
	return a.fromGoodCopy(ctx, q, res, err, open)
}

// fromGoodCopy answers q, whose answer failed to open with err,
// from the first replica's copy that open accepts, and puts back from
// it every piece that a copy read on the way held other bytes of. It
// returns err when no copy opens (the same damage everywhere, or a key
// this node lacks): there is nothing better to answer with.
func (a *Account) fromGoodCopy(ctx context.Context, q raftstore.Query, failed *raftstore.QueryResult, err error, open func(*raftstore.QueryResult) error) error {
	q.User = a.user
	bad := []*raftstore.QueryResult{failed}
	var badNodes []string
	var good *raftstore.QueryResult
	var goodNode string
	qerr := a.s.c.QueryCopies(ctx, a.shard, q, func(node string, res *raftstore.QueryResult) bool {
		if open(res) == nil {
			good, goodNode = res, node
			return false
		}
		bad = append(bad, res)
		badNodes = append(badNodes, node)
		return true
	})
	if good == nil {
		a.s.log.Error("no replica's copy of a message opens", "shard", a.shard, "blob", blobOf(q),
			"err", err, "copies_read", len(bad)-1, "copies_err", qerr)
		return err
	}
	repairs := damagedPieces(q, bad, good)
	a.s.log.Warn("a replica's copy of a message did not open; answered from another replica's copy",
		"shard", a.shard, "blob", blobOf(q), "err", err, "damaged_on", badNodes, "good_on", goodNode, "pieces", len(repairs))
	if len(repairs) > 0 {
		a.repair(ctx, repairs)
	}
	return nil
}

// damagedPieces returns a repair for every piece of good that one of
// bad holds other bytes of, at the same length (damage keeps a value's
// length; bbolt finds a changed length itself).
func damagedPieces(q raftstore.Query, bad []*raftstore.QueryResult, good *raftstore.QueryResult) []*schema.RepairBlob {
	var out []*schema.RepairBlob
	for i, g := range good.Chunks {
		for _, b := range bad {
			if i >= len(b.Chunks) || len(b.Chunks[i]) != len(g) || bytes.Equal(b.Chunks[i], g) {
				continue
			}
			r := &schema.RepairBlob{Blob: q.Blob, Index: uint32(i), Sealed: g}
			if q.Kind == raftstore.QuerySearchRecords {
				r = &schema.RepairBlob{Blob: q.Blobs[i], SearchRecord: true, Sealed: g}
			}
			out = append(out, r)
			break
		}
	}
	return out
}

// repair commits the repairs, each on every replica of the account's
// shard. A failure is logged: the answer came from a good copy anyway,
// and the next read of the damaged copy finds it again.
func (a *Account) repair(ctx context.Context, repairs []*schema.RepairBlob) {
	if a.s.c.CommandLevel() < schema.LevelRepairBlob {
		a.s.log.Warn("damaged copy left as it is: a node of the cluster runs software that cannot mend it",
			"shard", a.shard)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), repairWait)
	defer cancel()
	for _, r := range repairs {
		r.User = a.user
		if _, err := a.s.c.Apply(ctx, a.shard, r); err != nil {
			a.s.log.Warn("put back a damaged copy of a message", "shard", a.shard, "blob", r.Blob, "err", err)
		}
	}
}

// blobOf names the blob a query reads, for logs.
func blobOf(q raftstore.Query) schema.ID {
	if q.Kind == raftstore.QuerySearchRecords && len(q.Blobs) > 0 {
		return q.Blobs[0]
	}
	return q.Blob
}
