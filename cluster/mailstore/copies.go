package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	qerr := a.s.c.QueryCopies(ctx, a.shard, q, 0, func(node string, res *raftstore.QueryResult) bool {
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
	repairs := damagedPieces(a.user, q, bad, good)
	a.s.log.Warn("a replica's copy of a message did not open; answered from another replica's copy",
		"shard", a.shard, "blob", blobOf(q), "err", err, "damaged_on", badNodes, "good_on", goodNode, "pieces", len(repairs))
	a.repair(ctx, schema.LevelRepairBlob, repairs)
	return nil
}

// damagedPieces returns a repair for every piece of good that one of
// bad holds other bytes of, at the same length (damage keeps a value's
// length; bbolt finds a changed length itself).
func damagedPieces(user schema.ID, q raftstore.Query, bad []*raftstore.QueryResult, good *raftstore.QueryResult) []schema.Payload {
	var out []schema.Payload
	for i, g := range good.Chunks {
		for _, b := range bad {
			if i >= len(b.Chunks) || len(b.Chunks[i]) != len(g) || bytes.Equal(b.Chunks[i], g) {
				continue
			}
			r := &schema.RepairBlob{User: user, Blob: q.Blob, Index: uint32(i), Sealed: g}
			if q.Kind == raftstore.QuerySearchRecords {
				r = &schema.RepairBlob{User: user, Blob: q.Blobs[i], SearchRecord: true, Sealed: g}
			}
			out = append(out, r)
			break
		}
	}
	return out
}

// repair commits the repairs (RepairBlob or RepairRecord), each on
// every replica of the account's shard, once every node applies their
// form (level). A failure is logged: the answer came from a good copy
// anyway, and the next read of the damaged copy finds it again.
func (a *Account) repair(ctx context.Context, level int, repairs []schema.Payload) {
	if len(repairs) == 0 {
		return
	}
	if a.s.c.CommandLevel() < level {
		a.s.log.Warn("damaged copy left as it is: a node of the cluster runs software that cannot mend it",
			"shard", a.shard, "op", repairs[0].Op())
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), repairWait)
	defer cancel()
	for _, r := range repairs {
		if _, err := a.s.c.Apply(ctx, a.shard, r); err != nil {
			a.s.log.Warn("put back a damaged copy", "shard", a.shard, "op", r.Op(), "err", err)
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

// Mailbox and message records change (a rename, a flag change), so a
// copy of one read on another replica is only good if that replica had
// applied at least what the damaged copy's had: QueryCopies waits for
// it. The repair names the damaged bytes (schema.RepairRecord), so a
// replica whose record changed meanwhile keeps its change.

// errRecordChanged says a damaged message record's good copy is of a
// later version (another MODSEQ) than the answer it was read for: the
// caller reads again, and the change has written over the damage on
// every replica that applied it.
var errRecordChanged = errors.New("a message changed while its damaged record was read elsewhere")

// recordRetries bounds the reads of one answer whose damaged records
// changed meanwhile (errRecordChanged).
const recordRetries = 3

// damagedRecord is one record of an answer whose sealed part does not
// open, and where to put its good copy.
type damagedRecord struct {
	mailbox *schema.MailboxRecord // a mailbox record of the answer
	message *schema.MessageRecord // or a message record of mailbox mbox
	good    []byte                // the sealed part of a copy that opens
	node    string
}

// readOpen runs q and hands its answer to open. When open finds a
// mailbox record (with mailboxes) or a message record of mbox damaged,
// the records are mended from other replicas' copies (mendRecords) and
// opened again; when a damaged message changed meanwhile, the read is
// made again. It returns the answer open last accepted or failed on.
func (a *Account) readOpen(ctx context.Context, mbox schema.ID, q raftstore.Query, mailboxes bool, open func(*raftstore.QueryResult) error) (*raftstore.QueryResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := a.query(ctx, q)
		if err != nil {
			return nil, err
		}
		if err = open(res); err != nil && damagedCopy(err) {
			if err = a.mendRecords(ctx, mbox, res, mailboxes, err); err == nil {
				err = open(res)
			}
		}
		if errors.Is(err, errRecordChanged) && attempt < recordRetries {
			continue
		}
		return res, err
	}
}

// mendRecords puts in res, read at res.Index, the sealed part of another
// replica's copy in place of every message record of mbox, and with
// mailboxes every mailbox record, that does not open, and has each
// damaged copy put back (schema.RepairRecord). cause is what opening res
// failed with; it is returned when some record has no copy that opens.
func (a *Account) mendRecords(ctx context.Context, mbox schema.ID, res *raftstore.QueryResult, mailboxes bool, cause error) error {
	var boxes, msgs []*damagedRecord
	check := func(rec *schema.MailboxRecord) {
		if _, _, err := a.openMailbox(*rec); damagedCopy(err) {
			boxes = append(boxes, &damagedRecord{mailbox: rec})
		}
	}
	if mailboxes {
		if !res.Mailbox.ID.IsZero() {
			check(&res.Mailbox)
		}
		for i := range res.Mailboxes {
			check(&res.Mailboxes[i])
		}
	}
	var uids []schema.UID
	for i := range res.Messages {
		if _, err := a.s.openMessage(a.keys, a.user, &res.Messages[i]); damagedCopy(err) {
			msgs = append(msgs, &damagedRecord{message: &res.Messages[i]})
			uids = append(uids, res.Messages[i].UID)
		}
	}
	if len(boxes)+len(msgs) == 0 {
		return cause
	}
	var changed bool
	if len(boxes) > 0 {
		a.goodRecords(ctx, raftstore.Query{Kind: raftstore.QueryMailboxes}, res.Index, boxes, &changed)
	}
	if len(msgs) > 0 {
		a.goodRecords(ctx, raftstore.Query{Kind: raftstore.QueryMessages, Mailbox: mbox, UIDs: uids}, res.Index, msgs, &changed)
	}
	var repairs []schema.Payload
	missing := 0
	for _, d := range append(boxes, msgs...) {
		if d.good == nil {
			missing++
			continue
		}
		r := &schema.RepairRecord{User: a.user, Mailbox: mbox, Sealed: d.good}
		var bad []byte
		if d.mailbox != nil {
			r.Mailbox, bad = d.mailbox.ID, d.mailbox.Sealed
			d.mailbox.Sealed = d.good
		} else {
			r.UID, bad = d.message.UID, d.message.Sealed
			d.message.Sealed = d.good
		}
		sum := sha256.Sum256(bad)
		r.Damaged = sum[:]
		repairs = append(repairs, r)
		a.s.log.Warn("a replica's copy of a mailbox or message record did not open; answered from another replica's copy",
			"shard", a.shard, "mailbox", r.Mailbox, "uid", r.UID, "err", cause, "good_on", d.node)
	}
	a.repair(ctx, schema.LevelRepairRecord, repairs)
	switch {
	case missing > 0 && changed:
		return errRecordChanged
	case missing > 0:
		a.s.log.Error("no replica's copy of a mailbox or message record opens", "shard", a.shard,
			"mailbox", mbox, "records", missing, "err", cause)
		return cause
	}
	return nil
}

// goodRecords reads q on the other replicas, at index or later, and
// keeps in each of want the sealed part of the first copy that opens.
// A message's copy counts only at the MODSEQ of the damaged one; one at
// another sets changed.
func (a *Account) goodRecords(ctx context.Context, q raftstore.Query, index uint64, want []*damagedRecord, changed *bool) {
	q.User = a.user
	left := len(want)
	err := a.s.c.QueryCopies(ctx, a.shard, q, index, func(node string, res *raftstore.QueryResult) bool {
		for _, d := range want {
			if d.good != nil {
				continue
			}
			if d.mailbox != nil {
				for _, rec := range append(res.Mailboxes, res.Mailbox) {
					if rec.ID != d.mailbox.ID {
						continue
					}
					if _, _, err := a.openMailbox(rec); err == nil {
						d.good, d.node = rec.Sealed, node
						left--
					}
					break
				}
				continue
			}
			for i := range res.Messages {
				rec := &res.Messages[i]
				if rec.UID != d.message.UID {
					continue
				}
				if _, err := a.s.openMessage(a.keys, a.user, rec); err != nil {
					break
				}
				if rec.ModSeq != d.message.ModSeq || rec.ID != d.message.ID {
					*changed = true
					break
				}
				d.good, d.node = rec.Sealed, node
				left--
				break
			}
		}
		return left > 0
	})
	if err != nil && left > 0 {
		a.s.log.Warn("read other replicas' copies of records", "shard", a.shard, "err", err)
	}
}
