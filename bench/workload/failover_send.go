package workload

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/bench/stats"
)

// senders are the failover workload's SMTP senders. Each sends one
// message after another and retries a refused message until it is
// acknowledged, as an MTA does (after Backoff rather than minutes).
type senders struct {
	env   Env
	cfg   FailoverConfig
	gen   *probeGen
	tally *failoverTally
	rec   *stats.Recorder
	refs  *errorLog

	stopOnce sync.Once
	stopping chan struct{}
	// hard is when senders give up retrying (unix nanoseconds; 0: not
	// stopping yet).
	hard   atomic.Int64
	wg     sync.WaitGroup
	nSent  atomic.Int64
	nGiven atomic.Int64
}

func newSenders(env Env, cfg FailoverConfig, gen *probeGen, tally *failoverTally, rec *stats.Recorder, refs *errorLog) *senders {
	return &senders{env: env, cfg: cfg, gen: gen, tally: tally, rec: rec, refs: refs, stopping: make(chan struct{})}
}

// start launches the senders.
func (s *senders) start(ctx context.Context) {
	for w := range s.cfg.Senders {
		s.wg.Add(1)
		go s.run(ctx, w)
	}
}

// stop makes the senders stop taking new messages, lets them retry the
// ones they hold for up to Drain, and waits for them. It is idempotent.
func (s *senders) stop(context.Context) {
	s.stopOnce.Do(func() {
		s.hard.Store(time.Now().Add(s.cfg.Drain).UnixNano())
		close(s.stopping)
	})
	s.wg.Wait()
}

func (s *senders) sent() int   { return int(s.nSent.Load()) }
func (s *senders) gaveUp() int { return int(s.nGiven.Load()) }

func (s *senders) stopped() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

func (s *senders) pastHard() bool {
	h := s.hard.Load()
	return h != 0 && time.Now().UnixNano() > h
}

// pause waits Backoff before a retry.
func (s *senders) pause(ctx context.Context) {
	t := time.NewTimer(s.cfg.Backoff)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// run is sender w: it starts on node w and moves to the next node when
// its connection fails.
func (s *senders) run(ctx context.Context, w int) {
	defer s.wg.Done()
	nodes := len(s.env.nodes())
	node := w % nodes
	var c *smtpClient
	perConn := 0
	defer func() {
		if c != nil {
			c.Quit()
			c.Close()
		}
	}()
	for !s.stopped() && ctx.Err() == nil {
		m := s.gen.next()
		s.nSent.Add(1)
		rcpt := s.env.Users[m.Rcpt].Address
		for {
			if s.pastHard() || ctx.Err() != nil {
				s.nGiven.Add(1)
				return
			}
			if c == nil {
				t0 := time.Now()
				var err error
				if c, err = dialSMTP(ctx, s.env.node(node).SMTP, s.env.TLS); err != nil {
					c = nil
					s.rec.Fail("connect")
					s.refs.add(fmt.Errorf("connect to %s: %w", s.env.node(node).SMTP, err))
					if s.tally.add(attempt{msg: m, node: node, err: err, end: time.Now()}) == connection {
						node = (node + 1) % nodes
					}
					s.pause(ctx)
					continue
				}
				s.rec.Observe("connect", time.Since(t0), 0)
				perConn = 0
			}
			t0 := time.Now()
			dataEnd, err := c.send(m.From, rcpt, m.Data)
			end := time.Now()
			o := s.tally.add(attempt{msg: m, node: node, err: err, dataEnd: dataEnd, end: end})
			if o == acked {
				s.rec.Observe("transaction", end.Sub(t0), int64(len(m.Data)))
				if perConn++; perConn >= s.cfg.PerConnection {
					c.Quit()
					c.Close()
					c = nil
				}
				break
			}
			s.rec.Fail("transaction")
			s.refs.add(err)
			if o == connection {
				c.Close()
				c = nil
				node = (node + 1) % nodes
			} else if c.Reset() != nil {
				c.Close()
				c = nil
			}
			if o == permanent {
				break
			}
			s.pause(ctx)
		}
	}
}
