package workload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/bench/corpus"
	"github.com/mailcluster/mailcluster/bench/targets"
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
	// Duplicates are extra copies of an acknowledged message;
	// DuplicateTags names the messages stored more than once.
	Duplicates    int      `json:"duplicates"`
	DuplicateTags []string `json:"duplicate_tags,omitempty"`
	// Unacknowledged were stored although their transaction failed (a
	// sender would retry them; not an error).
	Unacknowledged int `json:"unacknowledged"`
	// ReadElsewhere counts the matched messages that were read through
	// another node than the one that acknowledged them (targets of
	// several nodes).
	ReadElsewhere int `json:"read_elsewhere,omitempty"`
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
	// known holds the tags of knownOf, the corpus last asked about.
	known   map[string]bool
	knownOf *corpus.Corpus
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
	c.AddFrom(user, fetched, all, false)
}

// AddFrom is Add for a message read through another node than the one
// that acknowledged it (elsewhere) or not.
func (c *Checker) AddFrom(user int, fetched []byte, all *corpus.Corpus, elsewhere bool) {
	tag, orig, err := corpus.Original(fetched)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// Not a benchmark message (a server's own notice): ignore.
		return
	}
	exp, ok := c.expected[tag]
	if !ok {
		if c.knownTag(all, tag) {
			c.res.Unacknowledged++
		}
		return
	}
	c.seen[tag]++
	switch {
	case c.seen[tag] > 1:
		c.res.Duplicates++
		if c.seen[tag] == 2 {
			c.res.DuplicateTags = append(c.res.DuplicateTags, tag)
		}
		c.problem("message %s stored %d times", tag, c.seen[tag])
	case exp.user != user:
		c.res.Mismatched++
		c.problem("message %s for user %d found in user %d's mailbox", tag, exp.user, user)
	case sha256.Sum256(orig) != exp.sum:
		c.res.Mismatched++
		c.problem("message %s differs from what was sent (%d bytes after the trace headers)", tag, len(orig))
	default:
		c.res.Matched++
		if elsewhere {
			c.res.ReadElsewhere++
		}
	}
}

// Wants reports whether a stored message with this tag is worth
// fetching: an acknowledged message, or one of all that was not.
func (c *Checker) Wants(tag string, all *corpus.Corpus) bool {
	if tag == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.expected[tag]; ok {
		return true
	}
	return c.knownTag(all, tag)
}

// Result counts the missing messages and returns the outcome.
func (c *Checker) Result() CheckResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.res
	r.Problems = append([]string(nil), c.res.Problems...)
	r.DuplicateTags = slices.Clone(c.res.DuplicateTags)
	slices.Sort(r.DuplicateTags)
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

// knownTag reports whether tag names a message of all; c.mu must be
// held.
func (c *Checker) knownTag(all *corpus.Corpus, tag string) bool {
	if all == nil {
		return false
	}
	if c.knownOf != all {
		c.known = make(map[string]bool, len(all.Messages))
		for i := range all.Messages {
			c.known[all.Messages[i].Tag] = true
		}
		c.knownOf = all
	}
	return c.known[tag]
}

// VerifyConfig says how Verify reads the acknowledged mail back.
type VerifyConfig struct {
	// Workload names the workload whose mail is checked, in logs
	// ("" for smtp-ingest).
	Workload string
	// SentAt is when the last message was acknowledged.
	SentAt time.Time
	// Wait bounds the wait until each INBOX holds as many messages as
	// were acknowledged for it (asynchronous delivery); zero skips the
	// wait, for mailboxes that held mail before.
	Wait time.Duration
	// Via maps a message's tag to the node (index in Env.Nodes) that
	// acknowledged it: each message is read through another node when
	// the target has one.
	Via map[string]int
	// Down lists nodes (indexes in Env.Nodes) not to read through.
	Down []int
	// Before is how many messages each INBOX (by user index) held before
	// the checked mail was sent (see InboxCounts); the wait looks for
	// that many more. Nil means empty mailboxes.
	Before []int
}

// Verify checks every acknowledged message. First, when cfg.Wait is set,
// it waits (up to Wait) until each INBOX holds at least as many messages
// as were acknowledged for it, polling STATUS over one session per
// mailbox, which measures how long asynchronous delivery takes after
// cfg.SentAt; the resolution is one login and STATUS per mailbox, a few
// at a time. Then it lists every INBOX's tags and fetches each message
// that is acknowledged (or part of env.Corpus) and compares it with what
// was sent, through another node than the one that acknowledged it when
// the target has several.
func Verify(ctx context.Context, env Env, acked []*corpus.Message, cfg VerifyConfig) (*CheckResult, error) {
	if cfg.Workload == "" {
		cfg.Workload = "smtp-ingest"
	}
	log := env.logger().With("workload", cfg.Workload, "step", "verify")
	plan, err := newReadPlan(len(env.nodes()), cfg.Via, cfg.Down)
	if err != nil {
		return nil, err
	}
	var visible time.Duration
	if cfg.Wait > 0 {
		perUser := make(map[int]int)
		for _, m := range acked {
			perUser[m.Rcpt]++
		}
		deadline := time.Now().Add(cfg.Wait)
		var mu sync.Mutex
		err := eachUser(len(env.Users), func(u int) error {
			want := perUser[u]
			if u < len(cfg.Before) {
				want += cfg.Before[u]
			}
			seenAt, err := waitVisible(ctx, env, env.node(plan.up[(u+1)%len(plan.up)]), u, want, deadline)
			if err != nil {
				return err
			}
			mu.Lock()
			visible = max(visible, seenAt.Sub(cfg.SentAt))
			mu.Unlock()
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	checker := NewChecker(acked)
	if err := eachUser(len(env.Users), func(u int) error { return fetchAndCheck(ctx, env, u, checker, plan) }); err != nil {
		return nil, err
	}
	res := checker.Result()
	res.VisibleAfterSec = visible.Seconds()
	log.Info("done", "expected", res.Expected, "matched", res.Matched, "missing", res.Missing,
		"mismatched", res.Mismatched, "duplicates", res.Duplicates, "read_elsewhere", res.ReadElsewhere,
		"visible_after", visible.Round(time.Millisecond))
	return &res, nil
}

// readPlan says through which node each message is read back.
type readPlan struct {
	// up are the nodes that may be read through, in node order.
	up  []int
	via map[string]int
}

func newReadPlan(nodes int, via map[string]int, down []int) (readPlan, error) {
	p := readPlan{via: via}
	for n := range nodes {
		if !slices.Contains(down, n) {
			p.up = append(p.up, n)
		}
	}
	if len(p.up) == 0 {
		return p, errors.New("verify: no node to read through")
	}
	return p, nil
}

// listNode is the node user u's INBOX is listed through: the users are
// spread over the nodes.
func (p readPlan) listNode(u int) int { return p.up[u%len(p.up)] }

// readNode returns the node to fetch a message of user u through, and
// whether that is another node than the one that acknowledged it: the
// list node, unless the message came in through it and another node is
// up.
func (p readPlan) readNode(u int, tag string) (node int, elsewhere bool) {
	list := p.listNode(u)
	in, known := p.via[tag]
	if !known {
		return list, false
	}
	if in != list {
		return list, true
	}
	var others []int
	for _, n := range p.up {
		if n != in {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return list, false
	}
	return others[u%len(others)], true
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

// InboxCounts returns how many messages each user's INBOX holds (by
// user index), read through the first node: the baseline of a Verify
// wait for mail sent to mailboxes that are not empty.
func InboxCounts(ctx context.Context, env Env) ([]int, error) {
	counts := make([]int, len(env.Users))
	err := eachUser(len(env.Users), func(u int) error {
		c, err := dialIMAP(ctx, env.node(0).IMAP, env.TLS, env.Users[u])
		if err != nil {
			return fmt.Errorf("inbox count %s: %w", env.Users[u].Address, err)
		}
		defer c.Close()
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			return fmt.Errorf("inbox count %s: status: %w", env.Users[u].Address, err)
		}
		if st.NumMessages != nil {
			counts[u] = int(*st.NumMessages)
		}
		return c.Logout().Wait()
	})
	return counts, err
}

// waitVisible polls u's INBOX until it holds want messages or the
// deadline passes, and returns when it last looked.
func waitVisible(ctx context.Context, env Env, node targets.Endpoints, u, want int, deadline time.Time) (time.Time, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(time.Minute))
	defer cancel()
	c, err := dialIMAP(ctx, node.IMAP, env.TLS, env.Users[u])
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

// fetchAndCheck lists the tags of u's INBOX, then fetches each message
// the checker wants, through the node plan picks for it, and checks it.
// UIDs are the same through every node of a cluster: it is one mailbox.
func fetchAndCheck(ctx context.Context, env Env, u int, checker *Checker, plan readPlan) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	addr := env.Users[u].Address
	sessions := make(map[int]*imapclient.Client)
	defer func() {
		for _, c := range sessions {
			c.Close()
		}
	}()
	open := func(node int) (*imapclient.Client, uint32, error) {
		if c, ok := sessions[node]; ok {
			return c, 0, nil
		}
		c, err := dialIMAP(ctx, env.node(node).IMAP, env.TLS, env.Users[u])
		if err != nil {
			return nil, 0, fmt.Errorf("verify %s: %w", addr, err)
		}
		sessions[node] = c
		sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
		if err != nil {
			return nil, 0, fmt.Errorf("verify %s: examine: %w", addr, err)
		}
		return c, sel.NumMessages, nil
	}
	list := plan.listNode(u)
	c, count, err := open(list)
	if err != nil {
		return err
	}
	groups := make(map[int][]imap.UID)
	elsewhere := make(map[imap.UID]bool)
	if count > 0 {
		var all imap.SeqSet
		all.AddRange(1, 0) // 1:*
		msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{
			{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{corpus.TagHeader}, Peek: true}}}).Collect()
		if err != nil {
			return fmt.Errorf("verify %s: list: %w", addr, err)
		}
		for _, m := range msgs {
			var tag string
			for _, b := range m.BodySection {
				tag = headerValue(b.Bytes, corpus.TagHeader)
			}
			if !checker.Wants(tag, env.Corpus) {
				continue
			}
			node, other := plan.readNode(u, tag)
			groups[node] = append(groups[node], m.UID)
			elsewhere[m.UID] = other
		}
	}
	nodes := make([]int, 0, len(groups))
	for n := range groups {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, node := range nodes {
		c, _, err := open(node)
		if err != nil {
			return err
		}
		cmd := c.Fetch(imap.UIDSetNum(groups[node]...), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			var uid imap.UID
			var data []byte
			for item := msg.Next(); item != nil; item = msg.Next() {
				switch it := item.(type) {
				case imapclient.FetchItemDataUID:
					uid = it.UID
				case imapclient.FetchItemDataBodySection:
					if it.Literal == nil {
						continue
					}
					data, err = io.ReadAll(io.LimitReader(it.Literal, maxFetched+1))
					if err == nil && len(data) > maxFetched {
						err = errors.New("message larger than the corpus allows")
					}
					if err != nil {
						cmd.Close()
						return fmt.Errorf("verify %s: fetch: %w", addr, err)
					}
				}
			}
			if data != nil {
				checker.AddFrom(u, data, env.Corpus, elsewhere[uid])
			}
		}
		if err := cmd.Close(); err != nil {
			return fmt.Errorf("verify %s: fetch: %w", addr, err)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(sessions)) {
		if err := sessions[n].Logout().Wait(); err != nil {
			return fmt.Errorf("verify %s: logout: %w", addr, err)
		}
		delete(sessions, n)
	}
	return nil
}

// headerValue returns the value of the named header field in a header
// section ("" when absent), unfolded and trimmed.
func headerValue(section []byte, name string) string {
	lines := strings.Split(string(section), "\r\n")
	for i := 0; i < len(lines); i++ {
		k, v, ok := strings.Cut(lines[i], ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
			continue
		}
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			v += lines[i]
		}
		return strings.TrimSpace(v)
	}
	return ""
}
