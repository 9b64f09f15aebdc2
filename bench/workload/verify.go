package workload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/bench/corpus"
)

// Bounds of the verification.
const (
	// maxFetched bounds one fetched message (the corpus caps at 5 MiB;
	// servers add trace headers).
	maxFetched = 8 << 20
	// verifyWorkers is how many mailboxes are verified at once.
	verifyWorkers = 4
	maxProblems   = 20
)

// CheckResult is the outcome of comparing what a target stored with
// what it acknowledged.
type CheckResult struct {
	// Expected is the number of acknowledged messages.
	Expected int `json:"expected"`
	// Matched were found once, in the right mailbox, byte-identical
	// (after the trace headers the server prepended).
	Matched int `json:"matched"`
	// Missing were acknowledged but not found.
	Missing int `json:"missing"`
	// Mismatched were found with different bytes or in the wrong mailbox.
	Mismatched int `json:"mismatched"`
	// Duplicates are extra copies of an acknowledged message.
	Duplicates int `json:"duplicates"`
	// Unacknowledged were stored although their transaction failed (a
	// sender would retry them; not an error).
	Unacknowledged int `json:"unacknowledged"`
	// VisibleAfterSec is how long after the last acknowledgement every
	// acknowledged message was visible over IMAP (asynchronous delivery
	// shows here).
	VisibleAfterSec float64 `json:"visible_after_sec"`
	// Problems describes the first failures.
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether every acknowledged message was found exactly once
// and intact.
func (r *CheckResult) OK() bool {
	return r.Missing == 0 && r.Mismatched == 0 && r.Duplicates == 0 && r.Matched == r.Expected
}

// Checker compares fetched messages with the acknowledged originals by
// SHA-256. It is safe for concurrent use.
type Checker struct {
	mu       sync.Mutex
	expected map[string]expectation
	seen     map[string]int
	res      CheckResult
}

type expectation struct {
	user int
	sum  [32]byte
}

// NewChecker expects each of acked in its recipient's mailbox.
func NewChecker(acked []*corpus.Message) *Checker {
	c := &Checker{expected: make(map[string]expectation, len(acked)), seen: make(map[string]int)}
	for _, m := range acked {
		c.expected[m.Tag] = expectation{user: m.Rcpt, sum: m.Sum}
	}
	c.res.Expected = len(c.expected)
	return c
}

// Add checks one message fetched from user's mailbox. corpus is the run's
// corpus: a message of it that was not acknowledged is counted apart.
func (c *Checker) Add(user int, fetched []byte, all *corpus.Corpus) {
	tag, orig, err := corpus.Original(fetched)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// Not a benchmark message (a server's own notice): ignore.
		return
	}
	exp, ok := c.expected[tag]
	if !ok {
		if all != nil && knownTag(all, tag) {
			c.res.Unacknowledged++
		}
		return
	}
	c.seen[tag]++
	switch {
	case c.seen[tag] > 1:
		c.res.Duplicates++
		c.problem("message %s stored %d times", tag, c.seen[tag])
	case exp.user != user:
		c.res.Mismatched++
		c.problem("message %s for user %d found in user %d's mailbox", tag, exp.user, user)
	case sha256.Sum256(orig) != exp.sum:
		c.res.Mismatched++
		c.problem("message %s differs from what was sent (%d bytes after the trace headers)", tag, len(orig))
	default:
		c.res.Matched++
	}
}

// Result counts the missing messages and returns the outcome.
func (c *Checker) Result() CheckResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.res
	r.Problems = append([]string(nil), c.res.Problems...)
	for tag := range c.expected {
		if c.seen[tag] == 0 {
			r.Missing++
			if len(r.Problems) < maxProblems {
				r.Problems = append(r.Problems, fmt.Sprintf("message %s acknowledged but not found", tag))
			}
		}
	}
	return r
}

func (c *Checker) problem(format string, args ...any) {
	if len(c.res.Problems) < maxProblems {
		c.res.Problems = append(c.res.Problems, fmt.Sprintf(format, args...))
	}
}

func knownTag(all *corpus.Corpus, tag string) bool {
	for i := range all.Messages {
		if all.Messages[i].Tag == tag {
			return true
		}
	}
	return false
}

// Verify fetches every INBOX that should hold acknowledged messages and
// checks them. It first waits (up to wait) until each INBOX holds at
// least as many messages as were acknowledged for it, which measures
// asynchronous delivery; sentAt is when the last message was
// acknowledged.
func Verify(ctx context.Context, env Env, acked []*corpus.Message, sentAt time.Time, wait time.Duration) (*CheckResult, error) {
	log := env.logger().With("workload", "smtp-ingest", "step", "verify")
	perUser := make(map[int]int)
	for _, m := range acked {
		perUser[m.Rcpt]++
	}
	checker := NewChecker(acked)
	users := make(chan int, len(env.Users))
	for u := range env.Users {
		users <- u
	}
	close(users)
	deadline := time.Now().Add(wait)
	var mu sync.Mutex
	var visible time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < verifyWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range users {
				seenAt, err := verifyUser(ctx, env, u, perUser[u], deadline, checker)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("verify %s: %w", env.Users[u].Address, err)
				}
				if d := seenAt.Sub(sentAt); d > visible {
					visible = d
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	res := checker.Result()
	res.VisibleAfterSec = visible.Seconds()
	log.Info("done", "expected", res.Expected, "matched", res.Matched, "missing", res.Missing,
		"mismatched", res.Mismatched, "duplicates", res.Duplicates, "visible_after", visible.Round(time.Millisecond))
	return &res, nil
}

// verifyUser waits for want messages in u's INBOX, then fetches and checks
// all of them. It returns when the count was reached.
func verifyUser(ctx context.Context, env Env, u, want int, deadline time.Time, checker *Checker) (time.Time, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(5*time.Minute))
	defer cancel()
	c, err := dialIMAP(ctx, env.Endpoints.IMAP, env.TLS, env.Users[u])
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	var seenAt time.Time
	for {
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			return time.Time{}, fmt.Errorf("status: %w", err)
		}
		seenAt = time.Now()
		if st.NumMessages != nil && int(*st.NumMessages) >= want {
			break
		}
		if time.Now().After(deadline) {
			break // fetch what is there; the checker counts the rest as missing
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return seenAt, fmt.Errorf("examine: %w", err)
	}
	if sel.NumMessages == 0 {
		return seenAt, c.Logout().Wait()
	}
	body := &imap.FetchItemBodySection{Peek: true}
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	cmd := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{body}})
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		for {
			item := msg.Next()
			if item == nil {
				break
			}
			if b, ok := item.(imapclient.FetchItemDataBodySection); ok && b.Literal != nil {
				data, err := io.ReadAll(io.LimitReader(b.Literal, maxFetched+1))
				if err != nil {
					cmd.Close()
					return seenAt, fmt.Errorf("fetch: %w", err)
				}
				if len(data) > maxFetched {
					cmd.Close()
					return seenAt, errors.New("fetch: message larger than the corpus allows")
				}
				checker.Add(u, data, env.Corpus)
			}
		}
	}
	if err := cmd.Close(); err != nil {
		return seenAt, fmt.Errorf("fetch: %w", err)
	}
	return seenAt, c.Logout().Wait()
}
