package workload

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/stats"
)

// POP3Config shapes pop3-drain.
type POP3Config struct {
	// Clients is the number of concurrent POP3 sessions; each drains its
	// own users.
	Clients int
	// Duration bounds the run; a mailbox being drained when it passes is
	// left after QUIT with what was downloaded deleted.
	Duration time.Duration
}

// POP3Result is what pop3-drain measured.
type POP3Result struct {
	Clients int `json:"clients"`
	// Mailboxes is how many mailboxes were drained completely.
	Mailboxes  int     `json:"mailboxes"`
	Messages   int64   `json:"messages"`
	Bytes      int64   `json:"bytes"`
	ElapsedSec float64 `json:"elapsed_sec"`
	// MessagesPerSec counts messages downloaded and deleted per second.
	MessagesPerSec float64 `json:"messages_per_sec"`
	MBPerSec       float64 `json:"mib_per_sec"`
	// Mismatched counts downloaded corpus messages whose bytes differ
	// from the original (a correctness failure).
	Mismatched int64                    `json:"mismatched"`
	Left       int64                    `json:"left"`
	PerOp      map[string]stats.Summary `json:"per_op"`
	Errors     []string                 `json:"errors,omitempty"`
}

// POP3Ops are the timed operations of pop3-drain; "login" includes
// connecting and STLS.
var POP3Ops = []string{"login", "uidl", "retr", "dele", "quit"}

// POP3 runs pop3-drain: Clients workers each log in to their users in
// turn, list the maildrop, download (RETR) and delete (DELE) every
// message, and QUIT, which commits the deletions. Downloaded corpus
// messages are compared with the originals. Worker i connects to node i
// of a target of several nodes (round-robin).
func POP3(ctx context.Context, env Env, cfg POP3Config) (*POP3Result, error) {
	if cfg.Clients < 1 || cfg.Clients > len(env.Users) {
		return nil, fmt.Errorf("pop3-drain: clients must be 1..%d (one user per client at a time), got %d", len(env.Users), cfg.Clients)
	}
	log := env.logger().With("workload", "pop3-drain")
	rec := stats.NewRecorder()
	errs := newErrorLog()
	sums := make(map[string][32]byte, len(env.Corpus.Messages))
	for _, m := range env.Corpus.Messages {
		sums[m.Tag] = m.Sum
	}
	var mailboxes, mismatched, left atomic.Int64
	deadline := time.Now().Add(cfg.Duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(dataTimeout))
	defer cancel()
	shares := userShares(len(env.Users), cfg.Clients)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, u := range shares[w] {
				if !time.Now().Before(deadline) || ctx.Err() != nil {
					return
				}
				done, bad, rest := drain(ctx, env, env.node(w).POP3, u, deadline, sums, rec, errs)
				if done {
					mailboxes.Add(1)
				}
				mismatched.Add(bad)
				left.Add(rest)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	ops := rec.Summaries(elapsed)
	retr := ops["retr"]
	res := &POP3Result{
		Clients: cfg.Clients, Mailboxes: int(mailboxes.Load()), Messages: retr.Count, Bytes: retr.Bytes,
		ElapsedSec: elapsed.Seconds(), MessagesPerSec: float64(ops["dele"].Count) / elapsed.Seconds(),
		MBPerSec:   float64(retr.Bytes) / (1 << 20) / elapsed.Seconds(),
		Mismatched: mismatched.Load(), Left: left.Load(), PerOp: ops, Errors: errs.list(),
	}
	log.Info("done", "mailboxes", res.Mailboxes, "messages", res.Messages, "msg_per_sec", round(res.MessagesPerSec),
		"mismatched", res.Mismatched)
	return res, nil
}

// drain empties one maildrop. It returns whether the maildrop was
// drained completely, how many downloads differed from the corpus, and
// how many messages were left.
func drain(ctx context.Context, env Env, addr string, u int, deadline time.Time, sums map[string][32]byte,
	rec *stats.Recorder, errs *errorLog) (done bool, mismatched, left int64) {
	t0 := time.Now()
	c, err := dialPOP3(ctx, addr, env.TLS, env.Users[u])
	if err != nil {
		rec.Fail("login")
		errs.add(fmt.Errorf("login: %w", err))
		return false, 0, 0
	}
	defer c.Close()
	rec.Observe("login", time.Since(t0), 0)
	t0 = time.Now()
	list, err := c.UIDL()
	if err != nil {
		rec.Fail("uidl")
		errs.add(err)
		return false, 0, 0
	}
	rec.Observe("uidl", time.Since(t0), 0)
	retrieved := 0
	for _, e := range list {
		if !time.Now().Before(deadline) {
			break
		}
		t0 = time.Now()
		data, err := c.Retr(e.Num)
		if err != nil {
			rec.Fail("retr")
			errs.add(err)
			return false, mismatched, int64(len(list) - retrieved)
		}
		rec.Observe("retr", time.Since(t0), int64(len(data)))
		if tag, orig, err := corpus.Original(data); err == nil {
			if want, ok := sums[tag]; ok && sha256.Sum256(orig) != want {
				mismatched++
				errs.add(fmt.Errorf("retr: message %s differs from the original", tag))
			}
		}
		t0 = time.Now()
		if err := c.Dele(e.Num); err != nil {
			rec.Fail("dele")
			errs.add(err)
			return false, mismatched, int64(len(list) - retrieved)
		}
		rec.Observe("dele", time.Since(t0), 0)
		retrieved++
	}
	t0 = time.Now()
	if err := c.Quit(); err != nil {
		rec.Fail("quit")
		errs.add(err)
		return false, mismatched, int64(len(list))
	}
	rec.Observe("quit", time.Since(t0), 0)
	return retrieved == len(list), mismatched, int64(len(list) - retrieved)
}
