package raftstore

import (
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// QueryKind names a read of a mail shard's state.
type QueryKind uint8

// Named reads. Each runs in one read transaction, so what it returns is
// consistent as of one applied index.
const (
	// QueryMailboxes: every mailbox record of User.
	QueryMailboxes QueryKind = iota + 1
	// QueryMailbox: the mailbox Mailbox of User.
	QueryMailbox
	// QueryMailboxByName: the mailbox of User with name key NameKey.
	QueryMailboxByName
	// QuerySnapshot: the mailbox Mailbox and all its messages.
	QuerySnapshot
	// QueryMessages: the mailbox Mailbox and those of UIDs that exist.
	QueryMessages
	// QueryHeader: chunk 0 (the header section) of Blob.
	QueryHeader
	// QueryBody: the blob record and every chunk of Blob.
	QueryBody
	// QueryUserState: User's bookkeeping (whether the user exists here).
	QueryUserState
	// QuerySpooled: every spooled message's record.
	QuerySpooled
	// QuerySpoolChunks: every chunk of the spooled message Blob.
	QuerySpoolChunks
	// QueryUserValue: User's value Name in the scope Mailbox (zero: the
	// user's own), nil when not set (schema.SwapUserValue).
	QueryUserValue
	// QueryOutbound: every outbound queue entry's record.
	QueryOutbound
	// QueryOutboundChunks: the record and every chunk of the outbound
	// queue entry Blob.
	QueryOutboundChunks
	// QueryOutboundEntry: the record of the outbound queue entry Blob.
	QueryOutboundEntry
	// QuerySearchRecords: the sealed search records of User's Blobs, in
	// Chunks (empty for a blob without one).
	QuerySearchRecords
)

// Query is a named read, sent to whichever replica serves it (over the
// cluster RPC when that replica is on another node).
type Query struct {
	Kind    QueryKind
	User    schema.ID
	Mailbox schema.ID
	NameKey schema.NameKey
	Blob    schema.ID
	UIDs    []schema.UID
	Name    string // QueryUserValue
	// Blobs are the blobs of QuerySearchRecords.
	Blobs []schema.ID
}

// QueryResult is what a Query read. Which fields are set depends on the
// kind; Code carries a data-model error (no such mailbox...) to the caller
// on another node.
type QueryResult struct {
	Code      schema.ErrCode
	Index     uint64 // the applied index the read saw
	Mailboxes []schema.MailboxRecord
	Mailbox   schema.MailboxRecord
	Messages  []schema.MessageRecord
	Blob      schema.BlobRecord
	Chunks    [][]byte
	State     schema.UserState
	Spooled   []schema.SpoolRecord
	Value     []byte // QueryUserValue; QuerySnapshot: the mailbox's \Recent claim
	// ValueRead says Value holds what QuerySnapshot read of the claim
	// (nil: none yet); a replica of the version before reads none.
	ValueRead bool
	Outbound  []schema.OutboundRecord
}

// Err returns the result's data-model error, if any.
func (r *QueryResult) Err() error { return r.Code.Err() }

// errQueryKind is returned for a query this replica does not know.
var errQueryKind = errors.New("raftstore: unknown query")

// Query runs a named read on this replica's state. A data-model error is
// returned both as the error and in the result's Code.
//
// A read of one user's mail does not wait for the shard's pending group
// unless that group changed the user's mail (fsm.readUser).
func (s *Shard) Query(q Query) (*QueryResult, error) {
	res := &QueryResult{}
	answer := func(r *Reader, index uint64) error {
		res.Index = index
		return r.answer(q, res)
	}
	var err error
	if q.userMail() {
		err = s.fsm.readUser(q.User, answer)
	} else {
		err = s.fsm.read(func(r *Reader) error { return answer(r, r.AppliedIndex()) })
	}
	return res, res.setCode(err)
}

// QueryCommitted answers q from the state file as last committed,
// neither committing the pending group nor holding off applies: it may
// miss the entries of the group under way (up to a group's time). For a
// caller that reads much of the state and can do without them (a
// scrub); Index is the applied index of what was read.
func (s *Shard) QueryCommitted(q Query) (*QueryResult, error) {
	res := &QueryResult{}
	err := s.fsm.readCommitted(func(r *Reader) error {
		res.Index = r.AppliedIndex()
		return r.answer(q, res)
	})
	return res, res.setCode(err)
}

// userMail reports whether q reads nothing but the mail of q.User.
func (q Query) userMail() bool {
	switch q.Kind {
	case QueryMailboxes, QueryMailbox, QueryMailboxByName, QuerySnapshot, QueryMessages,
		QueryHeader, QueryBody, QueryUserState, QueryUserValue, QuerySearchRecords:
		return true
	}
	return false
}

// Immutable reports whether q reads only what a blob's append wrote: its
// header, its chunks or its search record, which stay as they were
// written for as long as the blob exists.
func (q Query) Immutable() bool {
	switch q.Kind {
	case QueryHeader, QueryBody, QuerySearchRecords:
		return true
	}
	return false
}

// QueryHeld answers an immutable query (Query.Immutable) from this
// replica, whether it leads or follows, when it holds every blob the
// query names: what it reads is then what the leader would read. held is
// false when it does not hold them all (a replica behind the leader, a
// blob since expunged); the caller asks the leader, whose answer is
// final.
//
// The state file as committed is read first: a blob it holds reads the
// same there as anywhere, so such a read waits neither for the pending
// group nor for a commit of it, even one that hangs. A blob only the
// pending group holds is read as Query reads; while a commit of the
// state file hangs, that read fails with ErrStuck at once (see
// fsm.read), and the caller asks the leader then too.
func (s *Shard) QueryHeld(q Query) (res *QueryResult, held bool, err error) {
	if !q.Immutable() {
		return nil, false, nil
	}
	blobs := q.Blobs
	if q.Kind != QuerySearchRecords {
		blobs = []schema.ID{q.Blob}
	}
	res = &QueryResult{}
	answer := func(r *Reader, index uint64) error {
		if held = r.holdsBlobs(q.User, blobs); !held {
			return nil
		}
		res.Index = index
		return r.answer(q, res)
	}
	if !s.fsm.failed.Load() {
		err = s.fsm.readCommitted(func(r *Reader) error { return answer(r, r.AppliedIndex()) })
	}
	if err == nil && !held {
		err = s.fsm.readUser(q.User, answer)
	}
	if err = res.setCode(err); err != nil || !held {
		return nil, false, err
	}
	return res, true, nil
}

// holdsBlobs reports whether the state holds every one of a user's blobs.
func (r *Reader) holdsBlobs(user schema.ID, blobs []schema.ID) bool {
	u, err := r.userMail(user)
	if err != nil {
		return false
	}
	for _, id := range blobs {
		if u.blob(id) == nil {
			return false
		}
	}
	return true
}

// answer runs q in r and fills in res.
func (r *Reader) answer(q Query, res *QueryResult) (err error) {
	switch q.Kind {
	case QueryMailboxes:
		res.Mailboxes, err = r.Mailboxes(q.User)
	case QueryMailbox:
		res.Mailbox, err = r.Mailbox(q.User, q.Mailbox)
	case QueryMailboxByName:
		res.Mailbox, err = r.MailboxByName(q.User, q.NameKey)
	case QuerySnapshot:
		if res.Mailbox, err = r.Mailbox(q.User, q.Mailbox); err == nil {
			res.Messages, err = r.Messages(q.User, q.Mailbox)
		}
		if err == nil {
			// SELECT claims \Recent next (Account.ClaimRecent), which
			// starts from this value rather than a read of its own.
			res.Value, err = r.UserValue(q.User, q.Mailbox, schema.RecentValue)
			res.ValueRead = err == nil
		}
	case QueryMessages:
		if res.Mailbox, err = r.Mailbox(q.User, q.Mailbox); err != nil {
			return err
		}
		for _, uid := range q.UIDs {
			if m, err := r.Message(q.User, q.Mailbox, uid); err == nil {
				res.Messages = append(res.Messages, m)
			}
		}
	case QueryHeader:
		var c []byte
		if c, err = r.Chunk(q.User, q.Blob, 0); err == nil {
			res.Chunks = [][]byte{c}
		}
	case QueryBody:
		if res.Blob, err = r.Blob(q.User, q.Blob); err != nil {
			return err
		}
		res.Chunks = make([][]byte, res.Blob.Chunks)
		for i := range res.Chunks {
			if res.Chunks[i], err = r.Chunk(q.User, q.Blob, uint32(i)); err != nil {
				return err
			}
		}
	case QueryUserState:
		res.State, err = r.UserState(q.User)
	case QuerySpooled:
		res.Spooled, err = r.Spooled()
	case QuerySpoolChunks:
		var recs []schema.SpoolRecord
		if recs, err = r.Spooled(); err != nil {
			return err
		}
		for _, rec := range recs {
			if rec.ID != q.Blob {
				continue
			}
			res.Chunks = make([][]byte, rec.Chunks)
			for i := range res.Chunks {
				if res.Chunks[i], err = r.SpoolChunk(rec.ID, uint32(i)); err != nil {
					return err
				}
			}
			return nil
		}
		return schema.ErrNoSuchMessage
	case QueryUserValue:
		res.Value, err = r.UserValue(q.User, q.Mailbox, q.Name)
	case QueryOutbound:
		res.Outbound, err = r.Outbound()
	case QueryOutboundEntry:
		var rec schema.OutboundRecord
		if rec, err = r.OutboundEntry(q.Blob); err == nil {
			res.Outbound = []schema.OutboundRecord{rec}
		}
	case QueryOutboundChunks:
		var rec schema.OutboundRecord
		if rec, err = r.OutboundEntry(q.Blob); err != nil {
			return err
		}
		res.Outbound = []schema.OutboundRecord{rec}
		res.Chunks = make([][]byte, rec.Chunks)
		for i := range res.Chunks {
			if res.Chunks[i], err = r.OutboundChunk(rec.ID, uint32(i)); err != nil {
				return err
			}
		}
	case QuerySearchRecords:
		res.Chunks, err = r.SearchRecords(q.User, q.Blobs)
	default:
		return fmt.Errorf("%w %d", errQueryKind, q.Kind)
	}
	return err
}

// setCode records a data-model error of the read in res.Code, for the
// caller on another node, and returns err.
func (res *QueryResult) setCode(err error) error {
	if err != nil {
		if code := schema.CodeOf(err); code != schema.CodeInvalid || errors.Is(err, schema.ErrInvalid) {
			res.Code = code
		}
	}
	return err
}
