package cluster

import (
	"sync"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// watchBuffer is how many events a watcher holds before it is told to
// resynchronise instead.
const watchBuffer = 1024

// Watch streams the changes to one mailbox, decrypted, in commit order.
// Events caused by a write are queued before the write returns, so a
// session that drains the channel after its own command sees that
// command's effects. A watcher that falls behind receives one
// schema.ChangeResync in place of what it missed.
func (a *Account) Watch(mbox schema.ID) (<-chan schema.Change, func()) {
	ch := make(chan schema.Change, watchBuffer)
	var mu sync.Mutex
	closed := false
	push := func(c schema.Change) {
		select {
		case ch <- c:
			return
		default:
		}
		// Full: drop what is queued and ask for a reload.
		for {
			select {
			case <-ch:
				continue
			default:
			}
			break
		}
		ch <- schema.Change{Kind: schema.ChangeResync, Index: c.Index, Mailbox: mbox}
	}
	cancel := a.shard.Subscribe(a.user, func(events []raftstore.Event) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		for _, e := range events {
			if e.Kind != schema.ChangeResync && e.Mailbox != mbox {
				continue
			}
			c := schema.Change{Kind: e.Kind, Index: e.Index, ReqID: e.ReqID, Mailbox: e.Mailbox, UID: e.UID}
			if e.Message != nil {
				info, err := a.c.openMessage(a.keys, a.user, e.Message)
				if err != nil {
					a.c.log.Error("open message of change event", "err", err)
					c = schema.Change{Kind: schema.ChangeResync, Index: e.Index, Mailbox: mbox}
				} else {
					c.Message = &info
				}
			}
			push(c)
		}
	})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			mu.Lock()
			closed = true
			close(ch)
			mu.Unlock()
		})
	}
	return ch, stop
}
