package protocols

import (
	"context"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Defaults of CommandRateConfig. 200 commands a second with a burst of
// 400 is far above what a mail client sends (a sync is tens of commands)
// and what one benchmark connection needs, and stops a script that
// hammers a port with commands.
const (
	DefaultCommandsPerSecond = 200
	DefaultCommandBurst      = 400
	// DefaultCommandRefuseDelay is how long a refused command waits
	// before its answer, so a client that ignores refusals slows down.
	DefaultCommandRefuseDelay = 250 * time.Millisecond
	// DefaultCommandCloseAfter is how many refusals in a row (with no
	// command allowed between) end the connection: persistent abuse.
	DefaultCommandCloseAfter = 20
	// maxCommandBuckets bounds the addresses tracked; past it, addresses
	// whose bucket is full again are forgotten first.
	maxCommandBuckets = 100000
)

// LockCommandRate is the scope of a client address whose commands are
// being refused for exceeding the command rate.
const LockCommandRate LockScope = "command_rate"

// CommandRateConfig configures a CommandLimiter.
type CommandRateConfig struct {
	// PerSecond is the sustained command rate of one client address (an
	// IPv4 address or an IPv6 /64) over every port; 0 or less turns the
	// limit off.
	PerSecond float64
	// Burst is how many commands an address may send at once after a
	// quiet spell; 0 means 2 * PerSecond.
	Burst int
	// RefuseDelay is how long a refused command waits before its answer;
	// 0 means DefaultCommandRefuseDelay, negative none.
	RefuseDelay time.Duration
	// CloseAfter is how many refusals in a row end the connection; 0
	// means DefaultCommandCloseAfter.
	CloseAfter int
	// OnRefuse, if set, is told about every refusal (closing: the
	// connection ends); it must be quick (a metric).
	OnRefuse func(closing bool)
	// Loopback counts the commands of loopback clients (127.0.0.0/8,
	// ::1) too. By default they are not limited: they are the node's
	// own host, where a load test, a conformance suite (Dovecot's
	// imaptest, Postfix's smtp-source) or a proxy without the PROXY
	// protocol runs, and a proxy's clients would all share one bucket.
	Loopback bool
}

// CommandDecision is what a CommandLimiter says of one command.
type CommandDecision int

// The decisions.
const (
	// CommandAllowed: run the command.
	CommandAllowed CommandDecision = iota
	// CommandRefused: answer with the protocol's temporary error.
	CommandRefused
	// CommandClose: refuse and end the connection (persistent abuse).
	CommandClose
)

// CommandLimiter is a token bucket of commands per client address (IPv6
// grouped by /64), shared by every frontend of a node. Frontends call
// Command before running each command. It is safe for concurrent use.
type CommandLimiter struct {
	cfg CommandRateConfig
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*commandBucket
}

type commandBucket struct {
	tokens float64
	last   time.Time
	// refused counts refusals since the last allowed command.
	refused int
}

// NewCommandLimiter returns a limiter; now is its clock (nil for
// time.Now).
func NewCommandLimiter(cfg CommandRateConfig, now func() time.Time) *CommandLimiter {
	if cfg.Burst <= 0 {
		cfg.Burst = int(2 * cfg.PerSecond)
	}
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	if cfg.RefuseDelay == 0 {
		cfg.RefuseDelay = DefaultCommandRefuseDelay
	}
	if cfg.CloseAfter <= 0 {
		cfg.CloseAfter = DefaultCommandCloseAfter
	}
	if now == nil {
		now = time.Now
	}
	return &CommandLimiter{cfg: cfg, now: now, buckets: map[string]*commandBucket{}}
}

// Enabled reports whether the limiter limits anything (a nil limiter
// does not).
func (l *CommandLimiter) Enabled() bool { return l != nil && l.cfg.PerSecond > 0 }

// Command takes a token for one command of the client at ip (a loopback
// client's commands are allowed untaken unless Loopback is set). When the
// bucket is empty it waits RefuseDelay (or until ctx ends) and refuses;
// after CloseAfter refusals in a row it says to close the connection.
func (l *CommandLimiter) Command(ctx context.Context, ip netip.Addr) CommandDecision {
	if !l.Enabled() || ip.Unmap().IsLoopback() && !l.cfg.Loopback {
		return CommandAllowed
	}
	d := l.take(ip)
	if d == CommandAllowed {
		return d
	}
	if l.cfg.OnRefuse != nil {
		l.cfg.OnRefuse(d == CommandClose)
	}
	if l.cfg.RefuseDelay > 0 {
		t := time.NewTimer(l.cfg.RefuseDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return d
}

func (l *CommandLimiter) take(ip netip.Addr) CommandDecision {
	key := clientKey(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxCommandBuckets {
			l.sweepLocked(now)
		}
		if len(l.buckets) >= maxCommandBuckets {
			return CommandAllowed // tracking is full: fail open, the connection limits still hold
		}
		b = &commandBucket{tokens: float64(l.cfg.Burst), last: now}
		l.buckets[key] = b
	}
	l.refillLocked(b, now)
	if b.tokens >= 1 {
		b.tokens--
		b.refused = 0
		return CommandAllowed
	}
	b.refused++
	if b.refused >= l.cfg.CloseAfter {
		return CommandClose
	}
	return CommandRefused
}

func (l *CommandLimiter) refillLocked(b *commandBucket, now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(float64(l.cfg.Burst), b.tokens+el*l.cfg.PerSecond)
	}
	b.last = now
}

// sweepLocked forgets the addresses whose bucket is full again.
func (l *CommandLimiter) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		l.refillLocked(b, now)
		if b.tokens >= float64(l.cfg.Burst) {
			delete(l.buckets, k)
		}
	}
}

// Limited lists the client addresses whose commands are being refused at
// now, with the time their next command will be allowed, soonest first.
func (l *CommandLimiter) Limited() []Lockout {
	if !l.Enabled() {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Lockout
	for k, b := range l.buckets {
		l.refillLocked(b, now)
		if b.refused == 0 || b.tokens >= 1 {
			continue
		}
		wait := time.Duration((1 - b.tokens) / l.cfg.PerSecond * float64(time.Second))
		out = append(out, Lockout{Scope: LockCommandRate, Value: k, Until: now.Add(wait)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Until.Before(out[j].Until) })
	return out
}

// Clear forgets the command count of a client address (an IP address;
// an IPv6 one stands for its /64), so its next commands are allowed. It
// reports whether its commands were being refused.
func (l *CommandLimiter) Clear(ip netip.Addr) bool { return l.clear(clientKey(ip)) }

// ClearValue is Clear for what an operator types: an IP address or an
// IPv6 /64. Anything else (a user's address) is no client address: it
// reports false.
func (l *CommandLimiter) ClearValue(value string) bool {
	if ip, err := netip.ParseAddr(value); err == nil {
		return l.Clear(ip)
	}
	if p, err := netip.ParsePrefix(value); err == nil && p.Addr().Is6() && p.Bits() == 64 {
		return l.clear(p.Masked().String())
	}
	return false
}

func (l *CommandLimiter) clear(key string) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	delete(l.buckets, key)
	return b != nil && b.refused > 0
}
