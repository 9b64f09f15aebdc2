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
func (a *Account) ClaimRecent(ctx context.Context, mbox schema.ID, upTo schema.UID) (schema.UID, error) {
	for attempt := 0; ; attempt++ {
		res, err := a.query(ctx, raftstore.Query{Kind: raftstore.QueryUserValue, Mailbox: mbox, Name: schema.RecentValue})
		if err != nil {
			return 0, fmt.Errorf("read recent: %w", err)
		}
		var cur schema.UID
		if len(res.Value) == 4 {
			cur = schema.UID(binary.BigEndian.Uint32(res.Value))
		}
		if upTo <= cur {
			return cur, nil
		}
		p := &schema.SwapUserValue{User: a.user, Scope: mbox, Name: schema.RecentValue,
			OldAbsent: res.Value == nil, Old: res.Value, New: binary.BigEndian.AppendUint32(nil, uint32(upTo))}
		_, err = a.applyUnwatched(ctx, p)
		if err == nil {
			return cur, nil
		}
		if !errors.Is(err, schema.ErrConflict) || attempt+1 >= maxSwapAttempts {
			return 0, fmt.Errorf("claim recent: %w", err)
		}
	}
}
