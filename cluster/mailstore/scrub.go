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
	// which copies share) whose pieces were read; Records the mailbox
	// and message records; Queued the outbound queue entries.
	Users, Blobs, Records, Queued int
	// Bytes counts the sealed bytes read.
	Bytes int64
	// Damaged counts the messages with a piece in this replica that did
	// not open, the mailboxes with a record (the mailbox's or a
	// message's) that did not, and the queue entries with a state or a
	// chunk that did not; each was put back from another replica's copy
	// unless it is also counted in Unreadable.
	Damaged int
	// Unreadable counts the messages, mailboxes and queue entries of
	// which no replica's copy opens.
	Unreadable int
}

// tally counts one message, mailbox or queue entry that did not open
// (damaged) and of which no replica's copy did (unreadable).
func (r *ScrubReport) tally(damaged, unreadable bool) {
	if damaged {
		r.Damaged++
	}
	if unreadable {
		r.Unreadable++
	}
}

// Scrub reads every piece of every message that this node's replica of
// mail shard n holds (chunks and search records), every mailbox and
// message record and every queued outbound message, and opens it under
// its user's key, so that damage is found before a client meets it:
// what does not open is handled as a read that met it would handle it
// (fromGoodCopy, mendRecords, mendOutbound), from another replica's
// copy, and put back. pace, if set, is told the sealed bytes of each
// message before it is read and may wait, to bound the scrub's share of
// the disk; its error ends the scrub. Users deleted and messages
// expunged meanwhile are passed over.
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
		a := s.accountOn(u, n)
		for _, blob := range blobs {
			if err := a.scrubBlob(ctx, sh, blob, pace, &rep); err != nil {
				return rep, fmt.Errorf("scrub shard %d: %w", n, err)
			}
		}
		if err := a.scrubRecords(ctx, sh, pace, &rep); err != nil {
			return rep, fmt.Errorf("scrub shard %d: user %s: %w", n, id, err)
		}
	}
	if err := s.scrubQueue(ctx, sh, pace, &rep); err != nil {
		return rep, fmt.Errorf("scrub shard %d: %w", n, err)
	}
	return rep, ctx.Err()
}

// scrubQueue reads and opens the outbound queue entries (state and
// message) as the replica sh holds them.
func (s *Store) scrubQueue(ctx context.Context, sh *raftstore.Shard, pace func(context.Context, int) error, rep *ScrubReport) error {
	res, err := sh.QueryCommitted(raftstore.Query{Kind: raftstore.QueryOutbound})
	if err != nil {
		return nil // a replica that cannot read now: the next scrub
	}
	for _, rec := range res.Outbound {
		if err := ctx.Err(); err != nil {
			return err
		}
		u, err := s.queueOwner(ctx, rec.User)
		if err != nil {
			continue // a deleted user's entry, dropped by the queue
		}
		msg, err := sh.QueryCommitted(raftstore.Query{Kind: raftstore.QueryOutboundChunks, Blob: rec.ID})
		if err != nil {
			continue // sent or dropped since
		}
		size := len(rec.State)
		for _, c := range msg.Chunks {
			size += len(c)
		}
		if pace != nil {
			if err := pace(ctx, size); err != nil {
				return err
			}
		}
		rep.Queued++
		rep.Bytes += int64(size)
		damaged, unreadable := false, false
		e, err := s.openOutbound(u, sh.ID(), rec)
		if err != nil && damagedCopy(err) {
			damaged = true
			e, err = s.mendOutbound(ctx, u, sh.ID(), res.Index, rec, err)
			unreadable = err != nil
		}
		if err == nil {
			if _, err := s.openChunks(u.Keys.Ring(), u.ID, rec.ID, msg.Chunks, e.Size); err != nil && damagedCopy(err) {
				damaged = true
				if _, err := s.mendOutboundChunks(ctx, u, e, msg.Index, msg.Chunks, err); err != nil {
					unreadable = true
				}
			}
		}
		rep.tally(damaged, unreadable)
	}
	return nil
}

// scrubRecords reads and opens the mailbox and message records of the
// account as the replica sh holds them, a mailbox at a time.
func (a *Account) scrubRecords(ctx context.Context, sh *raftstore.Shard, pace func(context.Context, int) error, rep *ScrubReport) error {
	// Read from the state file as committed, as the blobs are, so
	// that reading a large mailbox holds off no apply.
	boxes, err := sh.QueryCommitted(raftstore.Query{Kind: raftstore.QueryMailboxes, User: a.user})
	if err != nil {
		return nil // deleted since, or a replica that cannot read now: the next scrub
	}
	for _, box := range boxes.Mailboxes {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := sh.QueryCommitted(raftstore.Query{Kind: raftstore.QuerySnapshot, User: a.user, Mailbox: box.ID})
		if err != nil {
			continue // deleted since
		}
		size := len(res.Mailbox.Sealed)
		for i := range res.Messages {
			size += len(res.Messages[i].Sealed)
		}
		if pace != nil {
			if err := pace(ctx, size); err != nil {
				return err
			}
		}
		rep.Records += 1 + len(res.Messages)
		rep.Bytes += int64(size)
		_, err = a.openSnapshot(res)
		if err == nil || !damagedCopy(err) {
			continue
		}
		// A message changed since (errRecordChanged) was written over
		// on every replica by that change.
		err = a.mendRecords(ctx, box.ID, res, true, err)
		rep.tally(true, err != nil && !errors.Is(err, errRecordChanged))
	}
	return nil
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
	rep.tally(damaged, unreadable)
	return nil
}
