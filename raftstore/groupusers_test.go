package raftstore

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// TestReadOfAnotherUserPassesAHangingCommit: while the commit of a group
// hangs, holding the group's writer, a read of a user the group did not
// touch answers at once from the committed state file, as of the last
// applied index, and so does a read of a blob that file holds; a read of
// the user the group changed gives up with ErrStuck as before.
func TestReadOfAnotherUserPassesAHangingCommit(t *testing.T) {
	s, hold := openShardHoldingCommits(t)
	busy, quiet := newFixture(t, s), newFixture(t, s)
	_, quietBlob := appendMsg(t, s, quiet, quiet.inbox, "in the state file")
	if err := s.fsm.flush(); err != nil {
		t.Fatal(err)
	}
	hold.on.Store(true)
	busyBlob := schema.NewID()
	applied := apply(t, s, &schema.Append{User: busy.user, Mailbox: busy.inbox, Message: schema.NewID(), Blob: busyBlob,
		Size: 4, Sealed: []byte("attrs"), Chunks: [][]byte{[]byte("body")}}).Index
	hold.waitStarted(t)

	type answer struct {
		res  *QueryResult
		held bool
		err  error
	}
	ask := func(what string, q func() answer) answer {
		t.Helper()
		ch := make(chan answer, 1)
		go func() { ch <- q() }()
		select {
		case a := <-ch:
			return a
		case <-time.After(5 * time.Second):
			t.Fatalf("%s waited for the hanging commit", what)
			return answer{}
		}
	}
	a := ask("a snapshot of the quiet user", func() answer {
		res, err := s.Query(Query{Kind: QuerySnapshot, User: quiet.user, Mailbox: quiet.inbox})
		return answer{res: res, err: err}
	})
	if a.err != nil || len(a.res.Messages) != 1 || a.res.Index != applied {
		t.Fatalf("snapshot of the quiet user: %d messages at index %d, err %v; want 1 at the applied %d", len(a.res.Messages), a.res.Index, a.err, applied)
	}
	a = ask("a held read of the quiet user's blob", func() answer {
		res, held, err := s.QueryHeld(Query{Kind: QueryBody, User: quiet.user, Blob: quietBlob})
		return answer{res, held, err}
	})
	if a.err != nil || !a.held || string(a.res.Chunks[0]) != "in the state file" {
		t.Fatalf("held read of a committed blob: held %v, err %v", a.held, a.err)
	}
	a = ask("a snapshot of the busy user", func() answer {
		res, err := s.Query(Query{Kind: QuerySnapshot, User: busy.user, Mailbox: busy.inbox})
		return answer{res: res, err: err}
	})
	if !errors.Is(a.err, ErrStuck) {
		t.Fatalf("snapshot of the user the hanging group changed: %v, want ErrStuck", a.err)
	}
	a = ask("a held read of a blob only the group holds", func() answer {
		res, held, err := s.QueryHeld(Query{Kind: QueryBody, User: busy.user, Blob: busyBlob})
		return answer{res, held, err}
	})
	if !errors.Is(a.err, ErrStuck) {
		t.Fatalf("held read of the hanging group's blob: held %v, err %v; want ErrStuck", a.held, a.err)
	}

	hold.let()
	waitFor(t, "the busy user reads once the commit returns", 10*time.Second, func() bool {
		res, err := s.Query(Query{Kind: QuerySnapshot, User: busy.user, Mailbox: busy.inbox})
		return err == nil && len(res.Messages) == 1
	})
}

// TestUserReadsMatchTheirIndex: with writes to several users applied in
// groups, commits forced at random and reads of every kind of user going
// on meanwhile, every read shows exactly the user's messages whose
// entries are at or below the index it reports.
func TestUserReadsMatchTheirIndex(t *testing.T) {
	s := openShardConfig(t, Config{Dir: t.TempDir(), GroupLeaderCommits: true})
	users := make([]fixture, 8)
	for i := range users {
		users[i] = newFixture(t, s)
	}
	type read struct {
		user, index uint64
		count       int
	}
	var (
		mu      sync.Mutex
		appends = map[int][]uint64{} // user -> indexes of its appends
		reads   []read
		done    atomic.Bool
		wg      sync.WaitGroup
	)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for !done.Load() {
				u := rng.IntN(len(users))
				res, err := s.Query(Query{Kind: QuerySnapshot, User: users[u].user, Mailbox: users[u].inbox})
				if err != nil {
					t.Errorf("snapshot: %v", err)
					return
				}
				mu.Lock()
				reads = append(reads, read{uint64(u), res.Index, len(res.Messages)})
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			if err := s.fsm.flush(); err != nil {
				t.Errorf("commit: %v", err)
				return
			}
		}
	}()
	// Writes go to the first users more often, so that reads meet users
	// both touched and untouched by the pending group.
	rng := rand.New(rand.NewPCG(7, 7))
	for range 300 {
		u := min(rng.IntN(len(users)), rng.IntN(len(users)))
		res := apply(t, s, &schema.Append{User: users[u].user, Mailbox: users[u].inbox, Message: schema.NewID(),
			Blob: schema.NewID(), Size: 4, Sealed: []byte("attrs"), Chunks: [][]byte{[]byte("body")}})
		mu.Lock()
		appends[u] = append(appends[u], res.Index)
		mu.Unlock()
	}
	done.Store(true)
	wg.Wait()

	if len(reads) < 100 {
		t.Fatalf("only %d reads during the writes", len(reads))
	}
	for _, r := range reads {
		want := 0
		for _, idx := range appends[int(r.user)] {
			if idx <= r.index {
				want++
			}
		}
		if r.count != want {
			t.Fatalf("user %d read at index %d: %d messages, want %d", r.user, r.index, r.count, want)
		}
	}
	t.Logf("%d reads checked against 300 appends", len(reads))
}
