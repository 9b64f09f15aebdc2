package mailstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/cluster/clustertest"
	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestQuotaHoldsUnderRacingNodes: three nodes deliver to one user at
// once; the user's shard applies the limit at commit, so exactly as many
// messages as fit are stored, the others are refused with
// schema.ErrOverQuota, and every replica agrees on the usage.
func TestQuotaHoldsUnderRacingNodes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, MailShards: 1})
	c.WaitConverged(time.Minute)
	const user = "racer@example.test"
	c.AddUser(user, pw)
	msg := []byte("Subject: race\r\n\r\n" + strings.Repeat("r", 1000) + "\r\n")
	size := uint64(len(msg))
	const fits = 5
	limit := fits*size + size/2
	if err := c.Nodes[0].Directory().SetQuota(ctx(t), user, directory.QuotaSetting{Limit: limit}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		c.Eventually(30*time.Second, "quota known on "+n.ID, func() error {
			u, err := n.Directory().UserByAddress(context.Background(), user)
			if err != nil {
				return err
			}
			if u.Quota.Bytes != limit {
				return fmt.Errorf("quota %d, want %d", u.Quota.Bytes, limit)
			}
			return nil
		})
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored, refused := 0, 0
	var other []error
	for _, n := range c.Nodes {
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := n.Store().Deliver(ctx(t), schema.Delivery{From: "x@remote.example", Recipients: []string{user}, Message: msg})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					stored++
				case errors.Is(err, schema.ErrOverQuota):
					refused++
				default:
					other = append(other, err)
				}
			}()
		}
	}
	wg.Wait()
	if len(other) > 0 || stored != fits || refused != 12-fits {
		t.Fatalf("stored %d, refused %d, other errors %v; want %d stored", stored, refused, other, fits)
	}
	u, err := c.Nodes[0].Directory().UserByAddress(ctx(t), user)
	if err != nil {
		t.Fatal(err)
	}
	// Every replica of the user's shard holds the same usage.
	for _, n := range c.Nodes {
		c.Eventually(30*time.Second, "usage on the replica of "+n.ID, func() error {
			for _, s := range n.Cluster().Shards() {
				if s.ID() != u.Shard {
					continue
				}
				var b, m uint64
				if err := s.View(func(r *raftstore.Reader) (err error) { b, m, err = r.Usage(u.ID); return err }); err != nil {
					return err
				}
				if b != fits*size || m != fits {
					return fmt.Errorf("usage %d bytes in %d messages, want %d in %d", b, m, fits*size, fits)
				}
				return nil
			}
			return errors.New("no replica of the user's shard")
		})
	}
}
