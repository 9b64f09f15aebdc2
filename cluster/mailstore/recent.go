package mailstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// ClaimRecent claims the mailbox's messages up to upTo as \Recent for the
// calling session and returns the highest UID claimed before: the
// messages above it, up to upTo, are \Recent for this session and for no
// other (RFC 3501 section 2.3.2), on whichever node the sessions are. A
// claim below the current one changes nothing; upTo 0 only reads.
//
// A claim (upTo above 0) first starts from the claim the account's last
// Snapshot of the mailbox read, if any (SELECT reads the mailbox, then
// claims), which saves a read, through the shard's leader on another
// node. Claims only rise, so an older value changes nothing: if it
// already covers upTo, so does the current one, and no message up to
// upTo is \Recent here under either; if not, the swap finds the claim
// changed and the next attempt reads it. A read (upTo 0) is answered
// with the claim as it is now, since its caller counts by it.
func (a *Account) ClaimRecent(ctx context.Context, mbox schema.ID, upTo schema.UID) (schema.UID, error) {
	a.mu.Lock()
	known := a.claim
	a.claim = knownClaim{}
	a.mu.Unlock()
	for attempt := 0; ; attempt++ {
		var value []byte
		if attempt == 0 && upTo > 0 && known.ok && known.mbox == mbox {
			value = known.value
		} else {
			res, err := a.query(ctx, raftstore.Query{Kind: raftstore.QueryUserValue, Mailbox: mbox, Name: schema.RecentValue})
			if err != nil {
				return 0, fmt.Errorf("read recent: %w", err)
			}
			value = res.Value
		}
		var cur schema.UID
		if len(value) == 4 {
			cur = schema.UID(binary.BigEndian.Uint32(value))
		}
		if upTo <= cur {
			return cur, nil
		}
		p := &schema.SwapUserValue{User: a.user, Scope: mbox, Name: schema.RecentValue,
			OldAbsent: value == nil, Old: value, New: binary.BigEndian.AppendUint32(nil, uint32(upTo))}
		_, err := a.applyUnwatched(ctx, p)
		if err == nil {
			return cur, nil
		}
		if !errors.Is(err, schema.ErrConflict) || attempt+1 >= maxSwapAttempts {
			return 0, fmt.Errorf("claim recent: %w", err)
		}
	}
}
