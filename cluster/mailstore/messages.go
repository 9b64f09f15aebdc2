package mailstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

const (
	// chunkSize is the plaintext size of a body chunk: the unit of
	// sealing and of partial reads.
	chunkSize = 256 << 10
	// maxHeaderChunk bounds chunk 0, the header section.
	maxHeaderChunk = 1 << 20
	// maxInline is the largest sealed message carried in a single Append;
	// larger ones are staged chunk by chunk so no Raft entry is large.
	maxInline = 1 << 20
	// MaxMessageSize is the largest message the store accepts; frontends
	// enforce their own, smaller limits.
	MaxMessageSize = 256 << 20
	// batchSize bounds the number of messages one copy or flag command
	// changes (each item carries sealed attributes).
	batchSize = 1000
	// expungeBatch bounds the targets of one expunge command. Targets are
	// a few bytes each, so this keeps an expunge atomic (one Raft entry of
	// at most about 1.3 MB) for any realistic mailbox.
	expungeBatch = 100000
	// stageConcurrency bounds chunks of one message in flight.
	stageConcurrency = 4
	maxFlagRetries   = 8
)

// messageAttrs is the sealed part of a message record.
type messageAttrs struct {
	Flags []string `json:"f,omitempty"`
	Date  int64    `json:"d"`
}

func (s *Store) sealAttrs(k *directory.UserKeys, user, msg schema.ID, attrs messageAttrs) ([]byte, error) {
	b, err := json.Marshal(attrs)
	if err != nil {
		return nil, err
	}
	return s.sealer.Seal(k.Ring(), seal.KindMessageAttrs, user[:], msg[:], b)
}

func (s *Store) openMessage(k *directory.UserKeys, user schema.ID, rec *schema.MessageRecord) (schema.MessageInfo, error) {
	b, err := s.sealer.Open(k.Ring(), seal.KindMessageAttrs, user[:], rec.ID[:], rec.Sealed)
	if err != nil {
		return schema.MessageInfo{}, fmt.Errorf("open message %d: %w", rec.UID, err)
	}
	var attrs messageAttrs
	if err := json.Unmarshal(b, &attrs); err != nil {
		return schema.MessageInfo{}, fmt.Errorf("decode message %d: %w", rec.UID, err)
	}
	return schema.MessageInfo{
		UID: rec.UID, ID: rec.ID, Blob: rec.Blob, Size: rec.Size, ModSeq: rec.ModSeq,
		Flags: attrs.Flags, InternalDate: time.Unix(0, attrs.Date),
	}, nil
}

// Snapshot returns a mailbox and its messages as of one applied index.
// Records whose copy on the replica read does not open are read from
// another replica's (mendRecords).
func (a *Account) Snapshot(ctx context.Context, mbox schema.ID) (schema.MailboxSnapshot, error) {
	var snap schema.MailboxSnapshot
	res, err := a.readOpen(ctx, mbox, raftstore.Query{Kind: raftstore.QuerySnapshot, Mailbox: mbox}, true,
		func(res *raftstore.QueryResult) (err error) { snap, err = a.openSnapshot(res); return err })
	if err != nil {
		return schema.MailboxSnapshot{}, fmt.Errorf("read mailbox: %w", err)
	}
	if res.ValueRead {
		a.mu.Lock()
		a.claim = knownClaim{mbox: mbox, value: res.Value, ok: true}
		a.mu.Unlock()
	}
	return snap, ctx.Err()
}

// openSnapshot opens the records of a QuerySnapshot answer.
func (a *Account) openSnapshot(res *raftstore.QueryResult) (schema.MailboxSnapshot, error) {
	info, _, err := a.openMailbox(res.Mailbox)
	if err != nil {
		return schema.MailboxSnapshot{}, err
	}
	msgs := res.Messages
	snap := schema.MailboxSnapshot{Mailbox: info, Index: res.Index, Messages: make([]schema.MessageInfo, len(msgs))}
	for i := range msgs {
		if snap.Messages[i], err = a.s.openMessage(a.keys, a.user, &msgs[i]); err != nil {
			return schema.MailboxSnapshot{}, err
		}
	}
	return snap, nil
}

// Append stores a message in a mailbox.
func (a *Account) Append(ctx context.Context, mbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error) {
	return a.appendMessage(ctx, mbox, msg, flags, date, false)
}

// AppendClaimingRecent stores a message in a mailbox and claims it as
// \Recent for the calling session in the same commit, when every node
// of the cluster applies that form (schema.LevelAppendClaimsRecent);
// otherwise it is Append and the result says nothing was claimed.
func (a *Account) AppendClaimingRecent(ctx context.Context, mbox schema.ID, msg []byte, flags []string, date time.Time) (schema.AppendResult, error) {
	return a.appendMessage(ctx, mbox, msg, flags, date, a.s.c.CommandLevel() >= schema.LevelAppendClaimsRecent)
}

func (a *Account) appendMessage(ctx context.Context, mbox schema.ID, msg []byte, flags []string, date time.Time, claimRecent bool) (schema.AppendResult, error) {
	if mbox.IsZero() {
		return schema.AppendResult{}, fmt.Errorf("append: %w", schema.ErrNoSuchMailbox)
	}
	fl, err := schema.CanonicalFlags(flags)
	if err != nil {
		return schema.AppendResult{}, err
	}
	quota, err := a.limit()
	if err != nil {
		return schema.AppendResult{}, err
	}
	res, err := a.s.storeMessage(ctx, a.shard, a.user, a.keys, mbox, msg, fl, date, schema.NewRequestID(), quota, claimRecent)
	if errors.Is(err, schema.ErrOverQuota) {
		a.s.quotaRefused("append")
	}
	if err != nil {
		return schema.AppendResult{}, err
	}
	a.seen(res.Index)
	a.syncWatchers(ctx, res.Index, mbox)
	return schema.AppendResult{UIDValidity: res.UIDValidity, UID: res.UIDs[0],
		RecentClaimed: res.RecentClaimed, RecentBefore: res.RecentBefore}, nil
}

// storeMessage seals msg for a user and commits it to a mailbox (the
// user's inbox when mbox is zero) on the user's shard, refused by the
// shard with schema.ErrOverQuota when it would take the user over quota
// (zero limits: none). The final Append carries reqID, so a spooled
// delivery retried with the same id stores one copy; it claims the
// message as \Recent when claimRecent (Append.ClaimRecent).
func (s *Store) storeMessage(ctx context.Context, shard uint32, user schema.ID, keys *directory.UserKeys,
	mbox schema.ID, msg []byte, flags []string, date time.Time, reqID schema.ID, quota directory.Quotas, claimRecent bool) (*schema.Result, error) {
	app, sealed, err := s.sealMessage(user, keys, mbox, msg, flags, date)
	if err != nil {
		return nil, err
	}
	app.Quota, app.MessageQuota = quota.Bytes, quota.Messages
	app.ClaimRecent = claimRecent
	if app.StagedChunks, app.Chunks, err = s.stage(ctx, shard, user, app.Blob, sealed); err != nil {
		return nil, err
	}
	res, err := s.c.ApplyRequest(ctx, shard, reqID, app)
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	return res, nil
}

// stage commits the leading chunks of a large sealed message one Raft
// entry each, so no entry is large, and returns how many it staged and
// the chunks left to carry inline.
func (s *Store) stage(ctx context.Context, shard uint32, owner, blob schema.ID, sealed [][]byte) (uint32, [][]byte, error) {
	total := 0
	for _, c := range sealed {
		total += len(c)
	}
	if total <= maxInline {
		return 0, sealed, nil
	}
	staged := len(sealed) - 1
	if err := s.stageAll(ctx, shard, owner, blob, sealed[:staged]); err != nil {
		return 0, nil, err
	}
	return uint32(staged), sealed[staged:], nil
}

// stageAll commits the given sealed chunks, from index 0, one Raft entry
// each.
func (s *Store) stageAll(ctx context.Context, shard uint32, owner, blob schema.ID, chunks [][]byte) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(stageConcurrency)
	for i, c := range chunks {
		p := &schema.StageChunk{User: owner, Blob: blob, Index: uint32(i), Sealed: c}
		g.Go(func() error {
			_, err := s.c.Apply(gctx, shard, p)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("stage message chunks: %w", err)
	}
	return nil
}

// splitMessage cuts msg into the header section and body chunks.
func splitMessage(msg []byte) [][]byte {
	hl := min(schema.HeaderLength(msg), maxHeaderChunk)
	pieces := [][]byte{msg[:hl]}
	for rest := msg[hl:]; len(rest) > 0; {
		n := min(len(rest), chunkSize)
		pieces = append(pieces, rest[:n])
		rest = rest[n:]
	}
	return pieces
}

// Header returns a message's header section.
func (a *Account) Header(ctx context.Context, blob schema.ID) ([]byte, error) {
	var h []byte
	err := a.queryOpen(ctx, raftstore.Query{Kind: raftstore.QueryHeader, Blob: blob}, func(res *raftstore.QueryResult) error {
		if len(res.Chunks) != 1 {
			return fmt.Errorf("%d chunks for a header", len(res.Chunks))
		}
		var err error
		h, err = a.s.sealer.Open(a.keys.Ring(), seal.KindChunk, a.user[:], seal.ChunkObject(blob, 0), res.Chunks[0])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	return h, ctx.Err()
}

// Body returns a whole message.
func (a *Account) Body(ctx context.Context, blob schema.ID) ([]byte, error) {
	var out []byte
	err := a.queryOpen(ctx, raftstore.Query{Kind: raftstore.QueryBody, Blob: blob}, func(res *raftstore.QueryResult) error {
		var err error
		out, err = a.s.openChunks(a.keys.Ring(), a.user, blob, res.Chunks, res.Blob.Size)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	return out, ctx.Err()
}

// openChunks opens a blob's sealed chunks (owner's, in order) into one
// message of about size bytes, each chunk decrypted and decompressed in
// place.
func (s *Store) openChunks(kr seal.Keyring, owner, blob schema.ID, chunks [][]byte, size uint64) ([]byte, error) {
	return s.openChunksAppend(make([]byte, 0, min(size, MaxMessageSize)), kr, owner, blob, chunks)
}

// openChunksAppend is openChunks appending the message to out (a reused
// buffer), which it returns.
func (s *Store) openChunksAppend(out []byte, kr seal.Keyring, owner, blob schema.ID, chunks [][]byte) ([]byte, error) {
	for i, c := range chunks {
		var err error
		if out, err = s.sealer.OpenAppend(out, kr, seal.KindChunk, owner[:], seal.ChunkObject(blob, uint32(i)), c); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
	}
	return out, nil
}

// openMessages reads and opens the messages uids of a mailbox that
// exist. A record whose copy on the replica read does not open is read
// from another replica's (mendRecords).
func (a *Account) openMessages(ctx context.Context, mbox schema.ID, uids []schema.UID) ([]schema.MessageInfo, error) {
	var infos []schema.MessageInfo
	_, err := a.readOpen(ctx, mbox, raftstore.Query{Kind: raftstore.QueryMessages, Mailbox: mbox, UIDs: uids}, false,
		func(res *raftstore.QueryResult) (err error) { infos, err = a.openRecords(res); return err })
	return infos, err
}

// openRecords opens the message records of a QueryMessages answer.
func (a *Account) openRecords(res *raftstore.QueryResult) ([]schema.MessageInfo, error) {
	infos := make([]schema.MessageInfo, len(res.Messages))
	for i := range res.Messages {
		var err error
		if infos[i], err = a.s.openMessage(a.keys, a.user, &res.Messages[i]); err != nil {
			return nil, err
		}
	}
	return infos, nil
}

// StoreFlags changes flags and returns the resulting state of every
// message that exists, changed or not. A concurrent change to the same
// message is detected by its MODSEQ and the update is retried.
func (a *Account) StoreFlags(ctx context.Context, mbox schema.ID, uids []schema.UID, op schema.FlagOp, flags []string) ([]schema.MessageInfo, error) {
	out, _, err := a.storeFlags(ctx, mbox, uids, nil, op, flags, nil)
	return out, err
}

// StoreFlagsIf is StoreFlags for the messages whose MODSEQ is at most
// unchangedSince when the change commits (IMAP's STORE UNCHANGEDSINCE,
// RFC 7162): each update names the MODSEQ it was decided on, so a
// message changed meanwhile, through any node, is read again and
// reported in modified once its MODSEQ is above unchangedSince.
func (a *Account) StoreFlagsIf(ctx context.Context, mbox schema.ID, uids []schema.UID, op schema.FlagOp, flags []string, unchangedSince uint64) ([]schema.MessageInfo, []schema.UID, error) {
	return a.storeFlags(ctx, mbox, uids, nil, op, flags, &unchangedSince)
}

// StoreFlagsKnown is StoreFlags, or StoreFlagsIf when unchangedSince is
// set, for messages whose state the caller already holds (a session's
// view of the mailbox), which saves reading them first: each update
// names the MODSEQ the caller knew, so the shard refuses it for a
// message changed since, which is then read and decided again, as when
// two changes race. A message the change would leave as the caller
// knows it is read all the same, since the caller's state may be old.
func (a *Account) StoreFlagsKnown(ctx context.Context, mbox schema.ID, known []schema.MessageInfo, op schema.FlagOp, flags []string, unchangedSince *uint64) ([]schema.MessageInfo, []schema.UID, error) {
	return a.storeFlags(ctx, mbox, nil, known, op, flags, unchangedSince)
}

// storeFlags changes flags of the messages uids and known (decided first
// on the state given); with limit, only of messages whose MODSEQ is at
// most *limit (the others are returned in modified).
func (a *Account) storeFlags(ctx context.Context, mbox schema.ID, uids []schema.UID, known []schema.MessageInfo, op schema.FlagOp, flags []string, limit *uint64) (out []schema.MessageInfo, modified []schema.UID, err error) {
	fl, err := schema.CanonicalFlags(flags)
	if err != nil {
		return nil, nil, err
	}
	pending := uids
	for attempt := 0; len(pending) > 0 || len(known) > 0; attempt++ {
		if attempt == maxFlagRetries {
			return out, modified, fmt.Errorf("store flags: %w", schema.ErrConflict)
		}
		current, assumed := known, known != nil
		known = nil
		if !assumed {
			if current, err = a.openMessages(ctx, mbox, pending); err != nil {
				return out, modified, fmt.Errorf("store flags: %w", err)
			}
		}
		pending = nil
		var ups []schema.AttrUpdate
		var infos []schema.MessageInfo
		for _, info := range current {
			if assumed && info.ModSeq == 0 {
				// No MODSEQ to make the update conditional on.
				pending = append(pending, info.UID)
				continue
			}
			if limit != nil && info.ModSeq > *limit {
				// A MODSEQ only grows: one known above the limit is.
				modified = append(modified, info.UID)
				continue
			}
			next := schema.ApplyFlags(info.Flags, op, fl)
			if schema.SameFlags(next, info.Flags) {
				if assumed {
					pending = append(pending, info.UID)
				} else {
					out = append(out, info)
				}
				continue
			}
			info.Flags = next
			sealed, err := a.s.sealAttrs(a.keys, a.user, info.ID, messageAttrs{Flags: next, Date: info.InternalDate.UnixNano()})
			if err != nil {
				return out, modified, err
			}
			ups = append(ups, schema.AttrUpdate{UID: info.UID, ExpectModSeq: info.ModSeq, Sealed: sealed})
			infos = append(infos, info)
		}
		for start := 0; start < len(ups); start += batchSize {
			end := min(start+batchSize, len(ups))
			res, err := a.applyTo(ctx, &schema.SetAttrs{User: a.user, Mailbox: mbox, Updates: ups[start:end]}, mbox)
			if err != nil {
				return out, modified, fmt.Errorf("store flags: %w", err)
			}
			for i, ms := range res.ModSeqs {
				if ms == 0 {
					pending = append(pending, ups[start+i].UID)
					continue
				}
				info := infos[start+i]
				info.ModSeq = ms
				out = append(out, info)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	sort.Slice(modified, func(i, j int) bool { return modified[i] < modified[j] })
	return out, modified, nil
}

// Copy copies messages to dest.
func (a *Account) Copy(ctx context.Context, mbox schema.ID, uids []schema.UID, dest schema.ID) (schema.CopyResult, error) {
	return a.copy(ctx, mbox, uids, dest, false)
}

// Move moves messages to dest; each batch of up to batchSize messages
// moves atomically.
func (a *Account) Move(ctx context.Context, mbox schema.ID, uids []schema.UID, dest schema.ID) (schema.CopyResult, error) {
	return a.copy(ctx, mbox, uids, dest, true)
}

func (a *Account) copy(ctx context.Context, mbox schema.ID, uids []schema.UID, dest schema.ID, move bool) (schema.CopyResult, error) {
	var res schema.CopyResult
	destRec, err := a.query(ctx, raftstore.Query{Kind: raftstore.QueryMailbox, Mailbox: dest})
	if err != nil {
		return res, fmt.Errorf("copy: destination: %w", err)
	}
	res.UIDValidity = destRec.Mailbox.UIDValidity
	infos, err := a.openMessages(ctx, mbox, uids)
	if err != nil {
		return res, fmt.Errorf("copy: %w", err)
	}
	// A copy changes only the destination: a watcher of the source has
	// nothing of it to show, so the write does not wait for it (as
	// Append waits for the watchers of its mailbox only).
	changed := []schema.ID{dest}
	if move {
		changed = append(changed, mbox)
	}
	for start := 0; start < len(infos); start += batchSize {
		batch := infos[start:min(start+batchSize, len(infos))]
		cp := &schema.Copy{User: a.user, Source: mbox, Dest: dest, Move: move}
		if !move {
			q, err := a.limit()
			if err != nil {
				return res, err
			}
			cp.Quota, cp.MessageQuota = q.Bytes, q.Messages
		}
		for _, info := range batch {
			item := schema.CopyItem{UID: info.UID, Message: schema.NewID()}
			if item.Sealed, err = a.s.sealAttrs(a.keys, a.user, item.Message, messageAttrs{Flags: info.Flags, Date: info.InternalDate.UnixNano()}); err != nil {
				return res, err
			}
			cp.Items = append(cp.Items, item)
		}
		r, err := a.applyTo(ctx, cp, changed...)
		if errors.Is(err, schema.ErrOverQuota) {
			a.s.quotaRefused("copy")
		}
		if err != nil {
			return res, fmt.Errorf("copy: %w", err)
		}
		res.UIDValidity = r.UIDValidity
		for i, uid := range r.UIDs {
			if uid != 0 {
				res.Source = append(res.Source, cp.Items[i].UID)
				res.Dest = append(res.Dest, uid)
			}
		}
	}
	return res, nil
}

// Expunge removes messages and returns the UIDs it removed, atomically
// for up to expungeBatch targets.
func (a *Account) Expunge(ctx context.Context, mbox schema.ID, targets []schema.ExpungeTarget) ([]schema.UID, error) {
	var out []schema.UID
	if len(targets) == 0 {
		if _, err := a.query(ctx, raftstore.Query{Kind: raftstore.QueryMailbox, Mailbox: mbox}); err != nil {
			return nil, fmt.Errorf("expunge: %w", err)
		}
		return nil, nil
	}
	for start := 0; start < len(targets); start += expungeBatch {
		res, err := a.applyTo(ctx, &schema.Expunge{User: a.user, Mailbox: mbox, Targets: targets[start:min(start+expungeBatch, len(targets))]}, mbox)
		if err != nil {
			return out, fmt.Errorf("expunge: %w", err)
		}
		out = append(out, res.UIDs...)
	}
	return out, nil
}
