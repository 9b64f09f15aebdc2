package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/bench/stats"
	"github.com/mailcluster/mailcluster/bench/targets"
)

// IMAPConfig shapes imap-mixed.
type IMAPConfig struct {
	// Sessions is the number of concurrent IMAP sessions; each uses its
	// own users, so it must not exceed the number of users.
	Sessions int
	// Duration bounds the run.
	Duration time.Duration
	// Rounds is how many rounds of commands a session runs between
	// login and logout.
	Rounds int
	// MaxLogins bounds the sessions each worker opens.
	MaxLogins int
	// Seed drives the choices (which message, which search).
	Seed uint64
	// Rate, when above zero, paces the sessions to that many timed
	// commands per second in all: each session starts its next command
	// on a fixed schedule instead of as soon as the last one returned,
	// and a command's time is counted from its scheduled start, so a
	// server that falls behind is charged for the wait. Targets then
	// answer the same load, and their latencies compare as such; with
	// Rate at zero every session runs in a closed loop, and a faster
	// server takes more load, so each of its commands waits behind more
	// work.
	Rate float64
}

// IMAPResult is what imap-mixed measured.
type IMAPResult struct {
	Sessions int `json:"sessions"`
	// Rate is the pace asked for (IMAPConfig.Rate; 0: closed loop).
	Rate float64 `json:"rate_per_sec,omitempty"`
	// Logins is the number of sessions opened.
	Logins     int64   `json:"logins"`
	Ops        int64   `json:"ops"`
	Failed     int64   `json:"failed"`
	ElapsedSec float64 `json:"elapsed_sec"`
	// OpsPerSec counts every timed command (connect included).
	OpsPerSec float64 `json:"ops_per_sec"`
	// All digests every command together.
	All    stats.Summary            `json:"all"`
	PerOp  map[string]stats.Summary `json:"per_op"`
	Errors []string                 `json:"errors,omitempty"`
}

// IMAPOps are the timed operations of imap-mixed, in session order.
var IMAPOps = []string{"connect", "login", "select", "fetch-headers", "fetch-body", "store", "search", "append", "move", "expunge", "logout"}

// headerFields are what a mail client shows in a message list.
var headerFields = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "Content-Type"}

// IMAP runs imap-mixed: Sessions workers each log in to one of their
// users after another and do what a mail client does (select, fetch the
// headers of a page of messages, read a message, mark it seen, search,
// save a sent message, move one to Trash, delete and expunge one), then
// log out; until Duration passes. Worker i connects to node i of a
// target of several nodes (round-robin).
func IMAP(ctx context.Context, env Env, cfg IMAPConfig) (*IMAPResult, error) {
	if cfg.Sessions < 1 || cfg.Sessions > len(env.Users) {
		return nil, fmt.Errorf("imap-mixed: sessions must be 1..%d (one user per session at a time), got %d", len(env.Users), cfg.Sessions)
	}
	if cfg.Rounds < 1 {
		cfg.Rounds = 5
	}
	if cfg.MaxLogins < 1 {
		cfg.MaxLogins = 100_000
	}
	log := env.logger().With("workload", "imap-mixed")
	rec := stats.NewRecorder()
	errs := newErrorLog()
	var logins atomic.Int64
	deadline := time.Now().Add(cfg.Duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(dataTimeout))
	defer cancel()
	shares := userShares(len(env.Users), cfg.Sessions)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Sessions; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &imapSession{env: env, node: env.node(w), cfg: cfg, rec: rec, errs: errs, deadline: deadline,
				rng: rand.New(rand.NewPCG(cfg.Seed, uint64(w)))}
			if cfg.Rate > 0 {
				// Each session takes an equal share of the rate; their
				// schedules are spread over one interval.
				s.interval = time.Duration(float64(cfg.Sessions) / cfg.Rate * float64(time.Second))
				s.next = start.Add(s.interval * time.Duration(w) / time.Duration(cfg.Sessions))
			}
			for n := 0; n < cfg.MaxLogins && time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				logins.Add(1)
				s.run(ctx, shares[w][n%len(shares[w])])
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := rec.Total(elapsed)
	res := &IMAPResult{
		Sessions: cfg.Sessions, Rate: cfg.Rate, Logins: logins.Load(), Ops: total.Count, Failed: total.Errors,
		ElapsedSec: elapsed.Seconds(), OpsPerSec: total.PerSecond, All: total, PerOp: rec.Summaries(elapsed), Errors: errs.list(),
	}
	log.Info("done", "ops", res.Ops, "failed", res.Failed, "ops_per_sec", round(res.OpsPerSec), "logins", res.Logins)
	return res, nil
}

// imapSession is one worker's state.
type imapSession struct {
	env      Env
	node     targets.Endpoints
	cfg      IMAPConfig
	rec      *stats.Recorder
	errs     *errorLog
	rng      *rand.Rand
	deadline time.Time
	// interval and next pace a session (IMAPConfig.Rate): its next
	// command is due at next, then interval after that.
	interval time.Duration
	next     time.Time

	c      *imapclient.Client
	known  []imap.UID // UIDs of INBOX messages the client has listed
	total  uint32     // messages in INBOX
	window uint32     // highest sequence number of the next header page
	rounds int
	// initial is each user's INBOX size at its first session: appends
	// go to INBOX while it holds fewer, so that the mailbox a session
	// works on keeps its size however long the run.
	initial map[int]uint32
	user    int
}

// timed runs one operation and records it; it returns false when the
// session cannot go on.
func (s *imapSession) timed(op string, fn func() (int64, error)) bool {
	t0 := time.Now()
	if s.interval > 0 {
		t0 = s.next
		if t0.After(s.deadline) {
			// The run ends before this command is due: wait it out, so
			// that the worker stops instead of opening another session.
			time.Sleep(time.Until(s.deadline))
			return false
		}
		s.next = s.next.Add(s.interval)
		if wait := time.Until(t0); wait > 0 {
			time.Sleep(wait)
		}
	}
	n, err := fn()
	if err != nil {
		s.rec.Fail(op)
		s.errs.add(fmt.Errorf("%s: %w", op, err))
		return s.c != nil && s.c.State() != imap.ConnStateLogout && !errors.Is(err, io.ErrUnexpectedEOF)
	}
	s.rec.Observe(op, time.Since(t0), n)
	return true
}

func (s *imapSession) run(ctx context.Context, user int) {
	s.c, s.known, s.total, s.user = nil, nil, 0, user
	if s.initial == nil {
		s.initial = make(map[int]uint32)
	}
	defer func() {
		if s.c != nil {
			s.c.Close()
		}
	}()
	ok := s.timed("connect", func() (int64, error) {
		c, err := connectIMAP(ctx, s.node.IMAP, s.env.TLS)
		s.c = c
		return 0, err
	})
	if !ok || s.c == nil {
		return
	}
	if !s.timed("login", func() (int64, error) { return 0, loginIMAP(s.c, s.env.Users[user]) }) {
		return
	}
	if !s.timed("select", func() (int64, error) {
		data, err := s.c.Select("INBOX", nil).Wait()
		if err == nil {
			s.total = data.NumMessages
			s.window = s.total
			if _, ok := s.initial[user]; !ok {
				s.initial[user] = s.total
			}
		}
		return 0, err
	}) {
		return
	}
	for r := 0; r < s.cfg.Rounds && time.Now().Before(s.deadline); r++ {
		if !s.round() {
			return
		}
	}
	s.timed("logout", func() (int64, error) { return 0, s.c.Logout().Wait() })
}

// round is one pass of a mail client's typical commands. One message
// leaves INBOX per round (moved to Trash, or deleted and expunged, in
// turn) and one is appended.
func (s *imapSession) round() bool {
	s.rounds++
	remove := s.move
	if s.rounds%2 == 0 {
		remove = s.expunge
	}
	steps := []func() bool{s.fetchHeaders, s.fetchBody, s.search, s.appendMessage, remove}
	for _, step := range steps {
		if time.Now().After(s.deadline) {
			return true
		}
		if !step() {
			return false
		}
	}
	return true
}

// fetchHeaders lists a page of up to 20 messages, newest first, then
// older pages, as a client scrolling its message list.
func (s *imapSession) fetchHeaders() bool {
	s.total = s.numMessages()
	if s.total == 0 {
		return true
	}
	if s.window == 0 || s.window > s.total {
		s.window = s.total
	}
	lo := uint32(1)
	if s.window > 20 {
		lo = s.window - 19
	}
	var set imap.SeqSet
	set.AddRange(lo, s.window)
	s.window = lo - 1
	opts := &imap.FetchOptions{
		UID: true, Flags: true, Envelope: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, HeaderFields: headerFields, Peek: true}},
	}
	return s.timed("fetch-headers", func() (int64, error) {
		msgs, err := s.c.Fetch(set, opts).Collect()
		var n int64
		for _, m := range msgs {
			s.addKnown(m.UID)
			for _, b := range m.BodySection {
				n += int64(len(b.Bytes))
			}
		}
		return n, err
	})
}

// numMessages is the INBOX's message count as the server last reported
// it. (imapclient records a SELECT's result only after Wait returns, so
// the count from SELECT is the fallback.)
func (s *imapSession) numMessages() uint32 {
	if mb := s.c.Mailbox(); mb != nil {
		return mb.NumMessages
	}
	return s.total
}

func (s *imapSession) addKnown(uid imap.UID) {
	for _, k := range s.known {
		if k == uid {
			return
		}
	}
	s.known = append(s.known, uid)
}

// pick removes and returns a random known UID, or false.
func (s *imapSession) pick(remove bool) (imap.UID, bool) {
	if len(s.known) == 0 {
		return 0, false
	}
	i := s.rng.IntN(len(s.known))
	uid := s.known[i]
	if remove {
		s.known[i] = s.known[len(s.known)-1]
		s.known = s.known[:len(s.known)-1]
	}
	return uid, true
}

// fetchBody reads a whole message and marks it seen.
func (s *imapSession) fetchBody() bool {
	uid, ok := s.pick(false)
	if !ok {
		return true
	}
	set := imap.UIDSetNum(uid)
	ok = s.timed("fetch-body", func() (int64, error) {
		cmd := s.c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
		var n int64
		for m := cmd.Next(); m != nil; m = cmd.Next() {
			for item := m.Next(); item != nil; item = m.Next() {
				if b, ok := item.(imapclient.FetchItemDataBodySection); ok && b.Literal != nil {
					k, err := io.Copy(io.Discard, io.LimitReader(b.Literal, maxFetched))
					n += k
					if err != nil {
						cmd.Close()
						return n, err
					}
				}
			}
		}
		return n, cmd.Close()
	})
	if !ok {
		return false
	}
	return s.timed("store", func() (int64, error) {
		return 0, s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close()
	})
}

// search runs one of the searches clients offer: unread mail, a subject
// word, a sender, or a word in the text.
func (s *imapSession) search() bool {
	var crit imap.SearchCriteria
	word := searchWords[s.rng.IntN(len(searchWords))]
	switch s.rng.IntN(4) {
	case 0:
		crit.NotFlag = []imap.Flag{imap.FlagSeen}
	case 1:
		crit.Header = []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: word}}
	case 2:
		crit.Header = []imap.SearchCriteriaHeaderField{{Key: "From", Value: searchSenders[s.rng.IntN(len(searchSenders))]}}
	default:
		crit.Body = []string{word}
	}
	return s.timed("search", func() (int64, error) {
		_, err := s.c.UIDSearch(&crit, nil).Wait()
		return 0, err
	})
}

// searchWords and searchSenders occur in the corpus.
var (
	searchWords   = []string{"budget", "meeting", "report", "invoice", "schedule", "project", "release", "customer"}
	searchSenders = []string{"alice", "github", "newsletter", "billing", "thomas", "yuki"}
)

// appendMessage saves a corpus message to Sent (as a client does after
// sending), or to INBOX while INBOX holds fewer messages than at the
// user's first session, so the mailbox keeps its size.
func (s *imapSession) appendMessage() bool {
	msgs := s.env.Corpus.Messages
	m := &msgs[s.rng.IntN(len(msgs))]
	box, flags := "Sent", []imap.Flag{imap.FlagSeen}
	if n := s.numMessages(); n < s.initial[s.user] || n < 10 {
		box, flags = "INBOX", nil
	}
	return s.timed("append", func() (int64, error) {
		cmd := s.c.Append(box, int64(len(m.Data)), &imap.AppendOptions{Flags: flags})
		if _, err := cmd.Write(m.Data); err != nil {
			cmd.Close()
			return 0, err
		}
		if err := cmd.Close(); err != nil {
			return 0, err
		}
		_, err := cmd.Wait()
		return int64(len(m.Data)), err
	})
}

// move moves a message to Trash.
func (s *imapSession) move() bool {
	uid, ok := s.pick(true)
	if !ok {
		return true
	}
	return s.timed("move", func() (int64, error) {
		_, err := s.c.Move(imap.UIDSetNum(uid), "Trash").Wait()
		return 0, err
	})
}

// expunge deletes a message for good: flag it \Deleted, then UID EXPUNGE.
func (s *imapSession) expunge() bool {
	uid, ok := s.pick(true)
	if !ok {
		return true
	}
	set := imap.UIDSetNum(uid)
	if !s.timed("store", func() (int64, error) {
		return 0, s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	}) {
		return false
	}
	return s.timed("expunge", func() (int64, error) {
		_, err := s.c.UIDExpunge(set).Collect()
		return 0, err
	})
}
