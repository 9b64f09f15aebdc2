package raftstore

import (
	"slices"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/raftstore/schema"
)

func TestCompactReplicaShrinksAndKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := openShard(t, dir)
	f := newFixture(t, s)
	var targets []schema.ExpungeTarget
	for i := 0; i < 40; i++ {
		uid, _ := appendMsg(t, s, f, f.inbox, strings.Repeat("x", 64<<10))
		if i >= 2 {
			targets = append(targets, schema.ExpungeTarget{UID: uid})
		}
	}
	apply(t, s, &schema.Expunge{User: f.user, Mailbox: f.inbox, Targets: targets})
	if err := s.Snapshot(); err != nil { // truncates the log
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := CompactReplica(dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.After >= res.Before/2 {
		t.Fatalf("compaction kept %d of %d bytes", res.After, res.Before)
	}
	s2 := openShard(t, dir)
	if got := uids(messages(t, s2, f.user, f.inbox)); !slices.Equal(got, []schema.UID{1, 2}) {
		t.Fatalf("after compaction uids %v", got)
	}
	if uid, _ := appendMsg(t, s2, f, f.inbox, "after"); uid != 41 {
		t.Fatalf("next uid %d", uid)
	}
}
