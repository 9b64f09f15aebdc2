package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Broadcasts carry state that every node keeps for itself but that must
// hold across the cluster without a Raft write per change (the login
// failure counters: a password-guessing run must not become a stream of
// replicated writes). A message is handed to every node that answered a
// ping lately, at most once and without order guarantees across
// senders; a node down or cut off misses what was sent meanwhile.

const (
	rpcBroadcast = "/rpc/broadcast/"
	// broadcastEvery is how long messages wait to be sent together.
	broadcastEvery = 100 * time.Millisecond
	// maxBroadcastQueue bounds the messages waiting per topic; the oldest
	// go first.
	maxBroadcastQueue = 10000
	// maxBroadcastBody bounds one batch a node accepts.
	maxBroadcastBody = 8 << 20
	// broadcastTimeout bounds the delivery of one batch to one node.
	broadcastTimeout = 2 * time.Second
)

// broadcaster batches outgoing messages per topic and dispatches incoming
// ones to their handler.
type broadcaster struct {
	c *Cluster

	mu       sync.Mutex
	queue    map[string][]json.RawMessage
	handlers map[string]func(from string, msg []byte)
	wake     chan struct{}
}

func newBroadcaster(c *Cluster) *broadcaster {
	return &broadcaster{c: c, queue: map[string][]json.RawMessage{}, handlers: map[string]func(string, []byte){}, wake: make(chan struct{}, 1)}
}

// Broadcast hands msg (a JSON value) to every other live node's handler
// of topic, soon and in the background. It never blocks.
func (c *Cluster) Broadcast(topic string, msg []byte) {
	b := c.broadcast
	b.mu.Lock()
	q := append(b.queue[topic], json.RawMessage(bytes.Clone(msg)))
	if len(q) > maxBroadcastQueue {
		q = q[len(q)-maxBroadcastQueue:]
	}
	b.queue[topic] = q
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// HandleBroadcast registers fn for the messages of topic that other nodes
// broadcast; from is the sender's node id. fn must not block for long.
func (c *Cluster) HandleBroadcast(topic string, fn func(from string, msg []byte)) {
	c.broadcast.mu.Lock()
	c.broadcast.handlers[topic] = fn
	c.broadcast.mu.Unlock()
}

// run sends the queued messages every broadcastEvery until the node
// closes.
func (b *broadcaster) run() {
	defer b.c.wg.Done()
	t := time.NewTicker(broadcastEvery)
	defer t.Stop()
	for {
		select {
		case <-b.c.closing:
			return
		case <-t.C:
		case <-b.wake:
			select { // let a burst gather
			case <-b.c.closing:
				return
			case <-time.After(broadcastEvery):
			}
		}
		b.flush()
	}
}

// broadcastBatch is the body of one broadcast RPC.
type broadcastBatch struct {
	From     string            `json:"from"`
	Messages []json.RawMessage `json:"messages"`
}

func (b *broadcaster) flush() {
	b.mu.Lock()
	queued := b.queue
	b.queue = map[string][]json.RawMessage{}
	b.mu.Unlock()
	if len(queued) == 0 {
		return
	}
	v := b.c.currentView()
	if v == nil {
		return
	}
	var wg sync.WaitGroup
	for topic, msgs := range queued {
		body, err := json.Marshal(broadcastBatch{From: b.c.cfg.NodeID, Messages: msgs})
		if err != nil {
			continue
		}
		for _, n := range v.activeNodes() {
			if n.ID == b.c.cfg.NodeID || !b.c.health.alive(n.ID, 10*time.Second) {
				continue
			}
			wg.Add(1)
			go func(addr string) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), broadcastTimeout)
				defer cancel()
				if err := b.c.rpc.broadcast(ctx, addr, topic, body); err != nil {
					b.c.log.Debug("broadcast not delivered", "topic", topic, "to", addr, "err", err)
				}
			}(n.Address)
		}
	}
	wg.Wait()
}

// serveBroadcast hands a batch from another node to its topic's handler.
func (c *Cluster) serveBroadcast(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	var batch broadcastBatch
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBroadcastBody)).Decode(&batch); err != nil {
		http.Error(w, "bad broadcast batch", http.StatusBadRequest)
		return
	}
	c.broadcast.mu.Lock()
	fn := c.broadcast.handlers[topic]
	c.broadcast.mu.Unlock()
	if fn != nil {
		for _, m := range batch.Messages {
			fn(batch.From, m)
		}
	}
	w.WriteHeader(http.StatusOK)
}

// broadcast sends one batch to the node at addr.
func (rc *rpcClient) broadcast(ctx context.Context, addr, topic string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rpcURL(addr, rpcBroadcast+topic), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := rc.do(req)
	if err != nil {
		return fmt.Errorf("broadcast %s: %w", topic, err)
	}
	resp.Body.Close()
	return nil
}
