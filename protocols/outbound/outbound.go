package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// Queue is the replicated outbound queue as delivery needs it.
// *mailstore.Store satisfies it.
type Queue interface {
	// OutboundLed returns every entry of the mail shards this node leads.
	OutboundLed(ctx context.Context) ([]schema.OutboundEntry, error)
	// OutboundMessage returns an entry's message.
	OutboundMessage(ctx context.Context, e schema.OutboundEntry) ([]byte, error)
	// ModifyOutbound changes an entry by compare-and-set, reading it
	// again and calling change again when another writer came first.
	ModifyOutbound(ctx context.Context, shard uint32, id schema.ID, change func(*schema.OutboundEntry) error) (schema.OutboundEntry, error)
	// DeleteOutbound removes an entry.
	DeleteOutbound(ctx context.Context, shard uint32, id schema.ID) error
	// DeliverReport stores a report about e in the sender's INBOX, once
	// per kind.
	DeliverReport(ctx context.Context, e schema.OutboundEntry, kind string, msg []byte) error
}

// Signer returns header fields (each ending in CRLF, e.g. DKIM-Signature) to put in front of a
// message sent from domain; nil Signer or an empty result means the message goes unsigned.
type Signer interface {
	Sign(ctx context.Context, domain string, message []byte) ([]byte, error)
}

// Resolver is the DNS as delivery needs it; *net.Resolver satisfies it.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Config configures a Deliverer.
type Config struct {
	// Hostname is the name this node gives in EHLO and in reports.
	Hostname string
	// Resolver finds MX and address records; nil means the system's.
	Resolver Resolver
	// Port is the remote SMTP port (25 on the internet; tests use a
	// loopback port). 0 means 25.
	Port int
	// Expire is how long a message is retried; 0 means 5 days.
	Expire time.Duration
	// DelayNotice is the age at which the sender is told once that a
	// message is still queued; 0 means 4 hours, negative never.
	DelayNotice time.Duration
	// RetryBase is the first retry interval; later ones grow from it
	// (5x, 15x, 30x, 60x, 120x, then 240x it); 0 means 1 minute.
	RetryBase time.Duration
	// DomainConnections bounds the connections open at one time to one
	// recipient domain; 0 means 4.
	DomainConnections int
	// Concurrency bounds the entries delivered at one time; 0 means 16.
	Concurrency int
	// Poll is the longest the deliverer sleeps between looks at the
	// queue: a new leader finds its queue, and a message submitted on
	// another node is found, within it. 0 means 5 s.
	Poll time.Duration
	// AttemptTimeout bounds one delivery attempt of an entry; the claim
	// of a node that died during an attempt runs out after it. 0 means
	// 10 minutes.
	AttemptTimeout time.Duration
	// CommandTimeout bounds the wait for the greeting and for the reply
	// to each command (EHLO, STARTTLS, MAIL, RCPT, DATA); 0 means 5
	// minutes (RFC 5321 section 4.5.3.2).
	CommandTimeout time.Duration
	// DataBlockTimeout bounds each write of the message text: a server
	// that stops reading mid-DATA ends the attempt after it; 0 means 3
	// minutes (RFC 5321 section 4.5.3.2.5).
	DataBlockTimeout time.Duration
	// DataTimeout bounds the wait for the reply to the final dot; 0
	// means 10 minutes (RFC 5321 section 4.5.3.2.6).
	DataTimeout time.Duration
	// Retain is how long a finished entry stays in the queue (for
	// `mailnode queue show`) before it is removed; 0 means 1 hour, and
	// it is at most 24 hours.
	Retain time.Duration
	// Signer signs outgoing messages; nil sends them unsigned.
	Signer Signer
	// TLSPolicy decides the TLS of a connection to an MX of a domain
	// (the one place for MTA-STS, RFC 8461, or an operator's rule); nil
	// means Opportunistic.
	TLSPolicy func(ctx context.Context, domain, mx string) TLSPolicy
	// RequireTLS is the operator's switch: every connection needs
	// STARTTLS with a verified certificate, whatever TLSPolicy and the
	// message say.
	RequireTLS bool
	// RootCAs verifies certificates when a policy asks for verification;
	// nil means the system's roots.
	RootCAs *x509.CertPool
	// OnTLS is told the TLS outcome of every connection attempt to an
	// MX (for logs and TLS-RPT, RFC 8460); may be nil.
	OnTLS func(domain, mx string, policy TLSPolicy, result TLSResult)
	// Dial opens connections; nil means a net.Dialer through Resolver.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnResult is told each recipient's result ("delivered",
	// "deferred", "failed", "expired"), for metrics; may be nil.
	OnResult func(result string)
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// TLSPolicy is the TLS decision for one connection to one MX.
type TLSPolicy struct {
	// Require refuses to send without TLS (a temporary failure when the
	// MX does not offer STARTTLS or the handshake fails).
	Require bool
	// Verify checks the MX's certificate against RootCAs and its name;
	// otherwise any certificate is accepted (RFC 7435). A verification
	// that fails is a temporary failure, never a fall back to cleartext.
	Verify bool
	// Refuse, when set, says why this MX must not be used at all (an
	// MTA-STS policy in enforce mode that does not list it): the host is
	// skipped with a temporary failure.
	Refuse string
	// Check verifies the certificate like Verify but only reports a
	// failure (through Config.OnTLS) and goes on: an MTA-STS policy in
	// testing mode (RFC 8461 section 5).
	Check bool
	// Reason names the rule behind the policy ("mta-sts-enforce",
	// "require-tls", ...) for logs and metrics; empty for opportunistic.
	Reason string
}

// Reasons the deliverer itself gives to a TLSPolicy.
const (
	// ReasonRequireTLS: Config.RequireTLS, the operator's switch.
	ReasonRequireTLS = "require-tls"
	// ReasonREQUIRETLS: the message was submitted with REQUIRETLS.
	ReasonREQUIRETLS = "requiretls"
)

// TLS result types of RFC 8460 section 4.3, as TLSResult.Failure says
// them.
const (
	ResultSTARTTLSNotSupported = "starttls-not-supported"
	ResultHostMismatch         = "certificate-host-mismatch"
	ResultCertificateExpired   = "certificate-expired"
	ResultNotTrusted           = "certificate-not-trusted"
	ResultValidationFailure    = "validation-failure"
)

// TLSResult is the TLS outcome of one connection attempt to an MX.
type TLSResult struct {
	// Failure is empty when TLS was established and, under a Verify or
	// Check policy, the certificate verified; otherwise an RFC 8460
	// result type (Result*).
	Failure string
	// Detail says more about a failure (an error text without secrets).
	Detail string
}

// Opportunistic is the default TLS policy: STARTTLS whenever offered,
// no verification, cleartext when the MX offers no TLS.
func Opportunistic(ctx context.Context, domain, mx string) TLSPolicy { return TLSPolicy{} }

func (c *Config) defaults() {
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Port == 0 {
		c.Port = 25
	}
	if c.Expire <= 0 {
		c.Expire = 5 * 24 * time.Hour
	}
	if c.DelayNotice == 0 {
		c.DelayNotice = 4 * time.Hour
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Minute
	}
	if c.DomainConnections <= 0 {
		c.DomainConnections = 4
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.Poll <= 0 {
		c.Poll = 5 * time.Second
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 10 * time.Minute
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 5 * time.Minute
	}
	if c.DataBlockTimeout <= 0 {
		c.DataBlockTimeout = 3 * time.Minute
	}
	if c.DataTimeout <= 0 {
		c.DataTimeout = 10 * time.Minute
	}
	if c.Retain <= 0 {
		c.Retain = time.Hour
	}
	c.Retain = min(c.Retain, 24*time.Hour)
	if c.TLSPolicy == nil {
		c.TLSPolicy = Opportunistic
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Dial == nil {
		var r *net.Resolver
		if nr, ok := c.Resolver.(*net.Resolver); ok {
			r = nr
		}
		d := &net.Dialer{Timeout: 30 * time.Second, Resolver: r}
		c.Dial = d.DialContext
	}
}

// Stats is the state of the queue this node delivers.
type Stats struct {
	Messages int           // entries not finished
	Oldest   time.Duration // age of the oldest of them
}

// Deliverer delivers the queue entries of the shards this node leads.
type Deliverer struct {
	q   Queue
	cfg Config
	log *slog.Logger

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	ctx  context.Context
	done context.CancelFunc

	mu       sync.Mutex
	inflight map[schema.ID]bool
	domains  map[string]chan struct{} // per-domain connection slots
	stats    Stats
	slots    chan struct{} // Concurrency
}

// New starts a Deliverer over q; Close stops it.
func New(q Queue, cfg Config) *Deliverer {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	d := &Deliverer{q: q, cfg: cfg, log: cfg.Logger.With("component", "outbound"),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), ctx: ctx, done: cancel,
		inflight: map[schema.ID]bool{}, domains: map[string]chan struct{}{}, slots: make(chan struct{}, cfg.Concurrency)}
	d.wg.Add(1)
	go d.run()
	return d
}

// Close stops delivery and waits for attempts in flight to end (their
// connections are closed). It may be called more than once.
func (d *Deliverer) Close() {
	d.once.Do(func() {
		close(d.stop)
		d.done()
		d.wg.Wait()
	})
}

// Kick makes the deliverer look at the queue now (a message was just
// queued).
func (d *Deliverer) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Stats returns the state of the queue at the last look.
func (d *Deliverer) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

func (d *Deliverer) run() {
	defer d.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-d.kick:
		case <-t.C:
		}
		wait := d.scan()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// scan starts an attempt for every due entry, removes finished entries
// past their retention, and returns how long to sleep.
func (d *Deliverer) scan() time.Duration {
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	wait := d.cfg.Poll
	entries, err := d.q.OutboundLed(ctx)
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.Warn("read the outbound queue", "err", err)
		}
		return min(wait, 5*time.Second)
	}
	now := d.cfg.Now()
	var st Stats
	for _, e := range entries {
		if !e.Finished.IsZero() {
			if now.Sub(e.Finished) >= d.cfg.Retain {
				if err := d.q.DeleteOutbound(ctx, e.Shard, e.ID); err != nil {
					d.log.Warn("remove a finished queue entry", "id", e.ID.String(), "err", err)
				}
			} else {
				wait = min(wait, e.Finished.Add(d.cfg.Retain).Sub(now))
			}
			continue
		}
		st.Messages++
		st.Oldest = max(st.Oldest, now.Sub(e.Created))
		if e.Held {
			continue
		}
		if due := e.NextAttempt.Sub(now); due > 0 {
			wait = min(wait, due)
			continue
		}
		d.mu.Lock()
		busy := d.inflight[e.ID]
		if !busy {
			d.inflight[e.ID] = true
		}
		d.mu.Unlock()
		if busy {
			continue
		}
		select {
		case d.slots <- struct{}{}:
		case <-d.stop:
			d.release(e.ID)
			return wait
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer func() { <-d.slots }()
			defer d.release(e.ID)
			d.attempt(e)
			d.Kick() // the entry's next step is due at once or later: look again
		}()
	}
	d.mu.Lock()
	d.stats = st
	d.mu.Unlock()
	return max(wait, 10*time.Millisecond)
}

func (d *Deliverer) release(id schema.ID) {
	d.mu.Lock()
	delete(d.inflight, id)
	d.mu.Unlock()
}

// errNotDue stops a claim: another node or attempt got there first.
var errNotDue = errors.New("queue entry not due")

// attempt runs one delivery attempt of e: claim, deliver to every
// domain with pending recipients, record, report.
func (d *Deliverer) attempt(e schema.OutboundEntry) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.AttemptTimeout)
	defer cancel()
	log := d.log.With("id", e.ID.String())
	now := d.cfg.Now()
	claimed, err := d.q.ModifyOutbound(ctx, e.Shard, e.ID, func(c *schema.OutboundEntry) error {
		if c.Held || !c.Finished.IsZero() || c.NextAttempt.After(now) {
			return errNotDue
		}
		c.NextAttempt = now.Add(d.cfg.AttemptTimeout)
		if len(c.State.Pending()) > 0 && now.Sub(c.Created) < d.cfg.Expire {
			c.State.Attempts++
		}
		return nil
	})
	if errors.Is(err, errNotDue) {
		return
	}
	if err != nil {
		log.Warn("claim queue entry", "err", err)
		return
	}
	e = claimed
	if now.Sub(e.Created) >= d.cfg.Expire {
		d.expire(ctx, e, now)
	} else if pending := e.State.Pending(); len(pending) > 0 {
		d.deliver(ctx, log, e, pending)
	}
	d.finish(log, e.Shard, e.ID)
}

// recordTimeout bounds the commit of an attempt's results and its
// closing bookkeeping.
const recordTimeout = 30 * time.Second

// expire gives up on the entry's pending recipients.
func (d *Deliverer) expire(ctx context.Context, e schema.OutboundEntry, now time.Time) {
	var res []rcptResult
	for _, r := range e.State.Pending() {
		last := r
		res = append(res, rcptResult{addr: r.Address, status: schema.RecipientExpired, code: max(last.Code, 0),
			enhanced: "4.4.7", reply: "Message expired: " + lastReply(last), remote: last.Remote})
	}
	d.record(e.Shard, e.ID, res)
}

func lastReply(r schema.OutboundRecipient) string {
	if r.Reply == "" {
		return "no delivery attempt succeeded"
	}
	return r.Reply
}

// deliver sends e to the domains of its pending recipients, each domain
// over its own connection, and records each domain's results before the
// next.
func (d *Deliverer) deliver(ctx context.Context, log *slog.Logger, e schema.OutboundEntry, pending []schema.OutboundRecipient) {
	msg, err := d.q.OutboundMessage(ctx, e)
	if err != nil {
		log.Warn("read queued message", "err", err)
		return
	}
	out := outgoing{signed: d.sign(ctx, log, e, msg), raw: msg, sign: func(b []byte) []byte { return d.sign(ctx, log, e, b) }}
	byDomain := map[string][]string{}
	var domains []string
	for _, r := range pending {
		dom := strings.ToLower(domainOf(r.Address))
		if _, ok := byDomain[dom]; !ok {
			domains = append(domains, dom)
		}
		byDomain[dom] = append(byDomain[dom], r.Address)
	}
	sort.Strings(domains)
	var wg sync.WaitGroup
	for _, dom := range domains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !d.acquire(ctx, dom) {
				return
			}
			res := d.sendDomain(ctx, log, dom, e.State, byDomain[dom], out)
			d.releaseDomain(dom)
			d.record(e.Shard, e.ID, res)
		}()
	}
	wg.Wait()
}

// sign puts the signer's header fields in front of msg.
func (d *Deliverer) sign(ctx context.Context, log *slog.Logger, e schema.OutboundEntry, msg []byte) []byte {
	if d.cfg.Signer == nil {
		return msg
	}
	dom := headerFromDomain(msg)
	if dom == "" {
		dom = domainOf(e.State.From)
	}
	h, err := d.cfg.Signer.Sign(ctx, dom, msg)
	if err != nil {
		// Unsigned mail may be refused or judged spam, but holding it
		// back is worse: sign when possible, send in any case.
		log.Warn("sign outgoing message; sending it unsigned", "err", err)
		return msg
	}
	if len(h) == 0 {
		return msg
	}
	return append(append(make([]byte, 0, len(h)+len(msg)), h...), msg...)
}

// acquire takes one of the domain's connection slots.
func (d *Deliverer) acquire(ctx context.Context, dom string) bool {
	d.mu.Lock()
	ch, ok := d.domains[dom]
	if !ok {
		ch = make(chan struct{}, d.cfg.DomainConnections)
		d.domains[dom] = ch
	}
	d.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (d *Deliverer) releaseDomain(dom string) {
	d.mu.Lock()
	ch := d.domains[dom]
	<-ch
	if len(ch) == 0 {
		delete(d.domains, dom)
	}
	d.mu.Unlock()
}

// record commits results: each recipient still queued takes its result.
// It has its own time limit, and Close does not cut it short, so the
// results of an attempt that ran out of time or was stopped are still
// recorded (Close waits for it).
func (d *Deliverer) record(shard uint32, id schema.ID, res []rcptResult) {
	if len(res) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), recordTimeout)
	defer cancel()
	now := d.cfg.Now()
	byAddr := map[string]rcptResult{}
	for _, r := range res {
		byAddr[r.addr] = r
	}
	_, err := d.q.ModifyOutbound(ctx, shard, id, func(e *schema.OutboundEntry) error {
		for i := range e.State.Recipients {
			r := &e.State.Recipients[i]
			got, ok := byAddr[r.Address]
			if !ok || r.Status != schema.RecipientQueued {
				continue
			}
			r.Status, r.Code, r.Enhanced, r.Reply, r.Remote, r.Updated = got.status, got.code, got.enhanced, got.reply, got.remote, now
		}
		return nil
	})
	if err != nil {
		// The results stay unrecorded: the recipients are tried again
		// after the claim runs out (a delivered one may then get a
		// second copy; there is no way to take back the first).
		d.log.Warn("record delivery results", "id", id.String(), "err", err)
		return
	}
	if d.cfg.OnResult != nil {
		for _, r := range res {
			result := string(r.status)
			if r.status == schema.RecipientQueued {
				result = "deferred"
			}
			d.cfg.OnResult(result)
		}
	}
}

// finish schedules the next attempt, sends the reports due and marks
// an entry with nothing left to do as finished.
func (d *Deliverer) finish(log *slog.Logger, shard uint32, id schema.ID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), recordTimeout)
	defer cancel()
	// A change that refuses reads the entry and commits nothing.
	e, err := d.q.ModifyOutbound(ctx, shard, id, func(*schema.OutboundEntry) error { return errNotDue })
	if !errors.Is(err, errNotDue) {
		log.Warn("read queue entry", "err", err)
		return
	}
	now := d.cfg.Now()
	var unreported []schema.OutboundRecipient
	for _, r := range e.State.Recipients {
		if (r.Status == schema.RecipientFailed || r.Status == schema.RecipientExpired) && !r.Reported {
			unreported = append(unreported, r)
		}
	}
	pending := e.State.Pending()
	sendDelay := len(pending) > 0 && !e.State.DelayNotified && d.cfg.DelayNotice > 0 && now.Sub(e.Created) >= d.cfg.DelayNotice
	var reported []string
	if len(unreported) > 0 {
		msg, kind, err := d.report(ctx, e, unreported, false)
		if err == nil {
			err = d.q.DeliverReport(ctx, e, kind, msg)
		}
		if err != nil {
			log.Warn("report failed delivery to the sender", "err", err)
		} else {
			for _, r := range unreported {
				reported = append(reported, r.Address)
			}
		}
	}
	delayed := false
	if sendDelay {
		msg, _, err := d.report(ctx, e, pending, true)
		if err == nil {
			err = d.q.DeliverReport(ctx, e, "delay", msg)
		}
		if err != nil {
			log.Warn("notify the sender of a delay", "err", err)
		} else {
			delayed = true
		}
	}
	_, err = d.q.ModifyOutbound(ctx, shard, id, func(c *schema.OutboundEntry) error {
		done := map[string]bool{}
		for _, a := range reported {
			done[a] = true
		}
		left := false
		for i := range c.State.Recipients {
			r := &c.State.Recipients[i]
			if done[r.Address] {
				r.Reported = true
			}
			if r.Status == schema.RecipientQueued || ((r.Status == schema.RecipientFailed || r.Status == schema.RecipientExpired) && !r.Reported) {
				left = true
			}
		}
		if delayed {
			c.State.DelayNotified = true
		}
		switch {
		case !left:
			c.Finished = now
		case len(c.State.Pending()) > 0:
			c.NextAttempt = now.Add(d.backoff(c.State.Attempts))
		default:
			c.NextAttempt = now.Add(d.cfg.RetryBase) // a report to retry
		}
		return nil
	})
	if err != nil {
		log.Warn("schedule the next attempt", "err", err)
	}
}

// backoff is the wait after the n-th attempt: minutes, then hours.
func (d *Deliverer) backoff(n int) time.Duration {
	steps := []time.Duration{1, 5, 15, 30, 60, 120, 240}
	i := min(max(n-1, 0), len(steps)-1)
	return steps[i] * d.cfg.RetryBase
}

// domainOf returns the domain of an address.
func domainOf(addr string) string {
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		return addr[at+1:]
	}
	return ""
}

// rcptResult is what one attempt learned about one recipient.
type rcptResult struct {
	addr     string
	status   schema.RecipientStatus
	code     int
	enhanced string
	reply    string
	remote   string
}

func (r rcptResult) String() string {
	return fmt.Sprintf("%s %d %s", r.status, r.code, r.enhanced)
}

// tlsConfig returns the client TLS configuration for an MX under
// policy. Under a Check policy the certificate is verified after the
// handshake and a failure goes to checkFailed instead of ending it.
func tlsConfig(mx string, p TLSPolicy, roots *x509.CertPool, checkFailed func(error)) *tls.Config {
	name := strings.TrimSuffix(mx, ".")
	c := &tls.Config{ServerName: name, InsecureSkipVerify: !p.Verify, RootCAs: roots, MinVersion: tls.VersionTLS12}
	if p.Check && !p.Verify {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verifyChain(cs, name, roots); err != nil {
				checkFailed(err)
			}
			return nil
		}
	}
	return c
}

// verifyChain verifies a peer's certificate chain and name as crypto/tls
// does when verification is on.
func verifyChain(cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: name, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

// certFailure maps a certificate verification error to its RFC 8460
// result type.
func certFailure(err error) string {
	var host x509.HostnameError
	var inv x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &unknown):
		return ResultNotTrusted
	case errors.As(err, &host):
		return ResultHostMismatch
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return ResultCertificateExpired
	default:
		return ResultValidationFailure
	}
}
