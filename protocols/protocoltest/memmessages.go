package protocoltest

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Snapshot returns a mailbox's counters and messages (in UID order) with
// the index of the last command they include.
func (a *MemAccount) Snapshot(ctx context.Context, mbox schema.ID) (schema.MailboxSnapshot, error) {
	a.s.mu.Lock()
	mb := a.u.mailboxes[mbox]
	if mb == nil {
		a.s.mu.Unlock()
		return schema.MailboxSnapshot{}, fmt.Errorf("read mailbox: %w", schema.ErrNoSuchMailbox)
	}
	snap := schema.MailboxSnapshot{Mailbox: mb.info, Index: a.s.index, Messages: make([]schema.MessageInfo, len(mb.msgs))}
	for i, m := range mb.msgs {
		snap.Messages[i] = *cloneMessage(m)
	}
	a.s.mu.Unlock()
	return snap, ctx.Err()
}

// ClaimRecent claims the mailbox's messages up to upTo as \Recent for
// the calling session and returns the highest UID claimed before (upTo 0
// only reads). Moving the claim is a command.
func (a *MemAccount) ClaimRecent(ctx context.Context, mbox schema.ID, upTo schema.UID) (schema.UID, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	mb := a.u.mailboxes[mbox]
	if mb == nil {
		return 0, fmt.Errorf("claim recent: %w", schema.ErrNoSuchMailbox)
	}
	prev := mb.recent
	if upTo <= prev {
		return prev, ctx.Err()
	}
	if _, err := a.s.begin(ctx, "claim recent"); err != nil {
		return 0, fmt.Errorf("claim recent: %w", err)
	}
	mb.recent = upTo
	return prev, nil
}

// Append stores a message, its line endings normalised to CRLF, with
// flags canonicalised (schema.ErrInvalid for a malformed one; \Recent and
// case-insensitive duplicates dropped). A zero date means now.
func (a *MemAccount) Append(ctx context.Context, mbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error) {
	return a.appendMessage(ctx, mbox, msg, flags, date, false)
}

// AppendClaimingRecent is Append that also claims the message as \Recent
// for the caller, in the same command.
func (a *MemAccount) AppendClaimingRecent(ctx context.Context, mbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error) {
	return a.appendMessage(ctx, mbox, msg, flags, date, true)
}

func (a *MemAccount) appendMessage(ctx context.Context, mbox schema.ID, msg []byte, flags []string, date time.Time, claimRecent bool) (schema.AppendResult, error) {
	if mbox.IsZero() {
		return schema.AppendResult{}, fmt.Errorf("append: %w", schema.ErrNoSuchMailbox)
	}
	fl, err := schema.CanonicalFlags(flags)
	if err != nil {
		return schema.AppendResult{}, err
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	res, err := a.s.storeMessage(ctx, a.u, mbox, msg, fl, date)
	if err != nil || !claimRecent {
		return res, err
	}
	mb := a.u.mailboxes[mbox]
	res.RecentClaimed, res.RecentBefore = true, mb.recent
	mb.recent = max(mb.recent, res.UID)
	return res, nil
}

// blob returns a copy of what Header or Body reads.
func (a *MemAccount) blob(op string, id schema.ID, header bool) ([]byte, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	b := a.u.blobs[id]
	if b == nil {
		return nil, fmt.Errorf("read %s: %w", op, schema.ErrNoSuchMessage)
	}
	data := b.data
	if header {
		data = data[:min(schema.HeaderLength(data), maxHeaderChunk)]
	}
	return bytes.Clone(data), nil
}

// Header returns a message's header section, up to and including the
// blank line that ends it (the whole message if it has no body).
func (a *MemAccount) Header(ctx context.Context, blob schema.ID) ([]byte, error) {
	h, err := a.blob("header", blob, true)
	if err != nil {
		return nil, err
	}
	return h, ctx.Err()
}

// Body returns a whole message.
func (a *MemAccount) Body(ctx context.Context, blob schema.ID) ([]byte, error) {
	b, err := a.blob("message", blob, false)
	if err != nil {
		return nil, err
	}
	return b, ctx.Err()
}

// StoreFlags changes flags and returns the resulting state of every
// message that exists, changed or not, in UID order. Each changed message
// takes the mailbox's next MODSEQ; unchanged ones keep theirs. UIDs that
// do not exist are skipped.
func (a *MemAccount) StoreFlags(ctx context.Context, mbox schema.ID, uids []schema.UID, op schema.FlagOp, flags []string) ([]schema.MessageInfo, error) {
	out, _, err := a.storeFlags(ctx, mbox, uids, op, flags, nil)
	return out, err
}

// StoreFlagsIf is StoreFlags for the messages whose MODSEQ is at most
// unchangedSince; the others are returned in modified.
func (a *MemAccount) StoreFlagsIf(ctx context.Context, mbox schema.ID, uids []schema.UID, op schema.FlagOp, flags []string, unchangedSince uint64) ([]schema.MessageInfo, []schema.UID, error) {
	return a.storeFlags(ctx, mbox, uids, op, flags, &unchangedSince)
}

func (a *MemAccount) storeFlags(ctx context.Context, mbox schema.ID, uids []schema.UID, op schema.FlagOp, flags []string, limit *uint64) (out []schema.MessageInfo, modified []schema.UID, err error) {
	fl, err := schema.CanonicalFlags(flags)
	if err != nil {
		return nil, nil, err
	}
	if len(uids) == 0 {
		return nil, nil, nil
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	mb := a.u.mailboxes[mbox]
	if mb == nil {
		return nil, nil, fmt.Errorf("store flags: %w", schema.ErrNoSuchMailbox)
	}
	var c *command
	inBatch := 0
	for _, uid := range uids {
		m := mb.message(uid)
		if m == nil {
			continue
		}
		if limit != nil && m.ModSeq > *limit {
			modified = append(modified, uid)
			continue
		}
		next := schema.ApplyFlags(m.Flags, op, fl)
		if schema.SameFlags(next, m.Flags) {
			out = append(out, *cloneMessage(m))
			continue
		}
		if c == nil || inBatch == batchSize {
			if c, err = a.s.begin(ctx, "set attrs"); err != nil {
				return out, modified, fmt.Errorf("store flags: %w", err)
			}
			inBatch = 0
		}
		inBatch++
		mb.info.HighestModSeq++
		m.ModSeq = mb.info.HighestModSeq
		m.Flags = storedFlags(next)
		out = append(out, *cloneMessage(m))
		c.emit(a.u, schema.Change{Kind: schema.ChangeFlags, Mailbox: mbox, UID: m.UID, Message: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	sort.Slice(modified, func(i, j int) bool { return modified[i] < modified[j] })
	return out, modified, nil
}

// Copy copies messages to dest, with their flags and internal dates; the
// copies share the stored message. UIDs that do not exist are skipped, so
// the result pairs only the messages copied.
func (a *MemAccount) Copy(ctx context.Context, mbox schema.ID, uids []schema.UID, dest schema.ID) (schema.CopyResult, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	return a.copy(ctx, mbox, uids, dest, false)
}

// Move moves messages to dest: watchers of the source see them expunged
// and watchers of dest see them added, in one command per batch of up to
// 1000 messages.
func (a *MemAccount) Move(ctx context.Context, mbox schema.ID, uids []schema.UID, dest schema.ID) (schema.CopyResult, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	return a.copy(ctx, mbox, uids, dest, true)
}

// copy implements Copy and Move; a.s.mu must be held.
func (a *MemAccount) copy(ctx context.Context, mbox schema.ID, uids []schema.UID, dest schema.ID, move bool) (schema.CopyResult, error) {
	var res schema.CopyResult
	dst := a.u.mailboxes[dest]
	if dst == nil {
		return res, fmt.Errorf("copy: destination: %w", schema.ErrNoSuchMailbox)
	}
	res.UIDValidity = dst.info.UIDValidity
	src := a.u.mailboxes[mbox]
	if src == nil {
		return res, fmt.Errorf("copy: %w", schema.ErrNoSuchMailbox)
	}
	// Like the production store, read which messages exist first, then
	// copy them in batches.
	var found []schema.UID
	for _, uid := range uids {
		if src.message(uid) != nil {
			found = append(found, uid)
		}
	}
	op := "copy"
	if move {
		op = "move"
	}
	for start := 0; start < len(found); start += batchSize {
		batch := found[start:min(start+batchSize, len(found))]
		c, err := a.s.begin(ctx, op)
		if err != nil {
			return res, fmt.Errorf("%s: %w", op, err)
		}
		if uint64(dst.info.UIDNext)+uint64(len(batch)) >= math.MaxUint32 {
			return res, fmt.Errorf("%s: destination out of UIDs: %w", op, schema.ErrInvalid)
		}
		if !move {
			var add, n uint64
			for _, uid := range batch {
				if m := src.message(uid); m != nil {
					add += m.Size
					n++
				}
			}
			if err := a.u.fits(add, n); err != nil {
				return res, fmt.Errorf("%s: %w", op, err)
			}
		}
		for _, uid := range batch {
			m := src.message(uid)
			if m == nil {
				continue // named twice and moved already
			}
			cp := &schema.MessageInfo{
				ID: schema.NewID(), Blob: m.Blob, Size: m.Size,
				Flags: storedFlags(m.Flags), InternalDate: m.InternalDate,
			}
			dst.add(cp)
			if move {
				// The stored message moves with it: its reference count stays.
				src.remove(uid)
				c.emit(a.u, schema.Change{Kind: schema.ChangeExpunged, Mailbox: mbox, UID: uid})
			} else {
				a.u.blobs[m.Blob].refs++
			}
			c.emit(a.u, schema.Change{Kind: schema.ChangeAdded, Mailbox: dest, UID: cp.UID, Message: cp})
			res.Source = append(res.Source, uid)
			res.Dest = append(res.Dest, cp.UID)
		}
	}
	return res, nil
}

// Expunge removes messages and returns the UIDs it removed, in the order
// of targets. A target with a ModSeq is removed only if that is still the
// message's MODSEQ, so a message changed meanwhile is left alone.
func (a *MemAccount) Expunge(ctx context.Context, mbox schema.ID, targets []schema.ExpungeTarget) ([]schema.UID, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if len(targets) == 0 {
		if a.u.mailboxes[mbox] == nil {
			return nil, fmt.Errorf("expunge: %w", schema.ErrNoSuchMailbox)
		}
		return nil, nil
	}
	var out []schema.UID
	for start := 0; start < len(targets); start += expungeBatch {
		c, err := a.s.begin(ctx, "expunge")
		if err != nil {
			return out, fmt.Errorf("expunge: %w", err)
		}
		mb := a.u.mailboxes[mbox]
		if mb == nil {
			return out, fmt.Errorf("expunge: %w", schema.ErrNoSuchMailbox)
		}
		for _, t := range targets[start:min(start+expungeBatch, len(targets))] {
			m := mb.message(t.UID)
			if m == nil || (t.ModSeq != 0 && m.ModSeq != t.ModSeq) {
				continue
			}
			mb.remove(t.UID)
			a.u.releaseBlob(m.Blob)
			out = append(out, t.UID)
			c.emit(a.u, schema.Change{Kind: schema.ChangeExpunged, Mailbox: mbox, UID: t.UID})
		}
	}
	return out, nil
}
