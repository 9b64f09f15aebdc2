package mailstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// DefaultMaildropLease is how long a maildrop lock outlives its holder's
// last renewal: the time a lock left by a dead node blocks the user.
const DefaultMaildropLease = 30 * time.Second

// LockMaildrop takes the user's exclusive POP3 maildrop lock (RFC 1939
// section 8) for the whole cluster: a lease in the user's mail shard,
// committed like mail, renewed while the session lasts. Another session,
// on any node, gets schema.ErrInUse. If the holding node dies, the lease
// runs out by itself.
func (a *Account) LockMaildrop(ctx context.Context) (func(), error) {
	ttl := a.s.cfg.MaildropLease
	lease := &schema.Lease{Key: "pop3/" + a.user.String(), Holder: schema.NewID(), TTL: int64(ttl)}
	if _, err := a.s.c.Apply(ctx, a.shard, lease); err != nil {
		if errors.Is(err, schema.ErrConflict) {
			return nil, fmt.Errorf("lock maildrop: %w", schema.ErrInUse)
		}
		return nil, fmt.Errorf("lock maildrop: %w", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(context.Background(), ttl/3)
			_, err := a.s.c.Apply(rctx, a.shard, lease)
			cancel()
			if err != nil {
				a.s.log.Warn("renew the maildrop lock", "err", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			rel := *lease
			rel.Release = true
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := a.s.c.Apply(rctx, a.shard, &rel); err != nil {
				a.s.log.Warn("release the maildrop lock; it expires by itself", "err", err)
			}
		})
	}, nil
}
