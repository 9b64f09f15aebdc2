package raftstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestOutboundQueueEntryLifecycle(t *testing.T) {
	s := openShard(t, t.TempDir())
	id, user := schema.NewID(), schema.NewID()
	head := strings.Repeat("head", largeChunk/2) // large: a bucket of its own
	apply(t, s, &schema.StageChunk{User: user, Blob: id, Index: 0, Sealed: []byte(head)})
	enq := &schema.Enqueue{ID: id, User: user, Size: 8, StagedChunks: 1, Chunks: [][]byte{[]byte("body")}, State: []byte("s1"), NextAttempt: 5}
	apply(t, s, enq)
	apply(t, s, enq) // a retried submission changes nothing
	res, err := s.Query(Query{Kind: QueryOutboundChunks, Blob: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Outbound) != 1 || res.Outbound[0].Version != 1 || res.Outbound[0].Chunks != 2 ||
		string(res.Chunks[0]) != head || string(res.Chunks[1]) != "body" || string(res.Outbound[0].State) != "s1" {
		t.Fatalf("entry %+v, %d chunks", res.Outbound, len(res.Chunks))
	}
	// Compare-and-set on the version.
	apply(t, s, &schema.UpdateOutbound{ID: id, Version: 1, NextAttempt: 9, Held: true, State: []byte("s2")})
	if _, err := applyErr(s, schema.NewID(), &schema.UpdateOutbound{ID: id, Version: 1, State: []byte("s3")}); !errors.Is(err, schema.ErrConflict) {
		t.Fatalf("stale update: %v, want conflict", err)
	}
	res, err = s.Query(Query{Kind: QueryOutbound})
	if err != nil {
		t.Fatal(err)
	}
	if o := res.Outbound; len(o) != 1 || o[0].Version != 2 || !o[0].Held || o[0].NextAttempt != 9 || string(o[0].State) != "s2" {
		t.Fatalf("after update: %+v", o)
	}
	if _, err := applyErr(s, schema.NewID(), &schema.UpdateOutbound{ID: schema.NewID(), Version: 1, State: []byte("x")}); !errors.Is(err, schema.ErrNoSuchMessage) {
		t.Fatalf("update of a missing entry: %v", err)
	}
	apply(t, s, &schema.DeleteOutbound{ID: id})
	apply(t, s, &schema.DeleteOutbound{ID: id})
	res, err = s.Query(Query{Kind: QueryOutbound})
	if err != nil || len(res.Outbound) != 0 {
		t.Fatalf("after delete: %+v %v", res.Outbound, err)
	}
	_ = s.View(func(r *Reader) error {
		if c, _ := r.OutboundChunk(id, 0); c != nil {
			t.Fatalf("chunk left after delete")
		}
		return nil
	})
}
