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

// maildropLock is a POP3 maildrop lock held through an account: a lease
// in the user's mail shard, renewed in the background.
type maildropLock struct {
	a     *Account
	lease *schema.Lease
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu   sync.Mutex
	lost bool // another session took the lock after this one's ran out
	// renewed is when the last renewal that committed was proposed (on
	// the monotonic clock, which runs on through a pause of the process).
	renewed time.Time
}

// LockMaildrop takes the user's exclusive POP3 maildrop lock (RFC 1939
// section 8) for the whole cluster: a lease in the user's mail shard,
// committed like mail, renewed while the session lasts. Another session,
// on any node, gets schema.ErrInUse. If the holding node dies, the lease
// runs out by itself; if it only could not renew it for a lease's time
// (cut off from the others, paused), another session may take the lock
// meanwhile, and ConfirmMaildrop tells the first one so.
func (a *Account) LockMaildrop(ctx context.Context) (func(), error) {
	ttl := a.s.cfg.MaildropLease
	l := &maildropLock{a: a, stop: make(chan struct{}), done: make(chan struct{}), renewed: time.Now(),
		lease: &schema.Lease{Key: "pop3/" + a.user.String(), Holder: schema.NewID(), TTL: int64(ttl)}}
	if _, err := a.s.c.Apply(ctx, a.shard, l.lease); err != nil {
		if errors.Is(err, schema.ErrConflict) {
			return nil, fmt.Errorf("lock maildrop: %w", schema.ErrInUse)
		}
		return nil, fmt.Errorf("lock maildrop: %w", err)
	}
	a.mu.Lock()
	a.maildrop = l
	a.mu.Unlock()
	go l.renewEvery(ttl / 3)
	return l.release, nil
}

// ConfirmMaildrop reports whether this account still holds the maildrop
// lock it took (protocols.Account). A renewal proposed less than a third
// of the lease ago vouches for it (no other session takes it before the
// lease runs out, two thirds of it later: lease times are the shard
// leader's, see raftstore/leasetime.go); otherwise it is renewed now.
func (a *Account) ConfirmMaildrop(ctx context.Context) error {
	a.mu.Lock()
	l := a.maildrop
	a.mu.Unlock()
	if l == nil {
		return fmt.Errorf("confirm maildrop lock: none taken: %w", schema.ErrInUse)
	}
	l.mu.Lock()
	lost, renewed := l.lost, l.renewed
	l.mu.Unlock()
	if !lost && time.Since(renewed) < a.s.cfg.MaildropLease/3 {
		return nil
	}
	return l.renew(ctx)
}

// renew renews the lease once: schema.ErrInUse once another session holds
// it (and from then on).
func (l *maildropLock) renew(ctx context.Context) error {
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost {
		return fmt.Errorf("maildrop lock: %w", schema.ErrInUse)
	}
	proposed := time.Now()
	if _, err := l.a.s.c.Apply(ctx, l.a.shard, l.lease); err != nil {
		if !errors.Is(err, schema.ErrConflict) {
			return fmt.Errorf("renew maildrop lock: %w", err)
		}
		l.mu.Lock()
		first := !l.lost
		l.lost = true
		l.mu.Unlock()
		if first {
			l.a.s.log.Warn("maildrop lock lost: it ran out without renewal and another POP3 session took it; this session deletes nothing")
		}
		return fmt.Errorf("maildrop lock: %w", schema.ErrInUse)
	}
	l.mu.Lock()
	if proposed.After(l.renewed) {
		l.renewed = proposed
	}
	l.mu.Unlock()
	return nil
}

func (l *maildropLock) renewEvery(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		err := l.renew(ctx)
		cancel()
		switch {
		case errors.Is(err, schema.ErrInUse):
			return // another session holds it: nothing left to renew
		case err != nil:
			l.a.s.log.Warn("renew the maildrop lock", "err", err)
		}
	}
}

// release stops the renewals and gives the lock back, unless another
// session holds it now; it may be called more than once.
func (l *maildropLock) release() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.a.mu.Lock()
		if l.a.maildrop == l {
			l.a.maildrop = nil
		}
		l.a.mu.Unlock()
		rel := *l.lease
		rel.Release = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := l.a.s.c.Apply(ctx, l.a.shard, &rel); err != nil {
			l.a.s.log.Warn("release the maildrop lock; it expires by itself", "err", err)
		}
	})
}
