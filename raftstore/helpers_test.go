package raftstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// openShard opens a single-voter shard in dir and waits for it to lead.
func openShard(t *testing.T, dir string) *Shard {
	t.Helper()
	return openShardTiming(t, dir, Timing{})
}

// openShardTiming opens a single-voter shard in dir with timing, its
// heartbeat and election timeouts at 100 ms, and waits for it to lead.
func openShardTiming(t *testing.T, dir string, timing Timing) *Shard {
	t.Helper()
	return openShardConfig(t, Config{Dir: dir, Timing: timing})
}

// openShardConfig opens cfg as shard 1 of node n1, a single voter, with
// heartbeat and election timeouts of 100 ms, and waits for it to lead.
func openShardConfig(t *testing.T, cfg Config) *Shard {
	t.Helper()
	cfg.Shard, cfg.NodeID, cfg.Bootstrap = 1, "n1", true
	cfg.Timing.HeartbeatTimeout, cfg.Timing.ElectionTimeout = 100*time.Millisecond, 100*time.Millisecond
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// commitHold makes a shard's state-file commits hang while it is on, as
// a disk that stops answering does.
type commitHold struct {
	on      atomic.Bool
	release chan struct{}
	started chan struct{}
	once    sync.Once
}

// openShardHoldingCommits opens a single-voter shard that groups its
// commits (Config.GroupLeaderCommits) and holds them while the returned
// commitHold is on.
func openShardHoldingCommits(t *testing.T) (*Shard, *commitHold) {
	t.Helper()
	h := &commitHold{release: make(chan struct{}), started: make(chan struct{}, 1)}
	s := openShardConfig(t, Config{Dir: t.TempDir(), GroupLeaderCommits: true, beforeStateCommit: h.wait})
	t.Cleanup(h.let) // before the shard closes: a held commit would hold Close
	return s, h
}

func (h *commitHold) wait() {
	if !h.on.Load() {
		return
	}
	select {
	case h.started <- struct{}{}:
	default:
	}
	<-h.release
}

// waitStarted waits until a commit is held.
func (h *commitHold) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-h.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the group's commit did not start")
	}
}

// let stops holding commits and lets a held one go on.
func (h *commitHold) let() {
	h.on.Store(false)
	h.once.Do(func() { close(h.release) })
}

func apply(t *testing.T, s *Shard, p schema.Payload) *schema.Result {
	t.Helper()
	r, err := applyErr(s, schema.NewID(), p)
	if err != nil {
		t.Fatalf("apply %s: %v", p.Op(), err)
	}
	return r
}

func applyErr(s *Shard, req schema.ID, p schema.Payload) (*schema.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Apply(ctx, schema.Command{ReqID: req, Time: time.Now().UnixNano(), Payload: p})
}

// fixture is a user with an inbox and one more mailbox.
type fixture struct {
	user, inbox, other schema.ID
}

func nameKey(s string) schema.NameKey {
	var k schema.NameKey
	copy(k[:], s)
	return k
}

func newFixture(t *testing.T, s *Shard) fixture {
	t.Helper()
	f := fixture{user: schema.NewID(), inbox: schema.NewID(), other: schema.NewID()}
	apply(t, s, &schema.InitUser{User: f.user, Mailboxes: []schema.NewMailbox{
		{ID: f.inbox, NameKey: nameKey("INBOX"), Sealed: []byte("sealed-inbox"), Inbox: true},
		{ID: f.other, NameKey: nameKey("Archive"), Sealed: []byte("sealed-archive")},
	}})
	return f
}

func appendMsg(t *testing.T, s *Shard, f fixture, mbox schema.ID, body string) (schema.UID, schema.ID) {
	t.Helper()
	blob := schema.NewID()
	r := apply(t, s, &schema.Append{User: f.user, Mailbox: mbox, Message: schema.NewID(), Blob: blob,
		Size: uint64(len(body)), Sealed: []byte("attrs"), Chunks: [][]byte{[]byte(body)}})
	return r.UIDs[0], blob
}

func messages(t *testing.T, s *Shard, user, mbox schema.ID) []schema.MessageRecord {
	t.Helper()
	var out []schema.MessageRecord
	if err := s.View(func(r *Reader) (err error) { out, err = r.Messages(user, mbox); return }); err != nil {
		t.Fatal(err)
	}
	return out
}

func mailbox(t *testing.T, s *Shard, user, mbox schema.ID) schema.MailboxRecord {
	t.Helper()
	var out schema.MailboxRecord
	if err := s.View(func(r *Reader) (err error) { out, err = r.Mailbox(user, mbox); return }); err != nil {
		t.Fatal(err)
	}
	return out
}

func uids(ms []schema.MessageRecord) []schema.UID {
	out := make([]schema.UID, len(ms))
	for i, m := range ms {
		out[i] = m.UID
	}
	return out
}
