package protocols

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestCommandLimiterBucket(t *testing.T) {
	clk := &stepClock{t: time.Unix(1000, 0)}
	l := NewCommandLimiter(CommandRateConfig{PerSecond: 10, Burst: 5, RefuseDelay: -1, CloseAfter: 3}, clk.now)
	ctx := context.Background()
	a := netip.MustParseAddr("192.0.2.7")
	// IPv6 addresses of one /64 share a bucket, another /64 has its own.
	v6a, v6b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	other6 := netip.MustParseAddr("2001:db8:1:3::1")
	for i := 0; i < 5; i++ {
		if d := l.Command(ctx, a); d != CommandAllowed {
			t.Fatalf("command %d of the burst: %v", i, d)
		}
	}
	if d := l.Command(ctx, a); d != CommandRefused {
		t.Fatalf("past the burst: %v, want refused", d)
	}
	if got := l.Limited(); len(got) != 1 || got[0].Value != "192.0.2.7" || got[0].Scope != LockCommandRate || !got[0].Until.After(clk.now()) {
		t.Fatalf("limited %+v", got)
	}
	if d := l.Command(ctx, a); d != CommandRefused {
		t.Fatalf("second refusal: %v", d)
	}
	if d := l.Command(ctx, a); d != CommandClose {
		t.Fatalf("third refusal in a row: %v, want close", d)
	}
	// 100 ms later one token is back.
	clk.add(100 * time.Millisecond)
	if d := l.Command(ctx, a); d != CommandAllowed {
		t.Fatalf("after refill: %v", d)
	}
	if d := l.Command(ctx, a); d != CommandRefused {
		t.Fatalf("the refusal count restarts after an allowed command: %v", d)
	}
	for i := 0; i < 5; i++ {
		if l.Command(ctx, v6a) != CommandAllowed {
			t.Fatal("v6 burst refused")
		}
	}
	if l.Command(ctx, v6b) != CommandRefused {
		t.Fatal("another address of the same /64 has its own bucket")
	}
	if l.Command(ctx, other6) != CommandAllowed {
		t.Fatal("another /64 was refused")
	}
	if !l.Clear(v6b) {
		t.Fatal("clear did not find the refused /64")
	}
	if l.Command(ctx, v6a) != CommandAllowed {
		t.Fatal("refused after clear")
	}
	if len(l.Limited()) != 1 {
		t.Fatalf("limited after clear: %+v", l.Limited())
	}
	if NewCommandLimiter(CommandRateConfig{}, nil).Command(ctx, a) != CommandAllowed {
		t.Fatal("a limiter with no rate refused")
	}
	var nilLimiter *CommandLimiter
	if nilLimiter.Command(ctx, a) != CommandAllowed || nilLimiter.Limited() != nil {
		t.Fatal("a nil limiter limits")
	}
}

func TestCommandLimiterDelaysRefusal(t *testing.T) {
	l := NewCommandLimiter(CommandRateConfig{PerSecond: 0.001, Burst: 1, RefuseDelay: time.Hour}, nil)
	a := netip.MustParseAddr("192.0.2.8")
	if l.Command(context.Background(), a) != CommandAllowed {
		t.Fatal("first command refused")
	}
	// The refusal waits; an ended context cuts the wait short.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan CommandDecision)
	go func() { done <- l.Command(ctx, a) }()
	select {
	case d := <-done:
		t.Fatalf("the refusal did not wait: %v", d)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if d := <-done; d != CommandRefused {
		t.Fatalf("decision %v", d)
	}
}

// TestCommandLimiterLoopback: loopback clients (IPv4, IPv6, and IPv4 in
// IPv6) are not limited unless Loopback is set; other addresses are.
func TestCommandLimiterLoopback(t *testing.T) {
	ctx := context.Background()
	loopbacks := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.3.2.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:127.0.0.1")}
	for _, counted := range []bool{false, true} {
		l := NewCommandLimiter(CommandRateConfig{PerSecond: 0.001, Burst: 2, RefuseDelay: -1, Loopback: counted}, nil)
		for _, a := range append(loopbacks, netip.MustParseAddr("192.0.2.9")) {
			refused := false
			for range 5 {
				if l.Command(ctx, a) != CommandAllowed {
					refused = true
				}
			}
			if want := counted || !a.Unmap().IsLoopback(); refused != want {
				t.Errorf("Loopback %v: %s refused %v, want %v", counted, a, refused, want)
			}
		}
	}
}
