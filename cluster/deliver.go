package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// deliverConcurrency bounds recipients committed in parallel.
const deliverConcurrency = 4

// Deliver stores a message in the inbox of every recipient, each copy
// sealed with its owner's key. It returns nil only when every copy is
// committed; when some recipients fail it reports which, so the frontend
// answers with a temporary failure and the sender retries.
func (c *Cluster) Deliver(ctx context.Context, d schema.Delivery) error {
	if len(d.Recipients) == 0 {
		return fmt.Errorf("deliver: no recipients: %w", schema.ErrInvalid)
	}
	msg := normalizeCRLF(d.Message)
	now := time.Now()
	seen := map[schema.ID]bool{}
	var mu sync.Mutex
	var errs []error
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deliverConcurrency)
	for _, rcpt := range d.Recipients {
		rec, err := c.resolveRecipient(rcpt)
		if err != nil {
			errs = append(errs, fmt.Errorf("deliver to recipient %d: %w", len(errs)+1, err))
			continue
		}
		if seen[rec.ID] {
			continue // one copy per mailbox, whatever aliases were used
		}
		seen[rec.ID] = true
		g.Go(func() error {
			err := c.deliverOne(gctx, rec, msg, now)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) deliverOne(ctx context.Context, rec schema.UserRecord, msg []byte, date time.Time) error {
	keys, err := c.userKeysFor(rec)
	if err != nil {
		return fmt.Errorf("deliver: keys: %w", err)
	}
	shard, err := c.mailShard(rec.Shard)
	if err != nil {
		return err
	}
	if _, err := c.storeMessage(ctx, shard, rec.ID, keys, schema.ID{}, msg, nil, date); err != nil {
		return fmt.Errorf("deliver: %w", err)
	}
	return nil
}
