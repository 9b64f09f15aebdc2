package mailstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
	"github.com/mailcluster/mailcluster/raftstore/seal"
)

// deliverConcurrency bounds recipients committed in parallel.
const deliverConcurrency = 4

// spoolFromObject is the object id the envelope sender of a spooled
// message is sealed under (its chunks use their index).
const spoolFromObject = math.MaxUint32

// Deliver stores a message in the inbox of every user the recipients
// reach, each copy sealed with its owner's key: one copy per user, when
// an alias names several users and when several recipients (an alias
// and a user it names, two aliases, plus-addresses) reach one user.
// When every recipient's mail is on one shard, it returns nil only when
// every copy is committed. When they are on several shards, the message
// is first committed once to a spool on one of them: from then on it is
// delivered to every recipient exactly once even if a shard fails
// between two recipients, so Deliver returns nil and the copies that
// could not be committed now are retried by the spool worker. A failure
// before the spool commit is returned, and the sender retries the whole
// message.
//
// With a fingerprint, each recipient's copy is committed under a request
// id derived from it: a sender's retry of a message whose acknowledgement
// was lost (the node died after the commit) finds the first copy instead
// of adding a second, for as long as the shard remembers the request
// (its last 50,000 commands).
func (s *Store) Deliver(ctx context.Context, d schema.Delivery) error {
	if len(d.Recipients) == 0 {
		return fmt.Errorf("deliver: no recipients: %w", schema.ErrInvalid)
	}
	msg := schema.NormalizeCRLF(d.Message)
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("message of %d bytes: %w", len(msg), schema.ErrTooLarge)
	}
	now := time.Now()
	seen := map[schema.ID]bool{}
	var users []*directory.User
	var errs []error
	shards := map[uint32]bool{}
	// Quotas: with several users, each is checked before anything is
	// committed, so that a recipient all of whose users are full fails
	// alone (schema.ErrOverQuota) and a full user reached only through an
	// alias of several users is skipped; the shard checks again at
	// commit. One user needs only the commit's check.
	exempt := map[schema.ID]bool{}
	resolved := make([][]*directory.User, len(d.Recipients))
	distinct := map[schema.ID]bool{}
	for i, rcpt := range d.Recipients {
		us, err := s.dir.ResolveRecipients(ctx, rcpt)
		if err != nil {
			errs = append(errs, fmt.Errorf("deliver to recipient %d: %w", i+1, err))
			continue
		}
		resolved[i] = us
		for _, u := range us {
			distinct[u.ID] = true
			if postmasterAddress(rcpt) {
				exempt[u.ID] = true
			}
		}
	}
	full := map[schema.ID]error{}
	for i, us := range resolved {
		fits := 0
		for _, u := range us {
			if _, checked := full[u.ID]; !checked {
				full[u.ID] = nil
				if len(distinct) > 1 && !exempt[u.ID] {
					full[u.ID] = s.fits(ctx, u, uint64(len(msg)))
				}
			}
			if err := full[u.ID]; err != nil && !errors.Is(err, schema.ErrOverQuota) {
				return fmt.Errorf("deliver: %w", err) // the check itself failed: try again later
			}
			if full[u.ID] == nil {
				fits++
			}
		}
		if fits == 0 && len(us) > 0 {
			s.quotaRefused("deliver")
			errs = append(errs, fmt.Errorf("deliver to recipient %d: %w", i+1, full[us[0].ID]))
			continue
		}
		for _, u := range us {
			if seen[u.ID] || full[u.ID] != nil {
				continue // one copy per mailbox, whatever aliases were used
			}
			seen[u.ID] = true
			users = append(users, u)
			shards[u.Shard] = true
		}
	}
	if len(users) == 0 {
		return errors.Join(errs...)
	}
	if len(shards) > 1 {
		if err := s.spool(ctx, d.From, users, msg, now, d.Fingerprint, d.Junk); err != nil {
			return err
		}
		return partly(errs)
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deliverConcurrency)
	stored := 0
	for _, u := range users {
		g.Go(func() error {
			req := schema.NewRequestID()
			if d.Fingerprint != nil {
				req = deriveID("mailcluster/delivery-copy/", d.Fingerprint, u.ID[:])
			}
			quota := u.Quota
			if exempt[u.ID] {
				quota = directory.Quotas{}
			}
			err := s.deliverCopy(gctx, u, d.Junk, msg, now, req, quota)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if errors.Is(err, schema.ErrOverQuota) {
					s.quotaRefused("deliver")
				}
				errs = append(errs, fmt.Errorf("deliver: %w", err))
				return nil
			}
			stored++
			return nil
		})
	}
	_ = g.Wait()
	if stored == 0 {
		return errors.Join(errs...)
	}
	return partly(errs)
}

// partly returns the failures of a delivery that committed some copies,
// marked schema.ErrPartlyDelivered, or nil.
func partly(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", schema.ErrPartlyDelivered, errors.Join(errs...))
}

// spool commits msg once to the spool of the first recipient's shard,
// then stores every recipient's copy (see Deliver). It returns nil once
// the spool entry is committed.
func (s *Store) spool(ctx context.Context, from string, users []*directory.User, msg []byte, now time.Time, fingerprint []byte, junk bool) error {
	sort.Slice(users, func(i, j int) bool { return users[i].Shard < users[j].Shard })
	home := users[0].Shard
	id := schema.NewID()
	if fingerprint != nil {
		// A retry of the same message maps to the same spool entry, and
		// its copies to the same request ids.
		id = deriveID("mailcluster/spool/", fingerprint, nil)
	}
	keys := s.dir.SpoolKeys()
	pieces := splitMessage(msg)
	sealed := make([][]byte, len(pieces))
	var err error
	for i, p := range pieces {
		if sealed[i], err = s.sealer.Seal(keys, seal.KindChunk, id[:], seal.ChunkObject(id, uint32(i)), p); err != nil {
			return err
		}
	}
	sp := &schema.Spool{ID: id, Size: uint64(len(msg)), Junk: junk}
	if sp.From, err = s.sealer.Seal(keys, seal.KindChunk, id[:], seal.ChunkObject(id, spoolFromObject), []byte(from)); err != nil {
		return err
	}
	for _, u := range users {
		sp.Recipients = append(sp.Recipients, schema.SpoolRecipient{User: u.ID, Shard: u.Shard})
	}
	if sp.StagedChunks, sp.Chunks, err = s.stage(ctx, home, id, id, sealed); err != nil {
		return fmt.Errorf("deliver: spool: %w", err)
	}
	if _, err := s.c.ApplyRequest(ctx, home, id, sp); err != nil {
		return fmt.Errorf("deliver: spool: %w", err)
	}
	s.fanOut(ctx, home, id, users, msg, now, junk)
	return nil
}

// copyRequest is the request id of a spooled message's copy for one
// user: the same on every attempt, so the copy is committed once.
func copyRequest(spool, user schema.ID) schema.ID {
	return deriveID("mailcluster/spool-copy/", spool[:], user[:])
}

// deriveID hashes its inputs into an id (a request id that a retry must
// reproduce).
func deriveID(label string, a, b []byte) schema.ID {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(a)
	h.Write([]byte{0})
	h.Write(b)
	var id schema.ID
	copy(id[:], h.Sum(nil))
	return id
}

// fanOut stores the copies of a spooled message and records which are
// done. Failures are left to the spool worker.
func (s *Store) fanOut(ctx context.Context, home uint32, id schema.ID, users []*directory.User, msg []byte, date time.Time, junk bool) {
	var mu sync.Mutex
	var done []schema.ID
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deliverConcurrency)
	for _, u := range users {
		g.Go(func() error {
			// A spooled copy is not limited by the quota: the message
			// was accepted (checked before the spool commit).
			err := s.deliverCopy(gctx, u, junk, msg, date, copyRequest(id, u.ID), directory.Quotas{})
			if err != nil {
				s.log.Warn("spooled copy not committed yet; it will be retried", "shard", u.Shard, "err", err)
				return nil
			}
			mu.Lock()
			done = append(done, u.ID)
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	s.spoolDone(ctx, home, id, done)
}

func (s *Store) spoolDone(ctx context.Context, home uint32, id schema.ID, done []schema.ID) {
	if len(done) == 0 {
		return
	}
	if _, err := s.c.Apply(ctx, home, &schema.SpoolDone{ID: id, Users: done}); err != nil {
		s.log.Warn("record spooled copies as done; they will be checked again", "shard", home, "err", err)
	}
}

// spoolWorker retries, on the shards this node leads, the copies of
// spooled messages that are still missing after SpoolRetry.
func (s *Store) spoolWorker() {
	defer s.wg.Done()
	t := time.NewTicker(max(s.cfg.SpoolRetry/3, time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for n := uint32(1); int(n) <= s.c.MailShards(); n++ {
			if s.c.LeadsShard(n) {
				s.retrySpool(n)
			}
		}
	}
}

func (s *Store) retrySpool(home uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	res, err := s.c.Query(ctx, home, raftstore.Query{Kind: raftstore.QuerySpooled}, 0)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-s.cfg.SpoolRetry).UnixNano()
	for _, rec := range res.Spooled {
		if rec.Time > cutoff || ctx.Err() != nil {
			continue
		}
		if err := s.retrySpooled(ctx, home, rec); err != nil {
			s.log.Warn("retry spooled message", "shard", home, "err", err)
		}
	}
}

func (s *Store) retrySpooled(ctx context.Context, home uint32, rec schema.SpoolRecord) error {
	res, err := s.c.Query(ctx, home, raftstore.Query{Kind: raftstore.QuerySpoolChunks, Blob: rec.ID}, 0)
	if err != nil {
		return err
	}
	msg, err := s.openChunks(s.dir.SpoolKeys(), rec.ID, rec.ID, res.Chunks, rec.Size)
	if err != nil {
		return fmt.Errorf("open spooled message: %w", err)
	}
	var users []*directory.User
	var gone []schema.ID
	for _, r := range rec.Recipients {
		u, err := s.dir.UserByID(ctx, r.User)
		if errors.Is(err, schema.ErrNoSuchUser) {
			gone = append(gone, r.User) // deleted meanwhile: nothing to deliver
			continue
		}
		if err != nil {
			return err
		}
		users = append(users, u)
	}
	s.spoolDone(ctx, home, rec.ID, gone)
	s.fanOut(ctx, home, rec.ID, users, msg, time.Unix(0, rec.Time), rec.Junk)
	return nil
}

// junkMailboxName is the name of the Junk mailbox delivery creates.
const junkMailboxName = "Junk"

// deliverCopy stores one recipient's copy: in INBOX, or for junk in the
// user's Junk mailbox.
func (s *Store) deliverCopy(ctx context.Context, u *directory.User, junk bool, msg []byte, date time.Time, req schema.ID, quota directory.Quotas) error {
	var mbox schema.ID // INBOX
	if junk {
		var err error
		if mbox, err = s.junkMailbox(ctx, u); err != nil {
			return err
		}
	}
	res, err := s.storeMessage(ctx, u.Shard, u.ID, u.Keys, mbox, msg, nil, date, req, quota, false)
	if err != nil {
		return err
	}
	s.noteWrite(u.ID, res.Index, nil)
	return nil
}

// junkMailbox returns the user's mailbox for spam: the one with the \Junk
// special use, else one named Junk, else a new "Junk" with that use.
func (s *Store) junkMailbox(ctx context.Context, u *directory.User) (schema.ID, error) {
	return s.specialMailbox(ctx, u, schema.SpecialJunk, junkMailboxName)
}

// specialMailbox returns the user's mailbox with special use use, else
// one called name, else a new one called name with that use.
func (s *Store) specialMailbox(ctx context.Context, u *directory.User, use, name string) (schema.ID, error) {
	a := s.newAccount(u)
	defer a.Close()
	for attempt := 0; ; attempt++ {
		boxes, err := a.Mailboxes(ctx)
		if err != nil {
			return schema.ID{}, fmt.Errorf("find the %s mailbox: %w", name, err)
		}
		var named schema.ID
		for _, m := range boxes {
			if m.SpecialUse == use {
				return m.ID, nil
			}
			if strings.EqualFold(m.Name, name) {
				named = m.ID
			}
		}
		if !named.IsZero() {
			return named, nil
		}
		err = a.CreateMailbox(ctx, name, use)
		if err != nil && (!errors.Is(err, schema.ErrMailboxExists) || attempt > 0) {
			return schema.ID{}, fmt.Errorf("create the %s mailbox: %w", name, err)
		}
	}
}
