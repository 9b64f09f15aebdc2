package mailstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// The outbound queue lives in the sender's mail shard: a message is
// sealed under the sender's key like mail, and its envelope and results
// are one value sealed under the same key (schema.OutboundState). The
// delivery engine (protocols/outbound) works on the shards this node
// leads, through the methods below.

// maxModifyAttempts bounds the compare-and-set retries of ModifyOutbound.
const maxModifyAttempts = 16

// SendsAs reports whether the user with address user may send from
// address: their own address, an alias that reaches them, or a
// plus-address of either.
func (s *Store) SendsAs(ctx context.Context, user, address string) (bool, error) {
	u, err := s.dir.UserByAddress(ctx, user)
	if err != nil {
		return false, err
	}
	return s.dir.SendsAs(ctx, u.ID, address)
}

// Submit commits a message to the outbound queue of the submitting
// user's mail shard. It returns nil only once the entry is committed on
// a quorum. With a fingerprint, a retried submission of the same message
// finds the entry the first one made.
func (s *Store) Submit(ctx context.Context, sub schema.Submission) error {
	if len(sub.Recipients) == 0 {
		return fmt.Errorf("submit: no recipients: %w", schema.ErrInvalid)
	}
	msg := schema.NormalizeCRLF(sub.Message)
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("message of %d bytes: %w", len(msg), schema.ErrTooLarge)
	}
	u, err := s.dir.UserByAddress(ctx, sub.User)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	id := schema.NewID()
	if sub.Fingerprint != nil {
		id = deriveID("mailcluster/outbound/", sub.Fingerprint, u.ID[:])
	}
	st := schema.OutboundState{From: sub.From, UTF8: sub.UTF8, RequireTLS: sub.RequireTLS, TLSOptional: sub.TLSOptional && !sub.RequireTLS}
	if err := s.enqueue(ctx, u, id, st, sub.Recipients, msg); err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	return nil
}

// enqueue commits msg (CRLF-normalised) to rcpts as queue entry id of
// owner, in owner's shard, sealed with owner's keys; st carries the
// envelope's From and options, enqueue fills in the rest.
func (s *Store) enqueue(ctx context.Context, u *directory.User, id schema.ID, st schema.OutboundState, rcpts []string, msg []byte) error {
	st.Sender, st.EightBit = u.Address, hasEightBit(msg)
	for _, r := range rcpts {
		st.Recipients = append(st.Recipients, schema.OutboundRecipient{Address: r, Status: schema.RecipientQueued})
	}
	state, err := s.sealOutboundState(u, id, &st)
	if err != nil {
		return err
	}
	pieces := splitMessage(msg)
	sealed := make([][]byte, len(pieces))
	for i, p := range pieces {
		if sealed[i], err = s.sealer.Seal(u.Keys.Ring(), seal.KindChunk, u.ID[:], seal.ChunkObject(id, uint32(i)), p); err != nil {
			return err
		}
	}
	enq := &schema.Enqueue{ID: id, User: u.ID, Size: uint64(len(msg)), State: state, NextAttempt: time.Now().UnixNano()}
	if enq.StagedChunks, enq.Chunks, err = s.stage(ctx, u.Shard, u.ID, id, sealed); err != nil {
		return err
	}
	_, err = s.c.ApplyRequest(ctx, u.Shard, id, enq)
	return err
}

// hasEightBit reports whether msg has a byte over 127 (it needs
// 8BITMIME or SMTPUTF8 on the way out).
func hasEightBit(msg []byte) bool {
	for _, b := range msg {
		if b >= 0x80 {
			return true
		}
	}
	return false
}

func (s *Store) sealOutboundState(u *directory.User, id schema.ID, st *schema.OutboundState) ([]byte, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode queue state: %w", err)
	}
	return s.sealer.Seal(u.Keys.Ring(), seal.KindOutbound, u.ID[:], id[:], b)
}

// openOutbound turns a stored record into an entry.
func (s *Store) openOutbound(u *directory.User, shard uint32, rec schema.OutboundRecord) (schema.OutboundEntry, error) {
	e := schema.OutboundEntry{ID: rec.ID, User: rec.User, Shard: shard, Size: rec.Size,
		Created: time.Unix(0, rec.Created), NextAttempt: time.Unix(0, rec.NextAttempt), Held: rec.Held, Version: rec.Version}
	if rec.Finished != 0 {
		e.Finished = time.Unix(0, rec.Finished)
	}
	b, err := s.sealer.Open(u.Keys.Ring(), seal.KindOutbound, u.ID[:], rec.ID[:], rec.State)
	if err != nil {
		return e, fmt.Errorf("open queue state: %w", err)
	}
	if err := json.Unmarshal(b, &e.State); err != nil {
		return e, fmt.Errorf("decode queue state: %w", err)
	}
	return e, nil
}

// OutboundLed returns every queue entry of the mail shards this node
// leads: the delivery engine's work. Entries of users deleted meanwhile
// (their key is gone, the message unreadable) are dropped.
func (s *Store) OutboundLed(ctx context.Context) ([]schema.OutboundEntry, error) {
	var shards []uint32
	for n := uint32(1); int(n) <= s.c.MailShards(); n++ {
		if s.c.LeadsShard(n) {
			shards = append(shards, n)
		}
	}
	return s.outbound(ctx, shards, true)
}

// OutboundEntries returns every queue entry of the cluster, for
// operators.
func (s *Store) OutboundEntries(ctx context.Context) ([]schema.OutboundEntry, error) {
	var shards []uint32
	for n := uint32(1); int(n) <= s.c.MailShards(); n++ {
		shards = append(shards, n)
	}
	return s.outbound(ctx, shards, false)
}

func (s *Store) outbound(ctx context.Context, shards []uint32, drop bool) ([]schema.OutboundEntry, error) {
	var out []schema.OutboundEntry
	users := map[schema.ID]*directory.User{}
	for _, n := range shards {
		res, err := s.c.Query(ctx, n, raftstore.Query{Kind: raftstore.QueryOutbound}, 0)
		if err != nil {
			return nil, fmt.Errorf("outbound queue of shard %d: %w", n, err)
		}
		for _, rec := range res.Outbound {
			u, ok := users[rec.User]
			if !ok {
				if u, err = s.queueOwner(ctx, rec.User); errors.Is(err, schema.ErrNoSuchUser) {
					if drop {
						s.log.Info("queued message of a deleted user dropped", "shard", n, "id", rec.ID.String())
						if _, err := s.c.Apply(ctx, n, &schema.DeleteOutbound{ID: rec.ID}); err != nil {
							return nil, fmt.Errorf("drop queued message of a deleted user: %w", err)
						}
					}
					continue
				} else if err != nil {
					return nil, err
				}
				users[rec.User] = u
			}
			e, err := s.openOutbound(u, n, rec)
			if err != nil && damagedCopy(err) {
				if e, err = s.mendOutbound(ctx, u, n, res.Index, rec, err); err != nil {
					// Logged there; the rest of the queue goes on.
					continue
				}
			}
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// FindOutbound returns the queue entry id, wherever it is
// (schema.ErrNoSuchMessage when there is none).
func (s *Store) FindOutbound(ctx context.Context, id schema.ID) (schema.OutboundEntry, error) {
	for n := uint32(1); int(n) <= s.c.MailShards(); n++ {
		e, err := s.outboundEntry(ctx, n, id)
		if errors.Is(err, schema.ErrNoSuchMessage) {
			continue
		}
		return e, err
	}
	return schema.OutboundEntry{}, fmt.Errorf("queue entry %s: %w", id, schema.ErrNoSuchMessage)
}

func (s *Store) outboundEntry(ctx context.Context, shard uint32, id schema.ID) (schema.OutboundEntry, error) {
	res, err := s.c.Query(ctx, shard, raftstore.Query{Kind: raftstore.QueryOutboundEntry, Blob: id}, 0)
	if err != nil {
		return schema.OutboundEntry{}, err
	}
	if len(res.Outbound) != 1 {
		return schema.OutboundEntry{}, fmt.Errorf("queue entry %s: %w", id, schema.ErrNoSuchMessage)
	}
	rec := res.Outbound[0]
	u, err := s.queueOwner(ctx, rec.User)
	if err != nil {
		return schema.OutboundEntry{}, err
	}
	e, err := s.openOutbound(u, shard, rec)
	if err != nil && damagedCopy(err) {
		return s.mendOutbound(ctx, u, shard, res.Index, rec, err)
	}
	return e, err
}

// OutboundMessage returns the message of a queue entry.
func (s *Store) OutboundMessage(ctx context.Context, e schema.OutboundEntry) ([]byte, error) {
	res, err := s.c.Query(ctx, e.Shard, raftstore.Query{Kind: raftstore.QueryOutboundChunks, Blob: e.ID}, 0)
	if err != nil {
		return nil, fmt.Errorf("queued message: %w", err)
	}
	u, err := s.queueOwner(ctx, e.User)
	if err != nil {
		return nil, err
	}
	msg, err := s.openChunks(u.Keys.Ring(), u.ID, e.ID, res.Chunks, e.Size)
	if err != nil && damagedCopy(err) {
		msg, err = s.mendOutboundChunks(ctx, u, e, res.Index, res.Chunks, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open queued message: %w", err)
	}
	return msg, nil
}

// ModifyOutbound reads the queue entry id on shard, lets change modify
// it (state, next attempt, held, finished) and commits the result by
// compare-and-set, reading and changing again when another writer
// (a delivery attempt, an operator) came first. An error from change is
// returned as is, with nothing committed.
func (s *Store) ModifyOutbound(ctx context.Context, shard uint32, id schema.ID, change func(*schema.OutboundEntry) error) (schema.OutboundEntry, error) {
	for attempt := 0; ; attempt++ {
		e, err := s.outboundEntry(ctx, shard, id)
		if err != nil {
			return e, err
		}
		if err := change(&e); err != nil {
			return e, err
		}
		u, err := s.queueOwner(ctx, e.User)
		if err != nil {
			return e, err
		}
		state, err := s.sealOutboundState(u, e.ID, &e.State)
		if err != nil {
			return e, err
		}
		up := &schema.UpdateOutbound{ID: id, Version: e.Version, NextAttempt: e.NextAttempt.UnixNano(), Held: e.Held, State: state}
		if !e.Finished.IsZero() {
			up.Finished = e.Finished.UnixNano()
		}
		_, err = s.c.Apply(ctx, shard, up)
		if errors.Is(err, schema.ErrConflict) && attempt < maxModifyAttempts {
			continue
		}
		if err != nil {
			return e, fmt.Errorf("update queue entry: %w", err)
		}
		e.Version++
		return e, nil
	}
}

// DeleteOutbound removes a queue entry and its message.
func (s *Store) DeleteOutbound(ctx context.Context, shard uint32, id schema.ID) error {
	if _, err := s.c.Apply(ctx, shard, &schema.DeleteOutbound{ID: id}); err != nil {
		return fmt.Errorf("delete queue entry: %w", err)
	}
	return nil
}

// DeliverReport stores a delivery report about queue entry e (a DSN) in
// the sender's INBOX; for an entry of a domain's own queue (forwarded
// mail), it sends it to the original sender (see relayReport). kind names the report ("failure", "delay"): each
// kind is stored once per entry, however often it is retried.
func (s *Store) DeliverReport(ctx context.Context, e schema.OutboundEntry, kind string, msg []byte) error {
	if o, err := s.dir.DomainQueueOwnerByID(e.User); err == nil {
		return s.relayReport(ctx, o, e, kind, msg)
	}
	u, err := s.dir.UserByID(ctx, e.User)
	if err != nil {
		return fmt.Errorf("report to the sender: %w", err)
	}
	req := deriveID("mailcluster/outbound-report/", e.ID[:], []byte(kind))
	// Not limited by the quota: the sender must learn what became of
	// their mail.
	if err := s.deliverCopy(ctx, u, false, msg, time.Now(), req, directory.Quotas{}); err != nil {
		return fmt.Errorf("report to the sender: %w", err)
	}
	return nil
}
