package raftstore

import (
	"bytes"
	"encoding/binary"
	"math"

	"go.etcd.io/bbolt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func (a *applier) swapSetting(p *schema.SwapSetting) *schema.Result {
	if p.Key == "" || len(p.Key) > bbolt.MaxKeySize {
		return fail(schema.CodeInvalid)
	}
	b := a.tx.Bucket(bucketSettings)
	cur := b.Get([]byte(p.Key))
	if p.OldAbsent != (cur == nil) || (cur != nil && !bytes.Equal(cur, p.Old)) {
		return fail(schema.CodeConflict)
	}
	if p.New == nil {
		must(b.Delete([]byte(p.Key)))
	} else {
		must(b.Put([]byte(p.Key), p.New))
	}
	return ok()
}

// lease takes, renews or releases a lease. Time is the clock of the
// leader that proposed it (Shard.timeLease), the same on every replica.
func (a *applier) lease(p *schema.Lease) *schema.Result {
	if p.Key == "" || len(p.Key) > bbolt.MaxKeySize || p.Holder.IsZero() || p.TTL < 0 {
		return fail(schema.CodeInvalid)
	}
	b := a.tx.Bucket(bucketLeases)
	k := []byte(p.Key)
	holder, expires, held := decodeLease(b.Get(k))
	mine := held && holder == p.Holder
	if p.Release {
		if mine {
			must(b.Delete(k))
		}
		return ok()
	}
	if held && !mine && expires > a.cmd.Time {
		return fail(schema.CodeConflict)
	}
	until := a.cmd.Time + p.TTL
	if p.TTL > math.MaxInt64-a.cmd.Time {
		until = math.MaxInt64
	}
	v := append(append([]byte(nil), p.Holder[:]...), binary.BigEndian.AppendUint64(nil, uint64(until))...)
	must(b.Put(k, v))
	return ok()
}

func decodeLease(v []byte) (holder schema.ID, expires int64, ok bool) {
	if len(v) != 24 {
		return holder, 0, false
	}
	copy(holder[:], v[:16])
	return holder, int64(binary.BigEndian.Uint64(v[16:])), true
}

// spool keeps a message for recipients on several shards (see
// schema.Spool). Applying it twice (a retry) changes nothing.
func (a *applier) spool(p *schema.Spool) *schema.Result {
	b, chunks := a.tx.Bucket(bucketSpool), a.tx.Bucket(bucketSpoolChunks)
	if b.Get(p.ID[:]) != nil {
		return ok()
	}
	total := uint64(p.StagedChunks) + uint64(len(p.Chunks))
	if p.ID.IsZero() || len(p.Recipients) == 0 || total == 0 || total > math.MaxUint32 {
		return fail(schema.CodeInvalid)
	}
	// Chunks staged for a spool use its id as both owner and blob.
	staged := a.tx.Bucket(bucketStaged)
	for i := uint32(0); i < p.StagedChunks; i++ {
		if v := getChunk(staged, stagedKey(p.ID, p.ID, i)); len(v) < 8 {
			return fail(schema.CodeInvalid)
		}
	}
	for i := uint32(0); i < p.StagedChunks; i++ {
		k := stagedKey(p.ID, p.ID, i)
		putChunk(chunks, chunkKey(p.ID, i), bytes.Clone(getChunk(staged, k)[8:]))
		deleteChunk(staged, k)
	}
	for j, c := range p.Chunks {
		putChunk(chunks, chunkKey(p.ID, p.StagedChunks+uint32(j)), c)
	}
	rec := schema.SpoolRecord{ID: p.ID, From: p.From, Recipients: p.Recipients, Size: p.Size,
		Chunks: uint32(total), Time: a.cmd.Time, Junk: p.Junk}
	must(b.Put(p.ID[:], rec.Marshal()))
	return ok()
}

// spoolDone drops delivered recipients; the last one takes the message.
func (a *applier) spoolDone(p *schema.SpoolDone) *schema.Result {
	b := a.tx.Bucket(bucketSpool)
	v := b.Get(p.ID[:])
	if v == nil {
		return ok() // already finished
	}
	var rec schema.SpoolRecord
	if rec.Unmarshal(v) != nil {
		return fail(schema.CodeInvalid)
	}
	done := map[schema.ID]bool{}
	for _, u := range p.Users {
		done[u] = true
	}
	left := rec.Recipients[:0]
	for _, r := range rec.Recipients {
		if !done[r.User] {
			left = append(left, r)
		}
	}
	rec.Recipients = left
	if len(left) > 0 {
		must(b.Put(p.ID[:], rec.Marshal()))
		return ok()
	}
	must(b.Delete(p.ID[:]))
	chunks := a.tx.Bucket(bucketSpoolChunks)
	for i := uint32(0); i < rec.Chunks; i++ {
		deleteChunk(chunks, chunkKey(p.ID, i))
	}
	return ok()
}
