package mailstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// ScrubReport is what a scrub of one replica read.
type ScrubReport struct {
	// Users and Blobs count the users and the stored messages (blobs,
	// which copies share) whose pieces were read.
	Users, Blobs int
	// Bytes counts the sealed bytes read.
	Bytes int64
	// Damaged counts the messages with a piece in this replica that did
	// not open; each was put back from another replica's copy unless it
	// is also counted in Unreadable.
	Damaged int
	// Unreadable counts the messages of which no replica's copy opens.
	Unreadable int
}

// Scrub reads every piece of every message that this node's replica of
// mail shard n holds (chunks and search records) and opens it under its
// user's key, so that damage is found before a client meets it: a piece
// that does not open is handled as a read that met it would handle it
// (fromGoodCopy), from another replica's copy, and put back. pace, if
// set, is told the sealed bytes of each message before it is read and
// may wait, to bound the scrub's share of the disk; its error ends the
// scrub. Users deleted and messages expunged meanwhile are passed over.
func (s *Store) Scrub(ctx context.Context, n uint32, pace func(ctx context.Context, bytes int) error) (ScrubReport, error) {
	var rep ScrubReport
	var sh *raftstore.Shard
	for _, r := range s.c.Shards() {
		if r.ID() == n {
			sh = r
		}
	}
	if sh == nil || n == 0 {
		return rep, fmt.Errorf("scrub shard %d: no mail replica of it here", n)
	}
	// View commits what the replica has applied, so the scrub covers
	// every message stored before it began; the walk then reads the
	// state file as committed, holding off no apply.
	var users []schema.ID
	if err := sh.View(func(r *raftstore.Reader) error { users = r.MailUsers(); return nil }); err != nil {
		return rep, fmt.Errorf("scrub shard %d: %w", n, err)
	}
	for _, id := range users {
		u, err := s.dir.UserByID(ctx, id)
		if errors.Is(err, schema.ErrNoSuchUser) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("scrub shard %d: user %s: %w", n, id, err)
		}
		var blobs []schema.ID
		if err := sh.ReadCommitted(func(r *raftstore.Reader) (err error) { blobs, err = r.BlobIDs(id); return err }); err != nil {
			if errors.Is(err, schema.ErrNoSuchUser) {
				continue
			}
			return rep, fmt.Errorf("scrub shard %d: user %s: %w", n, id, err)
		}
		rep.Users++
		a := &Account{s: s, user: u.ID, address: u.Address, shard: n, keys: u.Keys}
		for _, blob := range blobs {
			if err := a.scrubBlob(ctx, sh, blob, pace, &rep); err != nil {
				return rep, fmt.Errorf("scrub shard %d: %w", n, err)
			}
		}
	}
	return rep, ctx.Err()
}

// scrubBlob reads and opens the pieces of one blob as the replica sh
// holds them.
func (a *Account) scrubBlob(ctx context.Context, sh *raftstore.Shard, blob schema.ID, pace func(context.Context, int) error, rep *ScrubReport) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	body := raftstore.Query{Kind: raftstore.QueryBody, User: a.user, Blob: blob}
	res, held, err := sh.QueryHeld(body)
	if err != nil || !held {
		return nil // expunged since, or a replica that cannot read now: the next scrub
	}
	record := raftstore.Query{Kind: raftstore.QuerySearchRecords, User: a.user, Blobs: []schema.ID{blob}}
	rec, held, err := sh.QueryHeld(record)
	if err != nil || !held || len(rec.Chunks) != 1 {
		return nil
	}
	size := len(rec.Chunks[0])
	for _, c := range res.Chunks {
		size += len(c)
	}
	if pace != nil {
		if err := pace(ctx, size); err != nil {
			return err
		}
	}
	rep.Blobs++
	rep.Bytes += int64(size)
	var buf []byte
	openChunks := func(res *raftstore.QueryResult) error {
		var err error
		buf, err = a.s.openChunksAppend(buf[:0], a.keys.Ring(), a.user, blob, res.Chunks)
		return err
	}
	openRecord := func(res *raftstore.QueryResult) error {
		if len(res.Chunks) != 1 {
			return errors.New("no search record")
		}
		if len(res.Chunks[0]) == 0 {
			return nil // stored without one
		}
		_, err := a.openSearchRecord(blob, res.Chunks[0])
		return err
	}
	damaged, unreadable := false, false
	for _, p := range []struct {
		q    raftstore.Query
		res  *raftstore.QueryResult
		open func(*raftstore.QueryResult) error
	}{{body, res, openChunks}, {record, rec, openRecord}} {
		err := p.open(p.res)
		if err == nil || !damagedCopy(err) {
			continue
		}
		damaged = true
		if a.fromGoodCopy(ctx, p.q, p.res, err, p.open) != nil {
			unreadable = true
		}
	}
	if damaged {
		rep.Damaged++
	}
	if unreadable {
		rep.Unreadable++
	}
	return nil
}
