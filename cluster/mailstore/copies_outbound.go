package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// An outbound queue entry's state changes with every delivery attempt;
// its message's chunks never change. Either may be damaged on one
// replica as a stored message may, and a queued message that does not
// open would never be sent: the queue reads the other replicas' copies
// and puts the damaged one back (schema.RepairOutbound), as for mailbox
// and message records.

// accountOn is the store's own handle on u's data (a user, or a domain's
// queue) on mail shard n, outside any session: the queue and the scrub
// read copies and repair through it.
func (s *Store) accountOn(u *directory.User, n uint32) *Account {
	return &Account{s: s, user: u.ID, address: u.Address, shard: n, keys: u.Keys}
}

// mendOutbound opens a queue entry whose state did not open (cause)
// when read at index, from the first other replica's copy that opens,
// read once that replica has applied index; a copy of the same version
// is also put back. It returns cause when no copy opens.
func (s *Store) mendOutbound(ctx context.Context, u *directory.User, n uint32, index uint64, rec schema.OutboundRecord, cause error) (schema.OutboundEntry, error) {
	a := s.accountOn(u, n)
	var entry schema.OutboundEntry
	var good *schema.OutboundRecord
	var goodNode string
	err := s.c.QueryCopies(ctx, n, raftstore.Query{Kind: raftstore.QueryOutboundEntry, User: u.ID, Blob: rec.ID}, index,
		func(node string, res *raftstore.QueryResult) bool {
			if len(res.Outbound) != 1 {
				return true
			}
			e, err := s.openOutbound(u, n, res.Outbound[0])
			if err != nil {
				return true
			}
			entry, good, goodNode = e, &res.Outbound[0], node
			return false
		})
	if good == nil {
		s.log.Error("no replica's copy of a queued message's state opens", "shard", n, "id", rec.ID.String(),
			"err", cause, "copies_err", err)
		return schema.OutboundEntry{}, cause
	}
	s.log.Warn("a replica's copy of a queued message's state did not open; answered from another replica's copy",
		"shard", n, "id", rec.ID.String(), "err", cause, "good_on", goodNode)
	if good.Version == rec.Version {
		// At another version the change since wrote over the damage.
		sum := sha256.Sum256(rec.State)
		a.repair(ctx, schema.LevelRepairRecord, []schema.Payload{&schema.RepairOutbound{ID: rec.ID, Damaged: sum[:], Sealed: good.State}})
	}
	return entry, nil
}

// mendOutboundChunks opens the message of a queue entry whose chunks,
// read at index, did not open (cause), from the first other replica's
// copy whose chunks all open, and puts back every chunk that differed.
func (s *Store) mendOutboundChunks(ctx context.Context, u *directory.User, e schema.OutboundEntry, index uint64, bad [][]byte, cause error) ([]byte, error) {
	a := s.accountOn(u, e.Shard)
	var msg []byte
	var good [][]byte
	var goodNode string
	err := s.c.QueryCopies(ctx, e.Shard, raftstore.Query{Kind: raftstore.QueryOutboundChunks, User: u.ID, Blob: e.ID}, index,
		func(node string, res *raftstore.QueryResult) bool {
			m, err := s.openChunks(u.Keys.Ring(), u.ID, e.ID, res.Chunks, e.Size)
			if err != nil {
				return true
			}
			msg, good, goodNode = m, res.Chunks, node
			return false
		})
	if good == nil {
		s.log.Error("no replica's copy of a queued message opens", "shard", e.Shard, "id", e.ID.String(),
			"err", cause, "copies_err", err)
		return nil, cause
	}
	var repairs []schema.Payload
	for i, g := range good {
		if i < len(bad) && len(bad[i]) == len(g) && !bytes.Equal(bad[i], g) {
			sum := sha256.Sum256(bad[i])
			repairs = append(repairs, &schema.RepairOutbound{ID: e.ID, Part: uint32(i) + 1, Damaged: sum[:], Sealed: g})
		}
	}
	s.log.Warn("a replica's copy of a queued message did not open; answered from another replica's copy",
		"shard", e.Shard, "id", e.ID.String(), "err", cause, "good_on", goodNode, "pieces", len(repairs))
	a.repair(ctx, schema.LevelRepairRecord, repairs)
	return msg, nil
}
