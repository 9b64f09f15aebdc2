package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/cluster/directory"
	"github.com/mailcluster/mailcluster/protocols"
)

const (
	// DefaultDeliveryMetadataRetention is how long delivery records are
	// kept: 60 days.
	DefaultDeliveryMetadataRetention = 60 * 24 * time.Hour
	// deliveryQueue bounds the records waiting to be written; past it a
	// record is dropped (and logged) rather than slowing delivery down.
	deliveryQueue = 10000
	// deliveryWriters write records in parallel, each a batch at a time.
	deliveryWriters = 2
	// deliveryBatch bounds the deliveries one writer takes at once (the
	// directory splits their records further, 256 or 1 MiB to a
	// command), and deliveryLinger is how long a writer waits for more
	// after the first: records are written after the reply, so waiting
	// delays nothing a client sees, and one meta-shard commit per batch
	// instead of per message takes most of the meta shard's fsyncs off
	// the disk the mail shards need.
	deliveryBatch  = 256
	deliveryLinger = 50 * time.Millisecond
	// deliveryWriteTimeout bounds writing one batch.
	deliveryWriteTimeout = 30 * time.Second
	// deliveryPruneEvery is how often old records are purged.
	deliveryPruneEvery = time.Hour
)

// deliveryService writes the delivery metadata the SMTP frontends hand
// it into the users' delivery records, off the delivery path, and purges
// records older than delivery_metadata_retention.
type deliveryService struct {
	n       *Node
	log     *slog.Logger
	queue   chan protocols.DeliveryMeta
	stop    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once
}

// startDeliveryLog starts the writers and the purge.
func (n *Node) startDeliveryLog() *deliveryService {
	s := &deliveryService{n: n, log: n.log.With("component", "deliveries"),
		queue: make(chan protocols.DeliveryMeta, deliveryQueue), stop: make(chan struct{})}
	for range deliveryWriters {
		s.wg.Add(1)
		go s.writer()
	}
	s.wg.Add(1)
	go s.pruner()
	return s
}

// RecordDelivery queues m; it never blocks.
func (s *deliveryService) RecordDelivery(m protocols.DeliveryMeta) {
	select {
	case s.queue <- m:
	default:
		s.n.metrics.deliveryRecords.WithLabelValues("dropped").Inc()
		s.log.Warn("delivery record dropped: the queue is full")
	}
}

func (s *deliveryService) writer() {
	defer s.wg.Done()
	linger := time.NewTimer(0)
	<-linger.C
	batch := make([]directory.Delivery, 0, deliveryBatch)
	for {
		select {
		case <-s.stop:
			return
		case m := <-s.queue:
			batch = append(batch[:0], s.delivery(m))
		}
		linger.Reset(deliveryLinger)
	collect:
		for len(batch) < deliveryBatch {
			select {
			case <-s.stop:
				linger.Stop()
				return
			case m := <-s.queue:
				batch = append(batch, s.delivery(m))
			case <-linger.C:
				break collect
			}
		}
		if !linger.Stop() {
			select {
			case <-linger.C:
			default:
			}
		}
		s.write(batch)
	}
}

// delivery is the record of m as the directory takes it.
func (s *deliveryService) delivery(m protocols.DeliveryMeta) directory.Delivery {
	rec := directory.DeliveryRecord{Time: m.Time.UTC(), Node: s.n.cfg.NodeID, Port: m.Port, From: m.From,
		Recipients: m.Recipients, MessageID: m.MessageID, TLS: m.TLS, Result: string(m.Result), Reply: m.Reply}
	if m.Remote.IsValid() {
		rec.Remote = m.Remote.String()
	}
	return directory.Delivery{Record: rec, Submitter: m.User}
}

// write records batch in as few meta-shard commands as it takes.
func (s *deliveryService) write(batch []directory.Delivery) {
	ctx, cancel := stoppableContext(s.stop, deliveryWriteTimeout)
	defer cancel()
	var failed int
	var first error
	for _, err := range s.n.directory.RecordDeliveries(ctx, batch) {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	s.n.metrics.deliveryRecords.WithLabelValues("written").Add(float64(len(batch) - failed))
	if failed > 0 {
		s.n.metrics.deliveryRecords.WithLabelValues("failed").Add(float64(failed))
		s.log.Warn("delivery records not written", "transactions", failed, "err", first)
	}
}

func (s *deliveryService) pruner() {
	defer s.wg.Done()
	t := time.NewTicker(deliveryPruneEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.prune()
		}
	}
}

func (s *deliveryService) prune() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k, err := s.n.directory.PruneDeliveries(ctx, s.n.now().Add(-s.n.deliveryRetention()))
	if err != nil {
		s.log.Warn("purge delivery records", "err", err)
	} else if k > 0 {
		s.log.Info("delivery records purged", "records", k)
	}
}

// close stops the writers (records still queued are dropped) and the
// purge. It may be called more than once, and on nil.
func (s *deliveryService) close() {
	if s == nil {
		return
	}
	s.closeMu.Do(func() {
		close(s.stop)
		s.wg.Wait()
	})
}

func (n *Node) deliveryRetention() time.Duration {
	if n.cfg.DeliveryMetadataRetention > 0 {
		return n.cfg.DeliveryMetadataRetention
	}
	return DefaultDeliveryMetadataRetention
}
