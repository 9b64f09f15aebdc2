package workload

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/stats"
)

// IngestConfig shapes smtp-ingest.
type IngestConfig struct {
	// Clients is the number of concurrent SMTP connections.
	Clients int
	// Messages bounds how many corpus messages are sent (0: all).
	Messages int
	// Duration bounds the sending time.
	Duration time.Duration
	// PerConnection is how many messages a client sends before it
	// reconnects (real MTAs reuse connections for a few messages).
	PerConnection int
	// Workload names the run in logs ("" for smtp-ingest).
	Workload string
	// Pipelining sends MAIL, RCPT and DATA in one write when the server
	// offers PIPELINING (RFC 2920), as MTAs do; off, the client waits
	// for each reply, as go-smtp's client and Postfix's smtp-source do.
	Pipelining bool
}

// IngestResult is what smtp-ingest measured.
type IngestResult struct {
	Clients   int `json:"clients"`
	Attempted int `json:"attempted"`
	Acked     int `json:"acked"`
	Failed    int `json:"failed"`
	// AckedBytes is the size of the acknowledged messages as sent.
	AckedBytes int64 `json:"acked_bytes"`
	// ElapsedSec is the sending wall time.
	ElapsedSec float64 `json:"elapsed_sec"`
	// MessagesPerSec is acknowledged messages per second of sending.
	MessagesPerSec float64 `json:"messages_per_sec"`
	// MBPerSec is acknowledged MiB per second of sending.
	MBPerSec float64 `json:"mib_per_sec"`
	// Ops are per-operation latencies: "transaction" is MAIL FROM to the
	// final 250 after the data; "connect" is TCP, greeting, EHLO and
	// STARTTLS.
	Ops map[string]stats.Summary `json:"ops"`
	// Errors are the first few distinct errors.
	Errors []string `json:"errors,omitempty"`
	// Check is the end-of-run verification of every acknowledged message.
	Check *CheckResult `json:"check,omitempty"`

	// acked lists the acknowledged messages, for the check, and via the
	// node (index in Env.Nodes) that acknowledged each, by tag.
	acked []*corpus.Message
	via   map[string]int
}

// AckedMessages returns the acknowledged messages.
func (r *IngestResult) AckedMessages() []*corpus.Message { return r.acked }

// AckedVia maps each acknowledged message's tag to the node (index in
// Env.Nodes) that acknowledged it.
func (r *IngestResult) AckedVia() map[string]int { return r.via }

// Ingest runs smtp-ingest: Clients concurrent SMTP connections deliver
// corpus messages, in corpus order, to their recipients until every
// message (up to cfg.Messages) is sent or cfg.Duration passes. It
// records the latency of every transaction up to the final 250. Client
// i connects to node i of a target of several nodes (round-robin).
func Ingest(ctx context.Context, env Env, cfg IngestConfig) (*IngestResult, error) {
	if cfg.Clients < 1 {
		return nil, errors.New("smtp-ingest: at least one client is needed")
	}
	if cfg.PerConnection < 1 {
		cfg.PerConnection = 10
	}
	msgs := env.Corpus.Messages
	if cfg.Messages > 0 && cfg.Messages < len(msgs) {
		msgs = msgs[:cfg.Messages]
	}
	if cfg.Workload == "" {
		cfg.Workload = "smtp-ingest"
	}
	log := env.logger().With("workload", cfg.Workload)
	rec := stats.NewRecorder()
	errs := newErrorLog()
	var next atomic.Int64
	var mu sync.Mutex
	res := &IngestResult{Clients: cfg.Clients, via: make(map[string]int)}
	nodes := len(env.nodes())
	deadline := time.Now().Add(cfg.Duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(dataTimeout))
	defer cancel()

	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtpClient
			sent := 0
			node := w % nodes
			defer func() {
				if c != nil {
					c.Quit()
					c.Close()
				}
			}()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(msgs) {
					return
				}
				m := &msgs[i]
				if c == nil {
					t0 := time.Now()
					var err error
					if c, err = dialSMTP(ctx, env.node(node).SMTP, env.TLS); err != nil {
						rec.Fail("connect")
						errs.add(err)
						mu.Lock()
						res.Attempted++
						res.Failed++
						mu.Unlock()
						c = nil
						continue
					}
					rec.Observe("connect", time.Since(t0), 0)
					c.pipelining = cfg.Pipelining
					sent = 0
				}
				t0 := time.Now()
				err := sendOne(c, m, env.Users[m.Rcpt].Address)
				d := time.Since(t0)
				mu.Lock()
				res.Attempted++
				if err == nil {
					res.Acked++
					res.AckedBytes += int64(len(m.Data))
					res.acked = append(res.acked, m)
					res.via[m.Tag] = node
				} else {
					res.Failed++
				}
				mu.Unlock()
				if err != nil {
					rec.Fail("transaction")
					errs.add(err)
					c.Close()
					c = nil
					continue
				}
				rec.Observe("transaction", d, int64(len(m.Data)))
				if sent++; sent >= cfg.PerConnection {
					c.Quit()
					c.Close()
					c = nil
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.ElapsedSec = elapsed.Seconds()
	res.MessagesPerSec = float64(res.Acked) / elapsed.Seconds()
	res.MBPerSec = float64(res.AckedBytes) / (1 << 20) / elapsed.Seconds()
	res.Ops = rec.Summaries(elapsed)
	res.Errors = errs.list()
	log.Info("done", "acked", res.Acked, "failed", res.Failed, "msg_per_sec", round(res.MessagesPerSec), "elapsed", elapsed.Round(time.Millisecond))
	return res, nil
}

// sendOne runs one SMTP transaction: MAIL FROM, RCPT TO, DATA, and waits
// for the final reply.
func sendOne(c *smtpClient, m *corpus.Message, rcpt string) error {
	_, err := c.send(m.From, rcpt, m.Data)
	return err
}

// errorLog keeps the first few distinct error messages.
type errorLog struct {
	mu   sync.Mutex
	seen map[string]int
	keep []string
}

const maxErrors = 10

func newErrorLog() *errorLog { return &errorLog{seen: make(map[string]int)} }

func (l *errorLog) add(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := err.Error()
	if l.seen[s]++; l.seen[s] == 1 && len(l.keep) < maxErrors {
		l.keep = append(l.keep, s)
	}
}

func (l *errorLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.keep))
	for i, s := range l.keep {
		out[i] = fmt.Sprintf("%s (x%d)", s, l.seen[s])
	}
	return out
}

func round(f float64) float64 {
	return float64(int64(f*10+0.5)) / 10
}
