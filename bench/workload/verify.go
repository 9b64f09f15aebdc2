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

// Verify checks every acknowledged message. First it waits (up to wait)
// until each INBOX holds at least as many messages as were acknowledged
// for it, polling STATUS over one session per mailbox, which measures how
// long asynchronous delivery takes after sentAt (when the last message
// was acknowledged); the resolution is one login and STATUS per mailbox,
// a few at a time. Then it fetches every INBOX and compares each message
// with what was sent.
func Verify(ctx context.Context, env Env, acked []*corpus.Message, sentAt time.Time, wait time.Duration) (*CheckResult, error) {
	log := env.logger().With("workload", "smtp-ingest", "step", "verify")
	perUser := make(map[int]int)
	for _, m := range acked {
		perUser[m.Rcpt]++
	}
	deadline := time.Now().Add(wait)
	var mu sync.Mutex
	var visible time.Duration
	err := eachUser(len(env.Users), func(u int) error {
		seenAt, err := waitVisible(ctx, env, u, perUser[u], deadline)
		if err != nil {
			return err
		}
		mu.Lock()
		visible = max(visible, seenAt.Sub(sentAt))
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	checker := NewChecker(acked)
	if err := eachUser(len(env.Users), func(u int) error { return fetchAndCheck(ctx, env, u, checker) }); err != nil {
		return nil, err
	}
	res := checker.Result()
	res.VisibleAfterSec = visible.Seconds()
	log.Info("done", "expected", res.Expected, "matched", res.Matched, "missing", res.Missing,
		"mismatched", res.Mismatched, "duplicates", res.Duplicates, "visible_after", visible.Round(time.Millisecond))
	return &res, nil
}

// eachUser calls fn for every user index, verifyWorkers at a time, and
// returns the first error.
func eachUser(n int, fn func(u int) error) error {
	users := make(chan int, n)
	for u := 0; u < n; u++ {
		users <- u
	}
	close(users)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < verifyWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range users {
				if err := fn(u); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// waitVisible polls u's INBOX until it holds want messages or the
// deadline passes, and returns when it last looked.
func waitVisible(ctx context.Context, env Env, u, want int, deadline time.Time) (time.Time, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Minute))
	defer cancel()
	c, err := dialIMAP(ctx, env.Endpoints.IMAP, env.TLS, env.Users[u])
	if err != nil {
		return time.Time{}, fmt.Errorf("verify %s: %w", env.Users[u].Address, err)
	}
	defer c.Close()
	for {
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			return time.Time{}, fmt.Errorf("verify %s: status: %w", env.Users[u].Address, err)
		}
		seenAt := time.Now()
		// Past the deadline, the fetch finds what is there and the
		// checker counts the rest as missing.
		if (st.NumMessages != nil && int(*st.NumMessages) >= want) || seenAt.After(deadline) {
			return seenAt, c.Logout().Wait()
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fetchAndCheck fetches every message of u's INBOX and checks it.
func fetchAndCheck(ctx context.Context, env Env, u int, checker *Checker) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := dialIMAP(ctx, env.Endpoints.IMAP, env.TLS, env.Users[u])
	if err != nil {
		return fmt.Errorf("verify %s: %w", env.Users[u].Address, err)
	}
	defer c.Close()
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return fmt.Errorf("verify %s: examine: %w", env.Users[u].Address, err)
	}
	if sel.NumMessages == 0 {
		return c.Logout().Wait()
	}
	var all imap.SeqSet
	all.AddRange(1, 0) // 1:*
	cmd := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		for item := msg.Next(); item != nil; item = msg.Next() {
			b, ok := item.(imapclient.FetchItemDataBodySection)
			if !ok || b.Literal == nil {
				continue
			}
			data, err := io.ReadAll(io.LimitReader(b.Literal, maxFetched+1))
			if err == nil && len(data) > maxFetched {
				err = errors.New("message larger than the corpus allows")
			}
			if err != nil {
				cmd.Close()
				return fmt.Errorf("verify %s: fetch: %w", env.Users[u].Address, err)
			}
			checker.Add(u, data, env.Corpus)
		}
	}
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("verify %s: fetch: %w", env.Users[u].Address, err)
	}
	return c.Logout().Wait()
}
