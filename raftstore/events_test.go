package raftstore

import (
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

// A long-running replica's history stays bounded, keeps whole indexes,
// and adding to it does not copy it: an apply on a replica that has seen
// many changes costs what one on a fresh replica does.
func TestHistoryBoundedWithoutCopying(t *testing.T) {
	n := newNotifier(0)
	user := schema.ID{1}
	index := uint64(0)
	publishOne := func(events int) {
		index++
		evs := make([]Event, events)
		for i := range evs {
			evs[i] = Event{Index: index, User: user, Kind: schema.ChangeFlags, UID: schema.UID(index)}
		}
		n.publish(evs, index)
	}
	// Fill well past the bound, with indexes of one and of three events.
	for i := 0; i < 5*eventHistory; i++ {
		publishOne(1 + 2*(i%2))
	}
	if len(n.ring) < eventHistory || len(n.ring) > 2*eventHistory+3 {
		t.Fatalf("history holds %d events, want between %d and %d", len(n.ring), eventHistory, 2*eventHistory+3)
	}
	if first := n.ring[0].Index; first != n.floor+1 {
		t.Fatalf("history starts at index %d above floor %d: an index was split or lost", first, n.floor)
	}
	for i := 1; i < len(n.ring); i++ {
		if d := n.ring[i].Index - n.ring[i-1].Index; d > 1 {
			t.Fatalf("history skips from index %d to %d", n.ring[i-1].Index, n.ring[i].Index)
		}
	}

	// One event published: the channel that wakes waiters is the only
	// allocation, however long the history is.
	evs := []Event{{User: user, Kind: schema.ChangeFlags}}
	allocs := testing.AllocsPerRun(4*eventHistory, func() {
		index++
		evs[0].Index = index
		n.publish(evs, index)
	})
	if allocs > 1.01 {
		t.Fatalf("publishing one event into a full history made %.2f allocations, want at most 1", allocs)
	}

	// A subscriber from just above the floor is replayed everything kept;
	// one from below it gets a resync.
	var replayed int
	cancel := n.subscribe(user, n.floor, func(evs []Event) { replayed += len(evs) })
	cancel()
	if replayed != len(n.ring) {
		t.Fatalf("replay from the floor gave %d events, want %d", replayed, len(n.ring))
	}
	var kinds []schema.ChangeKind
	cancel = n.subscribe(user, n.floor-1, func(evs []Event) {
		for _, e := range evs {
			kinds = append(kinds, e.Kind)
		}
	})
	cancel()
	if len(kinds) != 1 || kinds[0] != schema.ChangeResync {
		t.Fatalf("replay from below the floor gave %v, want one resync", kinds)
	}
}
