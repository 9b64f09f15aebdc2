package cluster

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore"
	"github.com/mailcluster/mailcluster/raftstore/schema"
)

const (
	// watchProgressEvery is how often a watch stream reports the index it
	// has reached when it has no events to send.
	watchProgressEvery = 200 * time.Millisecond
	// watchQueue bounds the event batches (one per applied batch that
	// has events of the user) a watch stream holds for a slow peer;
	// beyond it the stream ends and the watcher resumes from its index
	// (the replica remembers its recent events). Every stream allocates
	// it up front, and a follower's node opens one per writing session.
	watchQueue = 256
	watchRetry = 200 * time.Millisecond
	// followCheck is how often a subscription whose replica follows looks
	// again for a leader to take events from, while it has none to take
	// them from (this node leads, or no leader is known).
	followCheck = time.Second
)

// watchFrame is one message of a watch stream: events, and the index up to
// which every event of the user has been sent.
type watchFrame struct {
	Events    []raftstore.Event
	Published uint64
}

// subscription delivers one user's events of one shard from this node's
// replica, or, when this node keeps none, over a watch stream from a node
// that does. It moves between the two as replicas open and close, resuming
// from the last index it delivered, so nothing is skipped silently.
//
// A replica that follows learns that an entry is committed only with the
// leader's next append (hashicorp/raft sends none for a commit alone:
// CommitTimeout later when no other write comes, 20-40 ms on a LAN, 50-100
// ms across regions), and a session's write waits for its own events
// (mailstore). So once a write waits on this node's replica while it
// follows, the subscription also streams the user's events from the
// leader (follow), which hands them out as it applies them; deliver
// passes on each index once, from whichever source brings it first.
// Both sources deliver a user's events in log order, whole indexes at a
// time, so every index below one delivered has been delivered.
type subscription struct {
	c     *Cluster
	shard uint32
	user  schema.ID
	fn    func([]raftstore.Event)

	// dmu serializes deliveries from the replica and the leader's stream.
	// Lock order: the replica's event lock (held while it calls deliver),
	// then dmu, then mu; so nothing that takes the replica's event lock
	// (Subscribe, its stop, PublishedIndex, WaitApplied) runs under dmu
	// or mu.
	dmu sync.Mutex

	mu sync.Mutex
	// gen counts the subscription's attachments; what an earlier one
	// still delivers is dropped (a stream that has not seen its
	// cancellation yet may have started past what the new one replays).
	gen       uint64
	last      uint64 // highest index delivered to fn
	progress  uint64 // every event up to here has been delivered
	advanced  chan struct{}
	local     *raftstore.Shard
	localStop func()
	remote    context.CancelFunc // stops the stream (or the follower's stream of the leader's events)
	following bool               // the leader's stream runs beside the local replica (follow)
	remoteWG  sync.WaitGroup
	closed    bool
}

// Watch hands fn the change events of user on shard n applied after
// index from, in log order, until cancel. See mailstore.Cluster.
func (c *Cluster) Watch(n uint32, user schema.ID, from uint64, fn func([]raftstore.Event)) (wait func(ctx context.Context, index uint64) error, cancel func()) {
	s := &subscription{c: c, shard: n, user: user, fn: fn, last: from, progress: from, advanced: make(chan struct{})}
	c.mu.Lock()
	c.watches[s] = struct{}{}
	c.mu.Unlock()
	s.attach()
	return s.wait, s.cancel
}

// resubscribe moves the subscriptions of shard n to the source that is
// now right (this node's replica opened or closed).
func (c *Cluster) resubscribe(n uint32) {
	c.mu.RLock()
	var subs []*subscription
	for s := range c.watches {
		if s.shard == n {
			subs = append(subs, s)
		}
	}
	c.mu.RUnlock()
	for _, s := range subs {
		s.attach()
	}
}

// deliver passes events to fn, but for the indexes already delivered,
// and records how far it got: published, when set, is an index up to
// which the source has sent every event of the user. gen is the
// attachment the source belongs to.
func (s *subscription) deliver(gen uint64, events []raftstore.Event, published uint64) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.mu.Lock()
	stale, last := s.closed || s.gen != gen, s.last
	s.mu.Unlock()
	if stale {
		return
	}
	i := 0
	for i < len(events) && events[i].Index <= last {
		i++ // the other source brought it first
	}
	events = events[i:]
	if len(events) > 0 {
		s.fn(events)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	for _, e := range events {
		if e.Index > s.last {
			s.last = e.Index
		}
	}
	through := max(s.last, published)
	if through > s.progress {
		s.progress = through
		close(s.advanced)
		s.advanced = make(chan struct{})
	}
	s.mu.Unlock()
}

// attach (re)connects the subscription to this node's replica if there
// is one, else to a watch stream.
func (s *subscription) attach() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	local := s.c.replica(s.shard)
	if local != nil && local == s.local {
		s.mu.Unlock()
		return
	}
	stopOld := s.detachLocked()
	from := s.last
	s.mu.Unlock()
	stopOld()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.gen++
	gen := s.gen
	if local != nil {
		s.local = local
		s.mu.Unlock()
		stop := local.Subscribe(s.user, from, func(evs []raftstore.Event) { s.deliver(gen, evs, 0) })
		s.mu.Lock()
		if s.closed || s.gen != gen {
			s.mu.Unlock()
			stop()
			return
		}
		s.localStop = stop
		s.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.remote, s.following = cancel, false
	s.remoteWG.Add(1)
	s.mu.Unlock()
	go s.stream(ctx, gen)
}

// detachLocked forgets the current source and returns what stops it, to
// be called without s.mu (a replica calls fn under its own lock).
func (s *subscription) detachLocked() func() {
	s.gen++
	stop := s.localStop
	s.localStop, s.local = nil, nil
	if s.remote != nil {
		s.remote()
		s.remote, s.following = nil, false
	}
	return func() {
		if stop != nil {
			stop()
		}
	}
}

// stream follows a watch stream from a node that keeps the shard,
// reconnecting from the last delivered index until cancelled.
func (s *subscription) stream(ctx context.Context, gen uint64) {
	defer s.remoteWG.Done()
	for ctx.Err() == nil {
		var err error
		if addr := s.source(); addr == "" {
			err = errNoLeader
		} else {
			s.mu.Lock()
			from := s.last
			s.mu.Unlock()
			err = s.streamOnce(ctx, gen, addr, from, "")
		}
		if ctx.Err() != nil {
			return
		}
		s.c.log.Debug("watch stream ended; resuming", "shard", s.shard, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(watchRetry):
		}
	}
}

// follow streams the user's events from the shard's leader while this
// node's replica local is not the leader, beside the replica's own
// events (see subscription), until cancelled.
func (s *subscription) follow(ctx context.Context, gen uint64, local *raftstore.Shard) {
	defer s.remoteWG.Done()
	for ctx.Err() == nil {
		wait := followCheck
		if id, addr := s.c.leaderOf(s.shard); id != "" && id != s.c.cfg.NodeID && !local.IsLeader() && addr != "" {
			// Everything the replica has published is delivered: its
			// subscription hands events out before it counts them. Read
			// without s.mu: the replica calls deliver, which takes s.mu,
			// while it holds the lock PublishedIndex takes.
			published := local.PublishedIndex()
			s.mu.Lock()
			from := max(s.last, published)
			s.mu.Unlock()
			err := s.streamOnce(ctx, gen, addr, from, id)
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, errLeaderMoved) {
				s.c.log.Debug("leader's watch stream ended; resuming", "shard", s.shard, "err", err)
			}
			wait = watchRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// errLeaderMoved ends a stream of the leader's events, or a call to the
// leader (callLeader), once another node leads.
var errLeaderMoved = errors.New("the shard's leader moved")

// streamOnce delivers the user's events after index from, streamed by
// the node at addr, until the stream breaks; when leader is set, also as
// soon as that node is no longer the shard's leader.
func (s *subscription) streamOnce(ctx context.Context, gen uint64, addr string, from uint64, leader string) error {
	if leader != "" {
		// A stream from a replica that stopped leading may stay silent:
		// look for a move now and then, not only when a frame comes.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			t := time.NewTicker(followCheck)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if id, _ := s.c.leaderOf(s.shard); id != leader {
						cancel()
						return
					}
				}
			}
		}()
	}
	u := rpcURL(addr, rpcWatch+strconv.FormatUint(uint64(s.shard), 10)+"/"+s.user.String()) + "?from=" + url.QueryEscape(strconv.FormatUint(from, 10))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := s.c.rpc.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := gob.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var f watchFrame
		if err := dec.Decode(&f); err != nil {
			return err
		}
		s.deliver(gen, f.Events, f.Published)
		if leader != "" {
			if id, _ := s.c.leaderOf(s.shard); id != leader {
				return errLeaderMoved
			}
		}
	}
}

// source picks a node to stream from: the shard's leader if known, else
// any node placed to keep it.
func (s *subscription) source() string {
	if id, addr := s.c.leaderOf(s.shard); id != "" && id != s.c.cfg.NodeID {
		return addr
	}
	v := s.c.currentView()
	if v == nil {
		return ""
	}
	for _, id := range v.placements[s.shard].Replicas {
		if rec, ok := v.nodes[id]; ok && id != s.c.cfg.NodeID && !rec.Removed {
			return rec.Address
		}
	}
	return ""
}

// wait returns once every event up to index has been delivered: by the
// local replica once it has applied index, or by a stream that got there
// first.
func (s *subscription) wait(ctx context.Context, index uint64) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return errors.New("watch closed")
		}
		local, following, progress, ch := s.local, s.following, s.progress, s.advanced
		if progress < index && local != nil && s.localStop != nil && !following && !local.IsLeader() {
			// A write waits on a follower's replica: from now on the
			// leader's events come too (started with the first such
			// wait, so that sessions that only read open no stream).
			// localStop is set once the replica's subscription has
			// replayed what it had published, which follow counts on.
			ctx, cancel := context.WithCancel(context.Background())
			s.remote, s.following, following = cancel, true, true
			s.remoteWG.Add(1)
			go s.follow(ctx, s.gen, local)
		}
		s.mu.Unlock()
		if progress >= index {
			return nil
		}
		if local != nil && !following {
			// A replica hands events to fn before it counts them as out.
			err := local.WaitApplied(ctx, index)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return err
			}
			continue // the replica closed: the subscription moved
		}
		if local != nil {
			// The leader's stream usually brings index before the
			// replica learns it is committed; take whichever is first.
			wctx, cancel := context.WithCancel(ctx)
			applied := make(chan error, 1)
			go func() { applied <- local.WaitApplied(wctx, index) }()
			select {
			case err := <-applied:
				cancel()
				if err == nil {
					return nil
				}
				if ctx.Err() != nil {
					return err
				}
			case <-ch:
				cancel()
			case <-ctx.Done():
				cancel()
				return ctx.Err()
			}
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *subscription) cancel() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	stop := s.detachLocked()
	close(s.advanced)
	s.mu.Unlock()
	stop()
	s.remoteWG.Wait()
	s.c.mu.Lock()
	delete(s.c.watches, s)
	s.c.mu.Unlock()
}

// serveWatch streams a user's events of a shard this node keeps, from an
// index on: first those the replica still remembers (or one resync), then
// live ones, with progress marks while nothing happens.
func (c *Cluster) serveWatch(w http.ResponseWriter, r *http.Request) {
	s, ok := c.localReplica(w, r)
	if !ok {
		return
	}
	user, err := schema.ParseID(r.PathValue("user"))
	if err != nil {
		http.Error(w, "bad user", http.StatusBadRequest)
		return
	}
	from, err := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
	if err != nil {
		http.Error(w, "bad index", http.StatusBadRequest)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	queue := make(chan []raftstore.Event, watchQueue)
	overflow := make(chan struct{})
	var once sync.Once
	stop := s.Subscribe(user, from, func(evs []raftstore.Event) {
		select {
		case queue <- evs:
		default:
			once.Do(func() { close(overflow) })
		}
	})
	defer stop()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	enc := gob.NewEncoder(w)
	send := func(f watchFrame) error {
		if err := enc.Encode(f); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	var sent uint64
	// mark sends the queued events, then the index they reach.
	// Everything up to published is queued before published advances, so
	// the queue is drained after reading it.
	mark := func() error {
		published := s.PublishedIndex()
		for drained := false; !drained; {
			select {
			case evs := <-queue:
				if err := send(watchFrame{Events: evs}); err != nil {
					return err
				}
			default:
				drained = true
			}
		}
		if published > sent {
			if err := send(watchFrame{Published: published}); err != nil {
				return err
			}
			sent = published
		}
		return nil
	}
	// The first mark goes out at once: a watcher that waits for an index
	// the replica has applied need not wait for the first tick.
	if mark() != nil {
		return
	}
	tick := time.NewTicker(watchProgressEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.closing:
			return
		case <-overflow:
			return // the watcher resumes from its last index
		case evs := <-queue:
			if send(watchFrame{Events: evs}) != nil {
				return
			}
		case <-tick.C:
			if mark() != nil {
				return
			}
		}
	}
}
