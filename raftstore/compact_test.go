package raftstore

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestCompactReplicaShrinksAndKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	var targets []schema.ExpungeTarget
	var kept []schema.ID
	for i := 0; i < 40; i++ {
		// Large: each chunk in a bucket of its own, each log entry too.
		uid, blob := appendMsg(t, s, f, f.inbox, strings.Repeat(string(rune('a'+i)), 64<<10))
		if i < 2 {
			kept = append(kept, blob)
		} else {
			targets = append(targets, schema.ExpungeTarget{UID: uid})
		}
	}
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: targets})
	if err := s.Snapshot(); err != nil { // truncates the log
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := CompactReplica(dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.After >= res.Before/2 {
		t.Fatalf("compaction kept %d of %d bytes", res.After, res.Before)
	}
	s2 := openShard(t, dir)
	if got := uids(messages(t, s2, f.user, f.inbox)); !slices.Equal(got, []schema.UID{1, 2}) {
		t.Fatalf("after compaction uids %v", got)
	}
	for i, blob := range kept {
		var chunk []byte
		if err := s2.View(func(r *Reader) (err error) { chunk, err = r.Chunk(f.user, blob, 0); return }); err != nil {
			t.Fatalf("chunk of message %d after compaction: %v", i+1, err)
		}
		if want := strings.Repeat(string(rune('a'+i)), 64<<10); string(chunk) != want {
			t.Fatalf("chunk of message %d after compaction: %d bytes, not what was stored", i+1, len(chunk))
		}
	}
	if uid, _ := appendMsg(t, s2, f, f.inbox, "after"); uid != 41 {
		t.Fatalf("next uid %d", uid)
	}
}

func TestCompactRemovesTheWholeLog(t *testing.T) {
	s := openShard(t, t.TempDir())
	f := newFixture(t, s)
	for i := 0; i < 5; i++ {
		appendMsg(t, s, f, f.inbox, "logged")
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// An ordinary snapshot keeps the trailing entries...
	if first, _ := s.logs.FirstIndex(); first > 2 {
		t.Fatalf("ordinary snapshot removed trailing entries (first index %d)", first)
	}
	// ...Compact removes them, also when nothing changed since.
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, _ := s.logs.FirstIndex()
	last, _ := s.logs.LastIndex()
	if first < last {
		t.Fatalf("log keeps entries %d..%d after compaction", first, last)
	}
	if n := len(messages(t, s, f.user, f.inbox)); n != 5 {
		t.Fatalf("%d messages after compaction", n)
	}
	uid, _ := appendMsg(t, s, f, f.inbox, "after")
	if uid != 6 {
		t.Fatalf("next uid %d", uid)
	}
}

// slowHandover delays the TimeoutNow that ends a leadership transfer,
// so the transfer is under way for a while, and says when it was sent.
type slowHandover struct {
	*quietTransport
	sent chan struct{}
}

func (h *slowHandover) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	select {
	case h.sent <- struct{}{}:
	default:
	}
	time.Sleep(200 * time.Millisecond)
	return h.quietTransport.TimeoutNow(id, target, args, resp)
}

// TestCompactWaitsOutALeadershipTransfer: compacting a leader while it
// hands leadership over (as the leader balancer does) succeeds; raft
// refuses the barrier until the transfer ends.
func TestCompactWaitsOutALeadershipTransfer(t *testing.T) {
	timing := Timing{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: time.Second,
		LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 10 * time.Millisecond}
	var handovers []*slowHandover
	g := startTCPGroup(t, timing, func(_ int, q *quietTransport, cfg *Config) {
		h := &slowHandover{quietTransport: q, sent: make(chan struct{}, 1)}
		handovers = append(handovers, h)
		cfg.Transport = h
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for round := 0; round < 3; {
		if ctx.Err() != nil {
			t.Fatalf("round %d: no transfer began within a minute", round)
		}
		i := g.leader(t)
		transferred := make(chan error, 1)
		go func() { transferred <- g.shards[i].TransferLeadership(ctx, "", "") }()
		select {
		case <-handovers[i].sent:
		case err := <-transferred:
			// The replica had just lost leadership (to the last round's
			// transfer) and sent no handover: ask the new leader.
			t.Logf("round %d: transfer ended before its handover: %v", round, err)
			continue
		case <-ctx.Done():
			t.Fatal("the transfer did not begin")
		}
		if err := g.shards[i].Compact(ctx); err != nil {
			t.Fatalf("round %d: compact during a transfer: %v", round, err)
		}
		// A transfer may time out on a loaded machine; what is tested
		// is the compaction during it.
		if err := <-transferred; err != nil {
			t.Logf("round %d: transfer: %v", round, err)
		}
		round++
	}
}
