package raftstore

import (
	"bytes"
	"math"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// enqueue adds an outbound queue entry (see schema.Enqueue). Applying it
// twice (a retried submission) changes nothing.
func (a *applier) enqueue(p *schema.Enqueue) *schema.Result {
	b, chunks := a.tx.Bucket(bucketOutbound), a.tx.Bucket(bucketOutChunks)
	if b.Get(p.ID[:]) != nil {
		return ok()
	}
	total := uint64(p.StagedChunks) + uint64(len(p.Chunks))
	if p.ID.IsZero() || p.User.IsZero() || len(p.State) == 0 || total == 0 || total > math.MaxUint32 {
		return fail(schema.CodeInvalid)
	}
	staged := a.tx.Bucket(bucketStaged)
	for i := uint32(0); i < p.StagedChunks; i++ {
		if v := getChunk(staged, stagedKey(p.User, p.ID, i)); len(v) < 8 {
			return fail(schema.CodeInvalid)
		}
	}
	for i := uint32(0); i < p.StagedChunks; i++ {
		k := stagedKey(p.User, p.ID, i)
		putChunk(chunks, chunkKey(p.ID, i), bytes.Clone(getChunk(staged, k)[8:]))
		deleteChunk(staged, k)
	}
	for j, c := range p.Chunks {
		putChunk(chunks, chunkKey(p.ID, p.StagedChunks+uint32(j)), c)
	}
	rec := schema.OutboundRecord{ID: p.ID, User: p.User, Size: p.Size, Chunks: uint32(total),
		Created: a.cmd.Time, NextAttempt: p.NextAttempt, Version: 1, State: p.State}
	must(b.Put(p.ID[:], rec.Marshal()))
	return ok()
}

// updateOutbound replaces an entry's state by compare-and-set on its
// version.
func (a *applier) updateOutbound(p *schema.UpdateOutbound) *schema.Result {
	b := a.tx.Bucket(bucketOutbound)
	v := b.Get(p.ID[:])
	if v == nil {
		return fail(schema.CodeNoSuchMessage)
	}
	var rec schema.OutboundRecord
	if rec.Unmarshal(v) != nil || len(p.State) == 0 {
		return fail(schema.CodeInvalid)
	}
	if rec.Version != p.Version {
		return fail(schema.CodeConflict)
	}
	rec.Version++
	rec.NextAttempt, rec.Held, rec.Finished, rec.State = p.NextAttempt, p.Held, p.Finished, p.State
	must(b.Put(p.ID[:], rec.Marshal()))
	return ok()
}

// deleteOutbound removes an entry and its chunks.
func (a *applier) deleteOutbound(p *schema.DeleteOutbound) *schema.Result {
	b := a.tx.Bucket(bucketOutbound)
	v := b.Get(p.ID[:])
	if v == nil {
		return ok()
	}
	var rec schema.OutboundRecord
	if rec.Unmarshal(v) != nil {
		return fail(schema.CodeInvalid)
	}
	must(b.Delete(p.ID[:]))
	chunks := a.tx.Bucket(bucketOutChunks)
	for i := uint32(0); i < rec.Chunks; i++ {
		deleteChunk(chunks, chunkKey(p.ID, i))
	}
	return ok()
}
