package raftstore

import (
	"strings"
	"testing"
	"time"
)

// TestReadLeaseTiming checks when a lease lets a leader read without
// asking the quorum: from its grant for its duration, in its term only,
// never while a leadership transfer runs, and not again after one until
// it is granted anew. The lease reads its own clock, which is the
// monotonic one in production, so a wall clock stepped back cannot
// stretch it.
func TestReadLeaseTiming(t *testing.T) {
	var now time.Duration
	l := &readLease{now: func() time.Duration { return now }}
	const term, d = 7, 500 * time.Millisecond

	now = 10 * time.Second
	if ok, _ := l.valid(term); ok {
		t.Fatal("a lease never granted is valid")
	}
	start := now
	now += 20 * time.Millisecond // the quorum's answer took this long
	l.grant(term, start, d)
	if ok, left := l.valid(term); !ok || left != d-20*time.Millisecond {
		t.Fatalf("after the grant: valid %v, %v left; want true, %v", ok, left, d-20*time.Millisecond)
	}
	if ok, _ := l.valid(term + 1); ok {
		t.Fatal("a lease is valid in another term")
	}
	now = start + d - time.Nanosecond
	if ok, _ := l.valid(term); !ok {
		t.Fatal("the lease ended before its duration from the grant's start")
	}
	now = start + d
	if ok, _ := l.valid(term); ok {
		t.Fatal("the lease outlived its duration")
	}

	now = 20 * time.Second
	l.grant(term, now, d)
	done := l.transferring()
	if ok, _ := l.valid(term); ok {
		t.Fatal("a lease is valid while leadership is being handed over")
	}
	done()
	if ok, _ := l.valid(term); ok {
		t.Fatal("a lease granted before a transfer is valid after it")
	}
}

// TestLeaseClockIsMonotonic checks that the production clock of leases
// carries on from the process's start and never goes back, as the
// monotonic clock does; a wall-clock reading (time.Now().UnixNano())
// would not.
func TestLeaseClockIsMonotonic(t *testing.T) {
	var l readLease
	prev := l.clock()
	if prev <= 0 {
		t.Fatalf("lease clock %v, want the time since the process started", prev)
	}
	for i := 0; i < 1000; i++ {
		c := l.clock()
		if c < prev {
			t.Fatalf("lease clock went back from %v to %v", prev, c)
		}
		prev = c
	}
	// time.Time's String ends in "m=±<seconds>" when the value
	// carries a monotonic reading, which time.Since then uses.
	if !strings.Contains(leaseEpoch.String(), " m=") {
		t.Fatalf("the lease clock's origin %v has no monotonic reading", leaseEpoch)
	}
}
